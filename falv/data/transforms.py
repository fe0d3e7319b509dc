"""Video transforms written in torch (no torchvision).

Clips are float or uint8 tensors laid out ``(T, C, H, W)``; the pipelines also
take the decoder's ``(T, H, W, 3)`` uint8 numpy arrays. Each transform is a pure
function (random ones take a ``torch.Generator``); :class:`TrainTransform` and
:class:`EvalTransform` chain them as picklable callables for DataLoader workers.
The eval pipeline (:func:`preprocess_clip`) is exactly what
:class:`falv.FALImageProcessor` does, so training-time evaluation and inference
see the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from falv.errors import ConfigError

# timm's IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD
IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# transformers' IMAGENET_STANDARD_MEAN / STD (used by its TimeSformer processor)
IMAGENET_STANDARD_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


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


# -- layout and value range ----------------------------------------------------------
def to_clip_tensor(clip: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(T, H, W, C)`` numpy (what :func:`falv.video.read_frames` returns) -> ``(T, C, H, W)`` tensor.

    A tensor is taken to be ``(T, C, H, W)`` already and returned as is.
    """
    if isinstance(clip, torch.Tensor):
        if clip.ndim != 4:
            raise ConfigError(f"expected a (T, C, H, W) tensor, got shape {tuple(clip.shape)}")
        return clip
    arr = np.asarray(clip)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ConfigError(f"expected a (T, H, W, 3) array, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)  # (T, C, H, W)


def rescale(clip: torch.Tensor, factor: float = 1 / 255) -> torch.Tensor:
    """``clip * factor`` as float32 (uint8 ``[0, 255]`` -> ``[0, 1]`` by default)."""
    return clip.to(torch.float32) * factor


# -- crops ----------------------------------------------------------------------
def crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The ``height x width`` window at ``(top, left)`` of every frame (a view)."""
    h, w = clip.shape[-2:]
    if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= h and left + width <= w):
        raise ConfigError(f"crop ({top}, {left}, {height}, {width}) outside a {h}x{w} frame")
    return clip[..., top : top + height, left : left + width]


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of an Inception-style crop of a ``height x width`` frame.

    The crop covers a uniform ``scale`` fraction of the area with a log-uniform
    aspect ``ratio`` (w/h); after ``attempts`` misses it falls back to the largest
    centred crop within ``ratio``. Same algorithm as torchvision's
    ``RandomResizedCrop.get_params`` (Szegedy et al., "Going deeper with convolutions").
    """
    _check_range("scale", scale, positive=True)
    _check_range("ratio", ratio, positive=True)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, min(height, max(1, int(round(width / ratio[0]))))
    elif in_ratio > ratio[1]:
        h, w = height, min(width, max(1, int(round(height * ratio[1]))))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    clip: torch.Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Crop one random window (the same in every frame) and resize it to ``size`` exactly."""
    h, w = clip.shape[-2:]
    top, left, ch, cw = random_resized_crop_params(h, w, scale, ratio, generator)
    return resize(crop(clip, top, left, ch, cw), _pair(size), antialias=antialias)


def three_crop_offsets(height: int, width: int, size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """``(top, left)`` of three crops at the start, centre and end of the longer side.

    The shorter side is centred. As SlowFast's ``uniform_crop`` (spatial_idx 0, 1, 2)
    used for TimeSformer 3-crop testing; the middle offset equals :func:`center_crop`'s.
    Frames wider than tall (or square) give left/centre/right, taller ones top/centre/bottom.
    """
    th, tw = _pair(size)
    if height < th or width < tw:
        raise ConfigError(f"three_crop of {th}x{tw} from a smaller {height}x{width} frame")
    top_c, left_c = int(round((height - th) / 2.0)), int(round((width - tw) / 2.0))
    if height > width:
        return [(0, left_c), (top_c, left_c), (height - th, left_c)]
    return [(top_c, 0), (top_c, left_c), (top_c, width - tw)]


def three_crop(clip: torch.Tensor, size: int | tuple[int, int]) -> list[torch.Tensor]:
    """Three ``size`` crops along the longer side (start, centre, end); see :func:`three_crop_offsets`.

    A clip smaller than ``size`` is zero-padded first, as :func:`center_crop` does.
    """
    th, tw = _pair(size)
    h, w = clip.shape[-2:]
    if h < th or w < tw:
        clip = center_crop(clip, (max(h, th), max(w, tw)))
        h, w = clip.shape[-2:]
    return [clip[..., t : t + th, l : l + tw] for t, l in three_crop_offsets(h, w, (th, tw))]


# -- flips ------------------------------------------------------------------------
def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror every frame left-right."""
    return clip.flip(-1)


def random_hflip(clip: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror the whole clip with probability ``p``.

    Do not use on label sets where left and right differ ("moving something from
    left to right", "turning left", sign language handedness): the flip turns one
    class into another. :class:`TrainTransform` has ``flip=False`` for that.
    """
    if p <= 0:
        return clip
    return hflip(clip) if p >= 1 or _uniform(0.0, 1.0, generator) < p else clip


# -- pipelines -----------------------------------------------------------------------
# ITU-R 601 luma weights, as in PIL's convert("L") and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def grayscale(clip: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W) luma."""
    r, g, b = clip.unbind(-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def adjust_color(clip: torch.Tensor, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0,
                 max_value: float = 255.0) -> torch.Tensor:
    """Brightness, contrast and saturation factors (1 = unchanged) applied to a whole clip
    (T, 3, H, W) in [0, max_value], in that order, each a blend as in PIL's ImageEnhance:
    brightness with black, contrast with the clip's mean grey (one value for every frame, so
    a fade is not undone frame by frame), saturation with each pixel's grey."""
    x = clip
    if brightness != 1.0:
        x = (x * brightness).clamp(0, max_value)
    if contrast != 1.0:
        mean = grayscale(x).mean()
        x = (mean + contrast * (x - mean)).clamp(0, max_value)
    if saturation != 1.0:
        grey = grayscale(x)
        x = (grey + saturation * (x - grey)).clamp(0, max_value)
    return x


def random_color_jitter(clip: torch.Tensor, strength: float, generator: torch.Generator | None = None,
                        max_value: float = 255.0) -> torch.Tensor:
    """Brightness, contrast and saturation factors drawn once per clip from
    ``[1 - strength, 1 + strength]`` (torchvision ColorJitter's ranges, no hue), the same for
    every frame."""
    if strength <= 0:
        return clip
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    factors = [_uniform(lo, hi, generator) for _ in range(3)]
    return adjust_color(clip, *factors, max_value=max_value)


def rotate(clip: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate every frame of (T, C, H, W) by ``degrees`` counter-clockwise about the centre,
    bilinear, same size, zeros outside (PIL's ``Image.rotate`` convention)."""
    if degrees == 0:
        return clip
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    h, w = clip.shape[-2:]
    # affine_grid works in normalised coordinates; scale by the aspect ratio so the rotation
    # is a rotation in pixels, not in the unit square.
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=clip.dtype)
    grid = F.affine_grid(theta.expand(clip.shape[0], 2, 3), list(clip.shape), align_corners=False)
    return F.grid_sample(clip, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotate(clip: torch.Tensor, max_degrees: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One angle in ``[-max_degrees, max_degrees]`` per clip, the same for every frame."""
    if max_degrees <= 0:
        return clip
    return rotate(clip, _uniform(-max_degrees, max_degrees, generator))


def preprocess_clip(
    clip: np.ndarray | torch.Tensor,
    shortest_edge: int,
    crop_size: int | tuple[int, int],
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    rescale_factor: float = 1 / 255,
    antialias: bool = True,
) -> torch.Tensor:
    """The evaluation / inference pipeline on one clip; returns ``(T, C, H, W)`` float32.

    float32 -> resize shortest side to ``shortest_edge`` -> centre crop ``crop_size``
    -> ``* rescale_factor`` -> normalise(``mean``, ``std``). This is the one code path
    shared by :class:`EvalTransform` and :class:`falv.FALImageProcessor`.
    """
    x = to_clip_tensor(clip).to(torch.float32)  # resize in float, no rounding back to uint8
    x = resize_shortest_side(x, shortest_edge, antialias=antialias)
    x = center_crop(x, _pair(crop_size))
    return normalize(rescale(x, rescale_factor), mean, std)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic eval pipeline (see :func:`preprocess_clip`); a picklable callable.

    ``num_crops=3`` returns ``(3, T, C, H, W)``: the three crops of
    :func:`three_crop` along the long side after the shortest-side resize
    (TimeSformer/SlowFast 3-crop testing sets ``shortest_edge = crop_size``).
    """

    shortest_edge: int = 224
    crop_size: int | tuple[int, int] = 224
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    rescale_factor: float = 1 / 255
    num_crops: int = 1
    antialias: bool = True

    def __post_init__(self) -> None:
        _check_common(self)
        if self.shortest_edge <= 0:
            raise ConfigError(f"shortest_edge must be positive, got {self.shortest_edge}")
        if self.num_crops not in (1, 3):
            raise ConfigError(f"num_crops must be 1 or 3, got {self.num_crops}")

    @property
    def size_hint(self) -> int:
        """Shortest side to ask the decoder for (frames are resized to this anyway)."""
        return self.shortest_edge

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.num_crops == 1:
            return preprocess_clip(
                clip, self.shortest_edge, self.crop_size, self.mean, self.std, self.rescale_factor, self.antialias
            )
        x = to_clip_tensor(clip).to(torch.float32)
        x = resize_shortest_side(x, self.shortest_edge, antialias=self.antialias)
        views = [normalize(rescale(v, self.rescale_factor), self.mean, self.std) for v in three_crop(x, self.crop_size)]
        return torch.stack(views)  # (3, T, C, H, W)


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation; a picklable callable taking an optional ``torch.Generator``.

    resize shortest side to ``shortest_edge`` (skipped when ``None``) -> random
    resized crop to ``crop_size`` (``scale``, ``ratio``; one window for the whole
    clip) -> rotation by one angle in ``[-rotate, rotate]`` degrees (0: off) -> horizontal
    flip with probability ``flip_p`` when ``flip`` -> colour jitter of strength
    ``color_jitter`` (0: off; brightness, contrast, saturation) -> rescale -> normalise.
    Every random draw is made once per clip, so all frames get the same augmentation. Set ``flip=False`` for direction-sensitive classes ("moving
    something left", Something-Something, gestures): a mirrored clip shows the
    opposite class.
    """

    crop_size: int | tuple[int, int] = 224
    shortest_edge: int | None = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    flip_p: float = 0.5
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    rescale_factor: float = 1 / 255
    antialias: bool = True
    color_jitter: float = 0.0
    rotate: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ConfigError(f"color_jitter must be within [0, 1], got {self.color_jitter}")
        if not 0.0 <= self.rotate <= 45.0:
            raise ConfigError(f"rotate must be within [0, 45] degrees, got {self.rotate}")
        if self.shortest_edge is not None and self.shortest_edge <= 0:
            raise ConfigError(f"shortest_edge must be positive or None, got {self.shortest_edge}")
        object.__setattr__(self, "scale", _check_range("scale", self.scale, positive=True, upper=1.0))
        object.__setattr__(self, "ratio", _check_range("ratio", self.ratio, positive=True))
        if not 0.0 <= self.flip_p <= 1.0:
            raise ConfigError(f"flip_p must be within [0, 1], got {self.flip_p}")

    @property
    def size_hint(self) -> int | None:
        """Shortest side to ask the decoder for."""
        return self.shortest_edge

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_clip_tensor(clip).to(torch.float32)
        if self.shortest_edge is not None:
            x = resize_shortest_side(x, self.shortest_edge, antialias=self.antialias)
        x = random_resized_crop(x, self.crop_size, self.scale, self.ratio, generator, self.antialias)
        if self.rotate:
            x = random_rotate(x, self.rotate, generator)
        if self.flip:
            x = random_hflip(x, self.flip_p, generator)
        if self.color_jitter:
            x = random_color_jitter(x, self.color_jitter, generator, max_value=1 / self.rescale_factor)
        return normalize(rescale(x, self.rescale_factor), self.mean, self.std)


def eval_transform(
    shortest_edge: int = 224,
    crop_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    rescale_factor: float = 1 / 255,
    num_crops: int = 1,
    antialias: bool = True,
) -> EvalTransform:
    """Build the eval pipeline; ``crop_size`` defaults to ``shortest_edge``."""
    return EvalTransform(
        shortest_edge, shortest_edge if crop_size is None else crop_size,
        tuple(mean), tuple(std), rescale_factor, num_crops, antialias,
    )  # fmt: skip


def train_transform(
    crop_size: int | tuple[int, int] = 224,
    shortest_edge: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    flip_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    rescale_factor: float = 1 / 255,
    antialias: bool = True,
    color_jitter: float = 0.0,
    rotate: float = 0.0,
) -> TrainTransform:
    """Build the training pipeline; ``shortest_edge`` defaults to ``crop / 0.875`` (256 for 224)."""
    if shortest_edge is None:
        shortest_edge = int(round(min(_pair(crop_size)) / 0.875))
    return TrainTransform(
        crop_size, shortest_edge, tuple(scale), tuple(ratio), flip, flip_p,
        tuple(mean), tuple(std), rescale_factor, antialias, color_jitter, rotate,
    )  # fmt: skip


# -- helpers ------------------------------------------------------------------------
def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _check_range(
    name: str, r: Sequence[float], positive: bool = False, upper: float | None = None
) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in r)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a (low, high) pair, got {r!r}") from exc
    if lo > hi or (positive and lo <= 0) or (upper is not None and hi > upper):
        bound = f" within (0, {upper}]" if upper is not None else (" > 0" if positive else "")
        raise ConfigError(f"{name} must be (low, high) with low <= high{bound}, got {r!r}")
    return lo, hi


def _check_common(t: EvalTransform | TrainTransform) -> None:
    th, tw = _pair(t.crop_size)
    if th <= 0 or tw <= 0:
        raise ConfigError(f"crop_size must be positive, got {t.crop_size}")
    mean, std = tuple(float(x) for x in t.mean), tuple(float(x) for x in t.std)
    if len(mean) != len(std) or not mean:
        raise ConfigError(f"mean and std need one value per channel, got {mean} and {std}")
    if any(s == 0 for s in std):
        raise ConfigError(f"std cannot contain 0, got {std}")
    object.__setattr__(t, "mean", mean)
    object.__setattr__(t, "std", std)
    if not isinstance(t.crop_size, int):
        object.__setattr__(t, "crop_size", (th, tw))
