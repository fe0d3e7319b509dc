"""Learning-rate schedule and optimizer parameter groups (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up from ~0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``
    at ``total_steps`` (SGDR without restarts, as in TimeSformer/DeiT recipes).

    ``step`` counts optimizer steps from 0; the value is the rate *for* that step.
    """
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# Parameter names (or parts) that never get weight decay: position/CLS embeddings.
_NO_DECAY_NAMES = ("position_embeddings", "time_embeddings", "cls_token", "embeddings.cls", "pos_embed", "time_embed")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases and embeddings (tensors of rank < 2, or named embeddings) are not decayed
    (DeiT/timm convention: decay only the weights of linear and convolution layers)."""
    return param.ndim < 2 or any(key in name for key in _NO_DECAY_NAMES)


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, object]]:
    """Two AdamW groups: decayed weights and the rest (weight_decay 0). Frozen parameters are left out."""
    decay, keep = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (keep if no_weight_decay(name, param) else decay).append(param)
    groups: list[dict[str, object]] = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups
