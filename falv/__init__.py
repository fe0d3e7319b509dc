"""falv: Framework for Automated Labeling of Videos.

The public API is small and explicit; heavy submodules are imported lazily so
that ``import falv`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falv._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "FALConfig": "falv.config",
    "ClipSampling": "falv.config",
    "ATTENTION_TYPES": "falv.config",
    "FALForVideoClassification": "falv.model.transformer",
    "FALVideoClassifierForVideoClassification": "falv.model.transformer",
    "FALModel": "falv.model.transformer",
    "FALImageProcessor": "falv.processing",
    "AutoImageProcessor": "falv.processing",
    "preset": "falv.model.presets",
    "PRESETS": "falv.model.presets",
    "convert": "falv.hub.convert",
    "load_model": "falv.hub.families",
    "label": "falv.labeling.engine",
    "LabelOptions": "falv.labeling.engine",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from falv.config import ATTENTION_TYPES, ClipSampling, FALConfig
    from falv.hub.convert import convert
    from falv.hub.families import load_model
    from falv.labeling.engine import LabelOptions, label
    from falv.model.presets import PRESETS, preset
    from falv.model.transformer import (
        FALForVideoClassification,
        FALModel,
        FALVideoClassifierForVideoClassification,
    )
    from falv.processing import AutoImageProcessor, FALImageProcessor


def _install_integrations() -> None:
    from falv.integrations import install

    install()


_install_integrations()


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
