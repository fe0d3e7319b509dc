"""Tiny models for rollout tests, including one whose attention is dominated by one bright patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from falv import FALConfig, FALForVideoClassification


def tiny_config(attention_type: str = "divided_space_time", **overrides) -> FALConfig:
    """4 frames of 32x32 with 8x8 patches (a 4x4 grid), width 32, 4 heads, 2 blocks."""
    base = dict(image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=64, attention_type=attention_type,
                id2label={0: "a", 1: "b", 2: "c"})
    base.update(overrides)
    return FALConfig(**base)


def random_model(attention_type: str, seed: int = 0, std: float = 0.3) -> FALForVideoClassification:
    """Random weights large enough for attention maps far from uniform."""
    model = FALForVideoClassification(tiny_config(attention_type)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def peaked_model(attention_type: str, strength: float = 20.0) -> FALForVideoClassification:
    """A model in which every query attends to bright patches.

    No positional embeddings; a patch's token is ``u * mean(pixels)`` (``u`` a
    zero-mean unit vector), so after LayerNorm a bright patch is ``+u/std(u)`` and a
    dark one ``-u/std(u)``; every query is ``strength * u`` and every key is
    ``u (u . h)``, so a bright key scores high, a dark one low, the CLS key 0. Values,
    projections and MLPs are zero: tokens do not change from block to block.
    """
    cfg = tiny_config(attention_type, position_embedding="none", image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    model = FALForVideoClassification(cfg).eval()
    d = cfg.hidden_size
    u = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(d)]) / d**0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.zero_()
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
                p.fill_(1.0)
        patch = model.fal.embeddings.patch_embed.proj
        patch.weight.copy_(u[:, None].expand(d, patch.weight.shape[1]) / patch.weight.shape[1])
        for block in model.fal.blocks:
            for step in block.steps.values():
                qkv = step.attn.qkv
                qkv.bias[:d] = strength * u
                qkv.weight[d : 2 * d] = torch.outer(u, u)
    return model


def bright_frames(positions: list[tuple[int, int, int]], frames: int = 4, size: int = 32, patch: int = 8) -> np.ndarray:
    """(T, H, W, 3) uint8 black frames with white patches at (t, h, w) patch positions."""
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t, h, w in positions:
        video[t, h * patch : (h + 1) * patch, w * patch : (w + 1) * patch] = 255
    return video


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
