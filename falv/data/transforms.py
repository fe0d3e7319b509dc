"""Video transforms written in torch (no torchvision).

Clips are float or uint8 tensors laid out ``(T, C, H, W)``. Each transform is a
pure function; the eval pipeline is exactly what :class:`falv.FALImageProcessor`
does, so training-time evaluation and inference see the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_shortest_side(clip: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Resize so that the shorter side equals ``size`` and the aspect ratio is kept.

    ``clip`` is ``(T, C, H, W)``; uint8 input is resized in float32 and rounded back.
    The longer side is ``int(size * long / short)`` as in transformers' processors.
    """
    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return resize(clip, (new_h, new_w), antialias=antialias)


def resize(clip: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``(T, C, H, W)`` (or ``(C, H, W)``) to ``size = (H, W)``."""
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    squeeze = clip.ndim == 3
    x = clip.unsqueeze(0) if squeeze else clip
    dtype = x.dtype
    y = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
    if dtype == torch.uint8:
        y = y.round_().clamp_(0, 255).to(torch.uint8)
    elif y.dtype != dtype:
        y = y.to(dtype)
    return y.squeeze(0) if squeeze else y


def center_crop(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the centre ``size = (H, W)`` window; pads with zeros if the clip is smaller."""
    th, tw = size
    h, w = clip.shape[-2:]
    if h < th or w < tw:
        pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
        clip = F.pad(clip, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = clip.shape[-2:]
    top = int(round((h - th) / 2.0))
    left = int(round((w - tw) / 2.0))
    return clip[..., top : top + th, left : left + tw]


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel on a float ``(..., C, H, W)`` tensor."""
    m = torch.as_tensor(mean, dtype=clip.dtype, device=clip.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=clip.dtype, device=clip.device).view(-1, 1, 1)
    return (clip - m) / s
