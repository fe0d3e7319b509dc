"""Patch, CLS and positional embeddings (Eq. 1-4 of the FAL paper), with resizing.

A model built for F frames at HxW runs on other clip lengths and sizes: the
space embedding grid and the time embedding are interpolated at run time
(nearest, as TimeSformer does, so logits match it) and can be resized for
good at load time with :func:`resize_position_embeddings`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from falv.config import FALConfig


def interpolate_space_embedding(
    pos: torch.Tensor, grid: tuple[int, int], mode: str = "nearest"
) -> torch.Tensor:
    """Resize (1, 1 + S*S, D) space embeddings to a (Hp, Wp) patch grid; the CLS entry is kept."""
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    side = math.isqrt(patch_pos.shape[1])
    if (side, side) == tuple(grid):
        return pos
    d = pos.shape[-1]
    patch_pos = patch_pos.reshape(1, side, side, d).permute(0, 3, 1, 2)  # (1, D, S, S)
    extra = {} if mode == "nearest" else {"align_corners": False}
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(grid), mode=mode, **extra).to(pos.dtype)
    patch_pos = patch_pos.flatten(2).transpose(1, 2)  # (1, Hp*Wp, D)
    return torch.cat([cls_pos, patch_pos], dim=1)


def interpolate_time_embedding(time: torch.Tensor, frames: int, mode: str = "nearest") -> torch.Tensor:
    """Resize (1, F, D) time embeddings to ``frames`` entries."""
    if time.shape[1] == frames:
        return time
    extra = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(time.transpose(1, 2).float(), size=frames, mode=mode, **extra)
    return out.transpose(1, 2).to(time.dtype)


def stack_previous_frames(pixel_values: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, frames*C, H, W): frame t, then t-1, ..., t-frames+1 on the
    channel axis; before the first frame, the first frame repeats."""
    if frames == 1:
        return pixel_values
    t = pixel_values.shape[1]
    index = (torch.arange(t).unsqueeze(1) - torch.arange(frames)).clamp(min=0)  # (T, frames)
    x = pixel_values[:, index.flatten()]  # (B, T*frames, C, H, W)
    return x.reshape(pixel_values.shape[0], t, frames * pixel_values.shape[2], *pixel_values.shape[3:])


def frame_differences(pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> each frame minus the previous one, the first frame's difference zero."""
    return torch.cat([torch.zeros_like(pixel_values[:, :1]), pixel_values[:, 1:] - pixel_values[:, :-1]], dim=1)


class PatchEmbedding(nn.Module):
    """Cut frames into PxP patches and embed each linearly: E in R^{D x 3P^2} (Eq. 1-3).

    Written as a reshape and one matmul (no convolution); the weight is stored as
    ``(D, C*P*P)`` with the (channel, row, column) order of a patch, so a
    TimeSformer ``Conv2d`` kernel converts by a reshape.

    With ``motion=True`` (``FALConfig.motion_input="frame_diff"``) each frame carries its
    difference from the previous frame as C more channels (:func:`frame_differences`).

    With ``frames = k > 1`` (``FALConfig.patch_frames``) the token of frame t embeds
    the same patch in frames t, t-1, ..., t-k+1 (weight ``(D, k*C*P*P)``, frame-major):
    still one linear map per token and one token per frame and patch, so the
    sequence, the attention schemes and the attention maps are unchanged.
    """

    def __init__(self, patch_size: int, num_channels: int, dim: int, frames: int = 1, motion: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.frames = frames
        self.motion = motion
        channels = num_channels * (2 if motion else 1)
        self.proj = nn.Linear(frames * channels * patch_size * patch_size, dim)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, T, C, H, W) -> patch embeddings (B, T*N, D) frame-major, and the grid (T, Hp, Wp)."""
        b, t, c, h, w = pixel_values.shape
        p = self.patch_size
        hp, wp = h // p, w // p
        if hp == 0 or wp == 0:
            raise ValueError(f"frames of {h}x{w} are smaller than one {p}x{p} patch")
        x = pixel_values[..., : hp * p, : wp * p]  # drop the remainder
        if self.motion:
            x = torch.cat([x, frame_differences(x)], dim=2)  # (B, T, 2C, H, W)
        x = stack_previous_frames(x, self.frames)
        c = x.shape[2]
        x = x.reshape(b, t, c, hp, p, wp, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, T, Hp, Wp, k*C, P, P)
        x = x.reshape(b, t * hp * wp, c * p * p)
        return self.proj(x), (t, hp, wp)


class Embeddings(nn.Module):
    """Patch embeddings + CLS token + space / space-time positional embeddings."""

    def __init__(self, config: FALConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.attention_type = config.attention_type
        self.patch_embed = PatchEmbedding(config.patch_size, config.num_channels, d, config.patch_frames,
                                          motion=config.motion_input == "frame_diff")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        use_space = config.position_embedding in ("space", "space_time")
        # TimeSformer's space-only model has no time embedding; falv keeps that.
        use_time = config.position_embedding == "space_time" and config.attention_type != "space_only"
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, d)) if use_space else None
        self.time_embed = nn.Parameter(torch.zeros(1, config.num_frames, d)) if use_time else None
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
        """Returns ``cls`` (B, K, D) with K = T for space-only else 1, patches (B, T*N, D), grid."""
        x, grid = self.patch_embed(pixel_values)
        b, _, d = x.shape
        t, hp, wp = grid
        cls = self.cls_token.expand(b, 1, d)
        if self.pos_embed is not None:
            pos = interpolate_space_embedding(self.pos_embed, (hp, wp))
            cls = cls + pos[:, :1]
            x = (x.view(b, t, hp * wp, d) + pos[:, 1:].unsqueeze(1)).view(b, t * hp * wp, d)
        cls, x = self.drop(cls), self.drop(x)
        if self.time_embed is not None:
            time = interpolate_time_embedding(self.time_embed, t)  # (1, T, D)
            x = self.drop((x.view(b, t, hp * wp, d) + time.unsqueeze(2)).view(b, t * hp * wp, d))
        if self.attention_type == "space_only":
            cls = cls.expand(b, t, d)  # one CLS token per frame, as in TimeSformer's space-only model
        return cls.contiguous(), x, grid


def resize_position_embeddings(
    state_dict: dict[str, torch.Tensor],
    prefix: str,
    *,
    num_frames: int | None = None,
    grid: tuple[int, int] | None = None,
    mode: str = "bicubic",
) -> dict[str, torch.Tensor]:
    """Resize stored embeddings for a model with another frame count or image size.

    Used at load time (fine-tuning at a new size); ``bicubic`` for space and
    ``linear`` for time by default, as usual for ViT fine-tuning.
    """
    out = dict(state_dict)
    key = f"{prefix}pos_embed"
    if grid is not None and key in out:
        out[key] = interpolate_space_embedding(out[key], grid, mode=mode)
    key = f"{prefix}time_embed"
    if num_frames is not None and key in out:
        out[key] = interpolate_time_embedding(out[key], num_frames, mode="linear" if mode != "nearest" else mode)
    return out
