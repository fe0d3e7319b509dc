"""Soft targets for training: label smoothing, mixup and cutmix on video batches.

Mixup (Zhang et al., 2018) blends two clips and their targets; CutMix (Yun et
al., 2019) pastes a box from another clip, the same box on every frame, and
mixes targets by the box's area. Both take the partner from the batch flipped,
as timm does. All randomness comes from the ``numpy`` generator passed in.
"""

from __future__ import annotations

import numpy as np
import torch


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices ``(B,)`` or multi-hot ``(B, K)`` -> float targets ``(B, K)``.

    Single-label targets get label smoothing (``1 - s`` on the class, ``s / K``
    spread over all classes, as ``F.cross_entropy(label_smoothing=s)``); multi-hot
    targets are returned as float (smoothing towards 0.5 would change their meaning).
    """
    if labels.ndim == 2:
        return labels.float()
    one_hot = torch.nn.functional.one_hot(labels.long(), num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering about ``1 - lam`` of the frame, centred uniformly (clipped at the borders)."""
    cut = np.sqrt(1.0 - lam)
    h, w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - h // 2, cy + h // 2], 0, height)
    left, right = np.clip([cx - w // 2, cx + w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def mix_batch(
    pixels: torch.Tensor,
    targets: torch.Tensor,
    rng: np.random.Generator,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch ``(B, T, C, H, W)`` with soft ``targets`` ``(B, K)``; returns new tensors.

    With both alphas set, each batch uses one of the two at random (timm's switch
    probability 0.5); with ``prob`` < 1 some batches stay unmixed.
    """
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or rng.random() >= prob or len(pixels) < 2:
        return pixels, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    partner = pixels.flip(0)
    if use_cutmix:
        height, width = pixels.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, lam, rng)
        pixels = pixels.clone()
        pixels[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)  # the area really pasted
    else:
        pixels = pixels * lam + partner * (1.0 - lam)
    return pixels, targets * lam + targets.flip(0) * (1.0 - lam)


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy against soft targets (single-label) or binary cross-entropy (multi-label)."""
    logits = logits.float()
    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()
