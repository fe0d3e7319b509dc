"""Learning-rate schedule and optimizer parameter groups (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from falv.training.config import SCHEDULERS


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


def scheduled_lr(
    scheduler: str,
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    *,
    steps_per_epoch: int = 1,
    step_epochs: float = 1.0,
    gamma: float = 0.1,
    scale: float = 1.0,
) -> float:
    """The rate for optimizer step ``step`` under one of :data:`SCHEDULERS`, after the same
    linear warm-up over ``warmup_steps``:

    * ``cosine``: :func:`lr_at`, cosine decay to ``min_lr`` at ``total_steps``;
    * ``step``: ``base_lr * gamma ** k`` where ``k`` counts the ``step_epochs`` completed
      since warm-up ended (torch's ``StepLR`` counted in epochs), never below ``min_lr``;
    * ``plateau``: ``base_lr * scale``, never below ``min_lr``; ``scale`` is the trainer's
      running product of reductions (:class:`PlateauTracker`, torch's ``ReduceLROnPlateau``).
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; valid values: {', '.join(SCHEDULERS)}")
    if scheduler == "cosine":
        return lr_at(step, total_steps, warmup_steps, base_lr, min_lr)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if scheduler == "step":
        epochs_done = (step - warmup_steps) / max(1, steps_per_epoch)
        return max(min_lr, base_lr * gamma ** math.floor(epochs_done / step_epochs + 1e-9))
    return max(min_lr, base_lr * scale)


class PlateauTracker:
    """Reduce-on-plateau bookkeeping with torch's ``ReduceLROnPlateau`` rule (no cooldown):
    after more than ``patience`` validations in a row without improvement, multiply the
    rate by ``factor`` and count again. Its state is two numbers kept in the trainer's
    checkpointed state, so a resumed run continues the same schedule."""

    def __init__(self, factor: float, patience: int) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"plateau factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise ValueError(f"plateau patience must be >= 0, got {patience}")
        self.factor, self.patience = factor, patience

    def update(self, state: dict, improved: bool) -> None:
        """Record one validation in ``state`` (keys ``lr_scale``, ``plateau_bad``)."""
        state.setdefault("lr_scale", 1.0)
        state["plateau_bad"] = 0 if improved else state.get("plateau_bad", 0) + 1
        if state["plateau_bad"] > self.patience:
            state["lr_scale"] *= self.factor
            state["plateau_bad"] = 0


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
