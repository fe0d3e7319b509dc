"""Save a model as a falv directory: config.json, model.safetensors, preprocessor_config.json."""

from __future__ import annotations

import os
from pathlib import Path

from falv.hub.io import atomic_open
from falv.hub.load import WEIGHTS_NAME


def save_model(model, directory: str | os.PathLike) -> Path:
    """Write the three files atomically (each to a temporary name, then renamed)."""
    from safetensors.torch import save

    from falv.processing import FALImageProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_open(directory / WEIGHTS_NAME, "wb") as handle:
        handle.write(save(state, metadata={"format": "pt", "library": "falv"}))
    model.config.save_pretrained(directory)
    FALImageProcessor.from_config(model.config).save_pretrained(directory)
    return directory
