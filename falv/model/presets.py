"""Named model configurations, kept apart from the architecture code.

Parameter counts and GFLOPs per clip in docs/model.md are measured with
:func:`falv.model.flops.count_flops` (``falv presets`` prints them).
"""

from __future__ import annotations

from typing import Any

from falv.config import FALConfig
from falv.errors import ConfigError

_VIT_B = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)

PRESETS: dict[str, dict[str, Any]] = {
    # For tests and CPU demos: 8 frames of 64x64 in 16x16 patches (16 patches a frame). Made to
    # learn from scratch on small sets (docs/training.md, "Learning motion from small data"):
    # each token also sees its patch in the previous frame (patch_frames=2), and weights start
    # at std 1/sqrt(width) instead of ViT-B's 0.02 (which left the narrow model's attention
    # uniform, hence time-symmetric, for hundreds of steps).
    # The time embedding starts random (std 1) rather than zero: from zeros the model starts blind to
    # frame order and never learnt order over several frames (docs/results.md, Experiment 1b).
    "tiny": dict(image_size=64, patch_size=16, num_frames=8, patch_frames=2, hidden_size=128, num_hidden_layers=4,
                 num_attention_heads=4, intermediate_size=512, initializer_range=0.088, time_embedding_init_std=1.0),
    # ViT-S width at 8x224.
    "small": dict(image_size=224, patch_size=16, num_frames=8, hidden_size=384, num_hidden_layers=12,
                  num_attention_heads=6, intermediate_size=1536),
    # ViT-B at 8x224: TimeSformer / the FAL checkpoint.
    "base": dict(image_size=224, patch_size=16, num_frames=8, **_VIT_B),
    # The model the FAL web page states (seeds/001): 8 frames of 224x224, width 768, 12 heads,
    # 24 layers; ViT-B blocks twice as deep. Its parameter count against the page's "375M" is
    # explained in docs/model.md ("The stated FAL model").
    "fal": dict(image_size=224, patch_size=16, num_frames=8, hidden_size=768, num_hidden_layers=24,
                num_attention_heads=12, intermediate_size=3072),
    # ViT-L at 8x224.
    "large": dict(image_size=224, patch_size=16, num_frames=8, hidden_size=1024, num_hidden_layers=24,
                  num_attention_heads=16, intermediate_size=4096),
    # High resolution: ViT-B at 16x448 (TimeSformer-HR).
    "hr": dict(image_size=448, patch_size=16, num_frames=16, **_VIT_B),
    # Long range: ViT-B over 96 frames at 224 (TimeSformer-L).
    "long": dict(image_size=224, patch_size=16, num_frames=96, **_VIT_B),
}


def preset(name: str, **overrides: Any) -> FALConfig:
    """A FALConfig for a named preset; keyword arguments override any field
    (e.g. ``preset("base", attention_type="joint_space_time", id2label=...)``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return FALConfig(**{**PRESETS[name], **overrides})
