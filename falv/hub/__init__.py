"""Saving and loading models: falv directories, transformers TimeSformer directories
and hub ids, and the original TimeSformer ``.pyth`` checkpoints."""

from falv.hub.convert import convert
from falv.hub.load import load_config, load_model, load_preprocessor_config
from falv.hub.save import save_model

__all__ = ["convert", "load_config", "load_model", "load_preprocessor_config", "save_model"]
