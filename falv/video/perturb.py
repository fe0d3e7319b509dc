"""Perturbations of decoded clips: what ``falv evaluate --perturb`` measures robustness against.

A :class:`Perturbation` is a name, a strength and a seed. It acts at one of two places in the
labeling engine, both in the decoding workers (no torch here):

- ``time``: which frames are decoded (:meth:`Perturbation.retime` moves the planned timestamps);
- ``frames``: the decoded pixels (:meth:`Perturbation.apply`, on the frames at the model's
  short side, before the centre or three-crop and the normalisation).

Every random draw comes from ``(seed, path, window index)``, so a rerun, another number of
workers or another order of videos gives the same perturbed clips. A strength of 0 (or 1 for
the fractions of what is kept: ``fps``, ``resolution``, ``crop``) leaves the clip unchanged.
Pillow (``pip install pillow``) does the resizing, blurring and JPEG coding.

=============  ========  ===================================================================
name           default   strength
=============  ========  ===================================================================
frame-drop     0.5       probability that each frame after the first is lost; a lost frame
                         shows the last one received (a stalling stream)
shuffle        1.0       fraction of the clip's frames put in random order among themselves
fps            0.25      the video's frame rate is this fraction of the original (re-encoded
                         at a lower rate: each frame is held longer)
resolution     0.25      frames are scaled to this fraction of their sides and back up
crop           0.5       a random crop keeping this fraction of the area (same aspect, same
                         place in every frame of a clip), scaled back up
blur           2.0       Gaussian blur, standard deviation in pixels at the model's short side
noise          0.1       additive Gaussian noise, standard deviation as a fraction of 255
jpeg           20        every frame coded as JPEG at this quality (1-95)
=============  ========  ===================================================================
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from falv.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    """What a perturbation name means: its default strength, valid range and stage."""

    default: float
    low: float
    high: float
    stage: str  # "time" or "frames"
    identity: float  # the strength that changes nothing
    help: str
    low_open: bool = False  # the range excludes ``low``
    integer: bool = False


KINDS: dict[str, Kind] = {
    "frame-drop": Kind(0.5, 0.0, 0.95, "frames", 0.0, "probability that each frame after the first is lost "
                                                      "(the last received frame is shown instead)"),
    "shuffle": Kind(1.0, 0.0, 1.0, "frames", 0.0, "fraction of the clip's frames put in random order"),
    "fps": Kind(0.25, 0.0, 1.0, "time", 1.0, "the frame rate as a fraction of the original (frames held longer)",
                low_open=True),
    "resolution": Kind(0.25, 0.0, 1.0, "frames", 1.0, "frames scaled to this fraction of their sides and back up",
                       low_open=True),
    "crop": Kind(0.5, 0.0, 1.0, "frames", 1.0, "a random crop keeping this fraction of the area, scaled back up",
                 low_open=True),
    "blur": Kind(2.0, 0.0, 50.0, "frames", 0.0, "Gaussian blur, standard deviation in pixels"),
    "noise": Kind(0.1, 0.0, 1.0, "frames", 0.0, "Gaussian noise, standard deviation as a fraction of 255"),
    "jpeg": Kind(20, 1, 95, "frames", 95, "JPEG coding at this quality", integer=True),
}

#: The frame rate assumed by ``fps`` for a file that does not state one.
FALLBACK_FPS = 25.0


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: ``name`` (a key of :data:`KINDS`), its ``strength`` and the ``seed``."""

    name: str
    strength: float
    seed: int = 0

    def __post_init__(self) -> None:
        kind = KINDS.get(self.name)
        if kind is None:
            raise ConfigError(f"unknown perturbation {self.name!r}; valid names: {', '.join(KINDS)}")
        value = self.strength
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{self.name}: the strength must be a number, got {value!r}")
        low_ok = value > kind.low if kind.low_open else value >= kind.low
        if not (low_ok and value <= kind.high) or (kind.integer and value != int(value)):
            bracket = "(" if kind.low_open else "["
            what = "an integer" if kind.integer else "a number"
            raise ConfigError(f"{self.name}: the strength must be {what} in {bracket}{kind.low:g}, {kind.high:g}], "
                              f"got {value:g} ({kind.help})")
        object.__setattr__(self, "strength", float(value))

    @property
    def kind(self) -> Kind:
        return KINDS[self.name]

    @property
    def spec(self) -> str:
        """``name=strength``, as ``--perturb`` takes it."""
        return f"{self.name}={self.strength:g}"

    @property
    def description(self) -> str:
        return f"{self.spec}: {self.kind.help}"

    # -- time -----------------------------------------------------------------------------------

    def retime(self, clips: Sequence[Sequence[float]], fps: float | None) -> list[list[float]]:
        """The timestamps to decode instead of ``clips`` (seconds); only ``fps`` moves them:
        each is moved back to the last frame of a video re-encoded at ``strength`` x ``fps``."""
        if self.name != "fps" or self.strength == 1.0:
            return [list(c) for c in clips]
        rate = fps if fps is not None and math.isfinite(fps) and fps > 0 else FALLBACK_FPS
        step = 1.0 / (rate * self.strength)
        return [[math.floor(t / step + 1e-6) * step for t in clip] for clip in clips]

    # -- pixels ---------------------------------------------------------------------------------

    def rng(self, path: str, window: int) -> np.random.Generator:
        """The draws of one window of one file (independent of workers and order)."""
        return np.random.default_rng([self.seed, zlib.crc32(str(path).encode("utf-8")), window,
                                      zlib.crc32(self.name.encode("ascii"))])

    def apply(self, frames: np.ndarray, path: str = "", first: int = 0) -> np.ndarray:
        """The perturbed copy of ``frames`` (W, T, H, W', 3) uint8, the windows ``first``,
        ``first + 1``, ... of ``path``; shape and type are kept."""
        if frames.ndim != 5 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise ValueError(f"expected (windows, T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        if self.kind.stage != "frames" or self.strength == self.kind.identity:
            return frames
        out = np.empty_like(frames)
        apply_one = getattr(self, "_" + self.name.replace("-", "_"))
        for w in range(frames.shape[0]):
            out[w] = apply_one(frames[w], self.rng(path, first + w))
        return out

    def _frame_drop(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kept = rng.random(len(clip)) >= self.strength
        kept[0] = True
        shown = np.maximum.accumulate(np.where(kept, np.arange(len(clip)), 0))
        return clip[shown]

    def _shuffle(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        count = int(round(self.strength * len(clip)))
        order = np.arange(len(clip))
        if count >= 2:
            moved = np.sort(rng.choice(len(clip), size=count, replace=False))
            order[moved] = moved[rng.permutation(count)]
        return clip[order]

    def _resolution(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clip.shape[1:3]
        small = (max(1, round(w * self.strength)), max(1, round(h * self.strength)))
        return _each_image(clip, lambda im: im.resize(small, _bilinear()).resize((w, h), _bilinear()))

    def _crop(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clip.shape[1:3]
        side = math.sqrt(self.strength)
        ch, cw = max(1, round(h * side)), max(1, round(w * side))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        box = (left, top, left + cw, top + ch)
        return _each_image(clip, lambda im: im.resize((w, h), _bilinear(), box=box))

    def _blur(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import ImageFilter

        blur = ImageFilter.GaussianBlur(radius=self.strength)  # Pillow's radius is the standard deviation
        return _each_image(clip, lambda im: im.filter(blur))

    def _noise(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = clip.astype(np.float32) + rng.normal(0.0, 255.0 * self.strength, clip.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def _jpeg(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        def code(im):
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=int(self.strength))
            buffer.seek(0)
            return Image.open(buffer).convert("RGB")

        return _each_image(clip, code)


def _bilinear():
    from PIL import Image

    return Image.Resampling.BILINEAR


def _each_image(clip: np.ndarray, change) -> np.ndarray:
    """``change`` (a PIL image -> PIL image of the same size) applied to each frame of a clip."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of falv
        raise ConfigError("this perturbation needs Pillow: pip install pillow") from None
    return np.stack([np.asarray(change(Image.fromarray(frame)), dtype=np.uint8) for frame in clip])


def parse_perturbations(text: str | Iterable[str], seed: int = 0) -> list[Perturbation]:
    """``"blur,noise=0.2"`` (or a list of such parts) -> perturbations in that order.

    ``NAME`` takes the default strength, ``NAME=S`` the strength ``S``; ``all`` is every
    name at its default. A name may repeat with other strengths (a sweep: ``blur=1,blur=3``);
    an exact repeat is an error. Unknown names and strengths out of range are
    :class:`~falv.errors.ConfigError` errors that list what is valid.
    """
    parts = [text] if isinstance(text, str) else list(text)
    items = [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
    if not items:
        raise ConfigError(f"no perturbation given; valid names: {', '.join(KINDS)} (or all)")
    out: list[Perturbation] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower().replace("_", "-")
        if name == "all" and not sep:
            out.extend(Perturbation(n, k.default, seed) for n, k in KINDS.items())
            continue
        if name not in KINDS:
            raise ConfigError(f"unknown perturbation {name!r}; valid names: {', '.join(KINDS)} (or all)")
        if sep:
            try:
                strength = float(value)
            except ValueError:
                raise ConfigError(f"{name}: the strength must be a number, got {value.strip()!r}") from None
        else:
            strength = KINDS[name].default
        out.append(Perturbation(name, strength, seed))
    specs = [p.spec for p in out]
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise ConfigError(f"perturbation given twice: {', '.join(repeated)}")
    return out


__all__ = ["FALLBACK_FPS", "KINDS", "Kind", "Perturbation", "parse_perturbations"]
