"""falv: Framework for Automated Labeling of Videos.

The public API is small and explicit; heavy submodules are imported lazily so
that ``import falv`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "FALConfig": "falv.config",
    "ATTENTION_TYPES": "falv.config",
    "FALForVideoClassification": "falv.model.transformer",
    "FALVideoClassifierForVideoClassification": "falv.model.transformer",
    "FALModel": "falv.model.transformer",
    "FALImageProcessor": "falv.processing",
    "AutoImageProcessor": "falv.processing",
    "preset": "falv.model.presets",
    "PRESETS": "falv.model.presets",
    "convert": "falv.hub.convert",
    "label": "falv.labeling.engine",
    "LabelOptions": "falv.labeling.engine",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from falv.config import ATTENTION_TYPES, FALConfig
    from falv.hub.convert import convert
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'falv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
