"""Saving and loading models: falv directories, transformers TimeSformer directories
and hub ids, and the original TimeSformer ``.pyth`` checkpoints.

The names below are imported on first use, so that ``falv.hub.io`` (atomic writes, used by
every command) does not import torch. The converter is ``falv.convert`` (or
``falv.hub.convert.convert``): ``falv.hub.convert`` is its module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from falv._lazy import lazy_exports

_EXPORTS = {
    "load_config": "falv.hub.load",
    "load_model": "falv.hub.load",
    "load_preprocessor_config": "falv.hub.load",
    "save_model": "falv.hub.save",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from falv.hub.load import load_config, load_model, load_preprocessor_config
    from falv.hub.save import save_model

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
