"""FLOPs per clip, measured by running the model under torch's FLOP counter.

The model is built on the ``meta`` device, so even the 96-frame preset is
counted in a moment without allocating memory. A multiply-add counts as two
FLOPs (torch's convention); matmuls and attention are counted, elementwise
operations (norms, softmax, GELU) are not, as in the paper's GFLOPs.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from falv.config import FALConfig


def _model_class(model_class: type | None) -> type:
    if model_class is not None:
        return model_class
    from falv.model.transformer import FALForVideoClassification

    return FALForVideoClassification


def count_flops(config: FALConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1, *, model_class: type | None = None) -> int:
    """FLOPs of one forward pass over ``batch_size`` clips (default: the config's clip shape)
    of ``model_class(config)`` (default: FAL)."""
    frames = num_frames or config.num_frames
    size = image_size or config.image_size
    with torch.device("meta"):
        # no parameter requires grad: under no_grad a view of one (the expanded CLS token when
        # nothing is added to it) would trip the counter's module tracker
        model = _model_class(model_class)(config).eval().requires_grad_(False)
        x = torch.empty(batch_size, frames, config.num_channels, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def count_parameters(config: FALConfig, *, model_class: type | None = None) -> int:
    with torch.device("meta"):
        model = _model_class(model_class)(config)
    return sum(p.numel() for p in model.parameters())
