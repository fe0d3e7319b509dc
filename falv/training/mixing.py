"""Soft targets for training: label smoothing, mixup and cutmix on video batches.

Mixup (Zhang et al., 2018) blends two clips and their targets; CutMix (Yun et
al., 2019) pastes a box from another clip, the same box on every frame, and
mixes targets by the box's area. Both take the partner from the batch flipped,
as timm does. All randomness comes from the ``numpy`` generator passed in.
"""

from __future__ import annotations

from typing import Any

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


class Objective:
    """What training minimises and counts as right: cross-entropy (single-label), binary
    cross-entropy (multi-label), or with a ``taxonomy`` the loss over its levels
    (:func:`falv.taxonomy.hierarchical_loss`), whose targets index the taxonomy's nodes."""

    def __init__(self, num_classes: int, multilabel: bool, taxonomy: Any = None) -> None:
        self.multilabel, self.taxonomy = multilabel, taxonomy
        self.num_targets = taxonomy.num_nodes if taxonomy is not None else num_classes
        if taxonomy is not None:
            self._membership = torch.from_numpy(taxonomy.membership())
            self._levels = torch.from_numpy(taxonomy.level_weights())

    def targets(self, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        return soft_targets(labels, self.num_targets, 0.0 if self.multilabel else smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.taxonomy is not None:
            from falv.taxonomy import hierarchical_loss

            return hierarchical_loss(logits, targets, self._membership, self._levels)
        return soft_loss(logits, targets, self.multilabel)

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> int:
        """Single-label: how many top-1 predictions are right; with a taxonomy a prediction is right
        when the best leaf lies under the labelled node (a video labelled ``sports/ball`` is right as
        ``sports/ball/soccer``). Multi-label: 0 (judged by mAP)."""
        if self.multilabel:
            return 0
        best = logits.argmax(-1).cpu()
        if self.taxonomy is None:
            return int((best == labels.cpu()).sum())
        return int(self._membership[labels.cpu().long(), best].sum())
