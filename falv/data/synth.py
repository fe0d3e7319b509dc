"""A synthetic video benchmark of real H.264 files: falv's public stand-in for FAL-500.

``generate(out_dir, SynthConfig(...))`` writes::

    OUT/videos/<class>/<id>.mp4      trimmed single-label clips (a folder-per-class source)
    OUT/multilabel/<id>.mp4          clips with several simultaneous actions (--multilabel)
    OUT/labels.txt                   class names, one per line, in index order
    OUT/taxonomy.txt                 the classes' paths in a three-level tree (falv train --taxonomy)
    OUT/{train,val,test}.csv         "path,label[,label...]" rows, no header, paths relative to OUT
    OUT/untrimmed/<id>.mp4           long videos with several actions (--untrimmed)
    OUT/untrimmed/ground_truth.json  ActivityNet-style segments
    OUT/untrimmed/segments.csv       the same segments as a table
    OUT/manifest.json                config, seed, falv version, every video's generating parameters

Two families of classes (see ``docs/synth.md``):

* **temporal** classes come in pairs whose videos differ only in the order of
  their frames: a video of ``move_left`` is a ``move_right`` video played
  backwards. Both partners draw appearance, position and nuisances from the
  same distribution and the partner's track is the canonical track with time
  reversed, so any model that ignores frame order (a frame classifier averaged
  over frames, a bag of frames) is at chance within each pair.
* **appearance** classes ``<colour>-<texture>-<shape>[-on-<background>]``
  differ in what the object looks like; their motion (static or a small wobble)
  is irrelevant.
* **long-range** classes (``--config longrange``) are pairs made the same way
  (the partner is the canonical video played backwards), but whose difference
  is the order of two events several sampled frames apart: ``a_then_b`` (a
  warm square shows, then later a cool circle) against ``b_then_a``, and
  ``grow_then_shrink`` against ``shrink_then_grow`` (one full cycle of size
  change). Each event alone looks the same in both classes (symmetric fades,
  growing and shrinking in both), so motion between neighbouring frames does
  not tell them apart; which event comes first does.

The stages are plain functions over plain data: :func:`resolve_classes` and
:func:`plan` (all randomness, seeded per video) produce JSON-serialisable
:class:`VideoSpec` s, :func:`falv.data.synth_render.render_frames` turns a scene
into pixels and :func:`encode_video` writes them, in worker processes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from falv import __version__
from falv.data.synth_render import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    TEXTURES,
    hsv_to_rgb,
    render_frames,
    rgb_to_yuv420p,
)
from falv.errors import ConfigError, RunError

__all__ = [
    "MODES",
    "TEMPORAL_PAIRS",
    "TEMPORAL_CLASSES",
    "LONG_RANGE_PAIRS",
    "LONG_RANGE_CLASSES",
    "APPEARANCE_CLASSES",
    "SPLITS",
    "SynthConfig",
    "SynthManifest",
    "VideoSpec",
    "partner",
    "taxonomy_path",
    "catalogue",
    "resolve_classes",
    "split_counts",
    "plan",
    "sample_action",
    "sample_actions",
    "trimmed_spec",
    "multilabel_spec",
    "untrimmed_spec",
    "render_video",
    "encode_video",
    "generate",
    "load_manifest",
]

MANIFEST_FORMAT = "falv-synth"
MANIFEST_VERSION = 1
MODES = ("temporal", "appearance", "mixed", "longrange")
SPLITS = ("train", "val", "test")

#: Temporal pairs ``(canonical, partner)``: the partner is the canonical motion played backwards.
TEMPORAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("move_right", "move_left"),
    ("rotate_clockwise", "rotate_counterclockwise"),
    ("approach", "recede"),
    ("appear", "disappear"),
    ("speed_up", "slow_down"),
)
TEMPORAL_CLASSES: tuple[str, ...] = tuple(name for pair in TEMPORAL_PAIRS for name in pair)
#: Long-range pairs ``(canonical, partner)``: the partner is again the canonical video played
#: backwards, but the classes differ only in the order of events several sampled frames apart.
LONG_RANGE_PAIRS: tuple[tuple[str, str], ...] = (
    ("a_then_b", "b_then_a"),
    ("grow_then_shrink", "shrink_then_grow"),
)
LONG_RANGE_CLASSES: tuple[str, ...] = tuple(name for pair in LONG_RANGE_PAIRS for name in pair)
_ALL_PAIRS = TEMPORAL_PAIRS + LONG_RANGE_PAIRS
_CANONICAL = {b: a for a, b in _ALL_PAIRS} | {a: a for a, _ in _ALL_PAIRS}
_PARTNER = {b: a for a, b in _ALL_PAIRS} | {a: b for a, b in _ALL_PAIRS}
#: Colour families of the two markers of ``a_then_b``: A is a warm square, B a cool circle.
_MARKER_A = ("square", ("red", "yellow", "magenta"))
_MARKER_B = ("circle", ("green", "cyan", "blue"))

#: Default appearance classes, minimal pairs first (each of the first six differs
#: from another in one attribute: shape, texture, colour, background).
APPEARANCE_CLASSES: tuple[str, ...] = (
    "red-solid-circle",
    "red-solid-square",
    "red-striped-circle",
    "blue-solid-circle",
    "green-solid-square-on-plain",
    "green-solid-square-on-texture",
    "blue-checkered-triangle",
    "green-striped-cross",
    "yellow-checkered-square",
    "magenta-solid-triangle",
    "cyan-striped-square",
    "yellow-solid-cross",
)

# keys separating the random streams of the plan (with the seed and a class hash)
_KEY_TRIMMED, _KEY_SPLIT, _KEY_MULTI, _KEY_UNTRIMMED = 1, 2, 3, 4


#: The parent of each temporal and long-range pair in the synth taxonomy (``taxonomy_path``).
_PAIR_GROUPS = {"move_right": "translation", "rotate_clockwise": "rotation", "approach": "depth",
                "appear": "visibility", "speed_up": "speed", "a_then_b": "events", "grow_then_shrink": "size"}


def taxonomy_path(name: str) -> str:
    """A class's place in the synth taxonomy (three levels, ``falv.taxonomy``): temporal classes
    under ``motion/<pair>`` (``motion/translation/move_right``: the pair is what moves, the leaf the
    direction), long-range classes under ``order/<pair>``, appearance classes under
    ``appearance/<shape>`` (``appearance/circle/red-solid-circle``)."""
    if name in TEMPORAL_CLASSES:
        return f"motion/{_PAIR_GROUPS[_CANONICAL[name]]}/{name}"
    if name in LONG_RANGE_CLASSES:
        return f"order/{_PAIR_GROUPS[_CANONICAL[name]]}/{name}"
    return f"appearance/{AppearanceClass.parse(name).shape}/{name}"


def partner(name: str) -> str | None:
    """The temporal partner of a class (``move_left`` -> ``move_right``), or None."""
    return _PARTNER.get(name)


def catalogue(mode: str) -> tuple[str, ...]:
    """The default class list of a mode, in label-index order."""
    if mode == "temporal":
        return TEMPORAL_CLASSES
    if mode == "appearance":
        return APPEARANCE_CLASSES
    if mode == "longrange":
        return LONG_RANGE_CLASSES
    if mode == "mixed":  # a temporal pair, then two appearance classes, and so on
        out: list[str] = []
        for i, pair in enumerate(TEMPORAL_PAIRS):
            out += [*pair, *APPEARANCE_CLASSES[2 * i : 2 * i + 2]]
        return tuple(out) + APPEARANCE_CLASSES[2 * len(TEMPORAL_PAIRS) :]
    raise ConfigError(f"unknown synth config {mode!r}; choose one of {', '.join(MODES)}")


@dataclass(frozen=True)
class AppearanceClass:
    """A parsed appearance class name ``<colour>-<texture>-<shape>[-on-<background>]``."""

    colour: str
    texture: str
    shape: str
    background: str | None = None

    @classmethod
    def parse(cls, name: str) -> AppearanceClass:
        parts = name.split("-")
        background = None
        if len(parts) == 5 and parts[3] == "on":
            background = parts[4]
            parts = parts[:3]
        if len(parts) != 3:
            raise ConfigError(
                f"unknown class {name!r}: use a temporal class ({', '.join(TEMPORAL_CLASSES + LONG_RANGE_CLASSES)}) "
                "or <colour>-<texture>-<shape>[-on-<background>], e.g. red-striped-circle-on-gradient"
            )
        colour, texture, shape = parts
        for value, allowed, what in (
            (colour, tuple(COLOURS), "colour"),
            (texture, TEXTURES, "texture"),
            (shape, SHAPES, "shape"),
        ):
            if value not in allowed:
                raise ConfigError(f"class {name!r}: unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if background is not None and background not in BACKGROUNDS:
            raise ConfigError(
                f"class {name!r}: unknown background {background!r}; choose one of {', '.join(BACKGROUNDS)}"
            )
        return cls(colour, texture, shape, background)

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.colour, self.texture, self.shape)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a generated benchmark (with :func:`generate`'s output directory).

    ``classes`` is None (the mode's whole catalogue), an int (its first N classes)
    or a sequence of class names. Durations are in seconds; ``num_frames`` fixes
    the clip length instead. ``noise`` is the largest Gaussian pixel noise
    standard deviation (0-255 scale), ``jitter`` the camera shake in pixels,
    ``distractors`` the most distractor objects per video.
    """

    mode: str = "temporal"
    classes: tuple[str, ...] | int | None = None
    videos_per_class: int = 10
    seed: int = 0
    width: int = 64
    height: int = 64
    fps: int = 12
    duration: tuple[float, float] = (1.5, 3.0)
    num_frames: int | None = None
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15)
    untrimmed: int = 0
    untrimmed_duration: tuple[float, float] = (20.0, 40.0)
    multilabel: int = 0
    max_labels: int = 2
    distractors: int = 2
    noise: float = 4.0
    jitter: float = 0.75
    crf: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        for name in ("duration", "untrimmed_duration", "splits"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        catalogue(self.mode)  # validates the mode
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ConfigError(f"frame size {self.width}x{self.height} must be even and at least 16x16 (H.264 yuv420p)")
        if self.fps < 1 or self.fps > 120:
            raise ConfigError(f"fps {self.fps} must be between 1 and 120")
        lo, hi = self.duration
        if not 0 < lo <= hi:
            raise ConfigError(f"duration range {self.duration} must satisfy 0 < min <= max")
        if self.num_frames is not None and self.num_frames < 2:
            raise ConfigError(f"num_frames {self.num_frames} must be at least 2")
        if self.clip_frames_range()[0] < 2:
            raise ConfigError(f"duration {lo}s at {self.fps} fps gives fewer than 2 frames")
        if self.videos_per_class < 0 or self.untrimmed < 0 or self.multilabel < 0:
            raise ConfigError("video counts must not be negative")
        if len(self.splits) != 3 or min(self.splits) < 0 or not math.isclose(sum(self.splits), 1.0, abs_tol=1e-6):
            raise ConfigError(f"splits {self.splits} must be three non-negative fractions summing to 1")
        ulo, uhi = self.untrimmed_duration
        if not 0 < ulo <= uhi:
            raise ConfigError(f"untrimmed duration range {self.untrimmed_duration} must satisfy 0 < min <= max")
        if self.untrimmed and ulo * self.fps < self.clip_frames_range()[1] + 4 * self.fps:
            raise ConfigError(
                f"untrimmed videos of {ulo}s are too short for clips of up to {self.clip_frames_range()[1]} frames; "
                "allow four seconds of background around an action (up to 3 s before it, 1 s after)"
            )
        if self.max_labels < 2:
            raise ConfigError(f"max_labels {self.max_labels} must be at least 2")
        if self.distractors < 0 or self.noise < 0 or self.jitter < 0:
            raise ConfigError("distractors, noise and jitter must not be negative")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf {self.crf} must be between 0 and 51")

    def clip_frames_range(self) -> tuple[int, int]:
        """Smallest and largest number of frames of a trimmed clip."""
        if self.num_frames is not None:
            return self.num_frames, self.num_frames
        return max(1, round(self.duration[0] * self.fps)), max(1, round(self.duration[1] * self.fps))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if isinstance(self.classes, tuple) else self.classes
        for name in ("duration", "untrimmed_duration", "splits"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        return cls(**d)


def resolve_classes(config: SynthConfig) -> list[str]:
    """The class names of a config in label-index order; raises ConfigError on unknown or overlapping classes."""
    full = catalogue(config.mode)
    if config.classes is None:
        names = list(full)
    elif isinstance(config.classes, int):
        if not 1 <= config.classes <= len(full):
            raise ConfigError(f"--classes {config.classes}: the {config.mode} config has 1 to {len(full)} classes")
        names = list(full[: config.classes])
    else:
        names = [str(c).strip() for c in config.classes if str(c).strip()]
        if not names:
            raise ConfigError("no classes given")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate classes in {names}")
    if config.multilabel and len(names) < 2:
        raise ConfigError("multi-label clips need at least two classes")
    appearance: dict[tuple[str, str, str], list[str | None]] = {}
    for name in names:
        if name in _PARTNER:
            if config.mode == "appearance":
                raise ConfigError(f"temporal class {name!r} in the appearance config; use --config temporal or mixed")
            continue
        cls = AppearanceClass.parse(name)
        if config.mode in ("temporal", "longrange"):
            raise ConfigError(
                f"appearance class {name!r} in the {config.mode} config; use --config appearance or mixed"
            )
        appearance.setdefault(cls.triple, []).append(cls.background)
    for triple, backgrounds in appearance.items():
        if None in backgrounds and len(set(BACKGROUNDS) - set(backgrounds)) == 0:
            raise ConfigError(f"class {'-'.join(triple)!r} (any background) has no background left for it")
    return names


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` items go to each split: largest remainders, and at least one
    per non-empty split when ``n`` allows it (so small classes still reach val/test)."""
    raw = [n * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


# ----------------------------------------------------------------------------- sampling


def _r(x: float) -> float:
    """Round a sampled parameter so the manifest stays readable (the rounded value is the one rendered)."""
    return round(float(x), 5)


def _key(name: str) -> int:
    """A stable integer for a class name, so a video's content does not depend on which other classes exist."""
    return zlib.crc32(name.encode())


def _sample_colour(rng: np.random.Generator, family: str) -> tuple[list[float], list[float]]:
    hue = COLOURS[family] + rng.uniform(-8, 8)
    s, v = rng.uniform(0.65, 1.0), rng.uniform(0.8, 1.0)
    return hsv_to_rgb(hue, s, v), hsv_to_rgb(hue, s, v * 0.4)


def _sample_object(
    rng: np.random.Generator,
    look: AppearanceClass | None,
    forbidden: set[tuple[str, str, str]],
    radius_scale: float,
) -> dict[str, Any]:
    """Appearance of the main object: fixed by an appearance class, else random.

    Random objects (of temporal classes) are never a solid circle, whose rotation
    would be invisible, nor look like one of the ``forbidden`` appearance classes.
    """
    if look is None:
        while True:
            colour = str(rng.choice(list(COLOURS)))
            texture = str(rng.choice(TEXTURES))
            shape = str(rng.choice(SHAPES))
            if (shape, texture) != ("circle", "solid") and (colour, texture, shape) not in forbidden:
                break
    else:
        colour, texture, shape = look.triple
    rgb, rgb2 = _sample_colour(rng, colour)
    return {
        "role": "action",
        "shape": shape,
        "texture": texture,
        "colour_name": colour,
        "colour": rgb,
        "colour2": rgb2,
        "radius": _r(rng.uniform(0.13, 0.19) * radius_scale),
    }


def _sample_background(rng: np.random.Generator, allowed: Sequence[str]) -> dict[str, Any]:
    kind = str(rng.choice(list(allowed)))

    def dull() -> list[float]:
        return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.12, 0.5))

    bg: dict[str, Any] = {"kind": kind, "colour": dull()}
    if kind != "plain":
        bg["colour2"] = dull()
    if kind == "gradient":
        bg["direction"] = _r(rng.uniform(0, 2 * math.pi))
    elif kind == "texture":
        bg["waves"] = [
            [_r(rng.uniform(-4, 4)), _r(rng.uniform(-4, 4)), _r(rng.uniform(0, 2 * math.pi))] for _ in range(3)
        ]
    return bg


def _sample_distractors(rng: np.random.Generator, config: SynthConfig, num_frames: int) -> list[dict[str, Any]]:
    """Small, desaturated objects bouncing around: nuisance, symmetric under time reversal."""
    out = []
    for _ in range(int(rng.integers(0, config.distractors + 1))):
        speed, direction = rng.uniform(0.0, 0.25), rng.uniform(0, 2 * math.pi)
        colour = hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.85))
        out.append(
            {
                "role": "distractor",
                "shape": str(rng.choice(SHAPES)),
                "texture": "solid",
                "colour": colour,
                "colour2": colour,
                "radius": _r(rng.uniform(0.05, 0.08)),
                "frames": [0, num_frames],
                "motion": {
                    "kind": "bounce",
                    "x": _r(rng.uniform(0.1, 0.9)),
                    "y": _r(rng.uniform(0.1, 0.9)),
                    "vx": _r(speed * math.cos(direction)),
                    "vy": _r(speed * math.sin(direction)),
                    "angle": _r(rng.uniform(0, 2 * math.pi)),
                    "spin": _r(rng.uniform(-1.0, 1.0)),
                },
            }
        )
    return out


def _sample_motion(
    rng: np.random.Generator,
    label: str,
    radius: float,
    box: Sequence[float],
    width: int,
    height: int,
) -> tuple[dict[str, Any], float]:
    """Motion of the main object of class ``label`` inside ``box = (x0, y0, x1, y1)`` (frame fractions).

    Temporal classes sample their pair's canonical motion and set ``reverse`` for
    the partner. Returns the motion and the radius (approach/recede enlarge it).
    """
    canonical = _CANONICAL.get(label)
    side = min(width, height)
    angle = _r(rng.uniform(0, 2 * math.pi))
    if canonical == "approach":
        radius = radius * 1.5  # largest size; it starts 2-3x smaller
    elif canonical == "grow_then_shrink":
        radius = radius * 0.8  # the start size; it grows by up to exp(0.5) = 1.65x
    reach = radius * (math.exp(0.5) if canonical == "grow_then_shrink" else 1.0)  # largest radius
    rx, ry = reach * side / width, reach * side / height
    x0, y0, x1, y1 = box
    # room for the centre so the whole object stays inside the box
    cx_lo, cx_hi = x0 + rx, max(x0 + rx, x1 - rx)
    cy_lo, cy_hi = y0 + ry, max(y0 + ry, y1 - ry)
    x, y = _r(rng.uniform(cx_lo, cx_hi)), _r(rng.uniform(cy_lo, cy_hi))
    if canonical is None:  # appearance class: static or an irrelevant wobble
        if rng.random() < 0.5:
            return {"kind": "static", "x": x, "y": y, "angle": angle}, radius
        return {
            "kind": "wobble",
            "x": x,
            "y": y,
            "angle": angle,
            "amp_x": _r(rng.uniform(0.01, 0.05)),
            "amp_y": _r(rng.uniform(0.01, 0.05)),
            "amp_angle": _r(rng.uniform(0.1, 0.5)),
            "freq": _r(rng.uniform(0.3, 1.0)),
            "phase_x": _r(rng.uniform(0, 2 * math.pi)),
            "phase_y": _r(rng.uniform(0, 2 * math.pi)),
            "phase_angle": _r(rng.uniform(0, 2 * math.pi)),
        }, radius
    motion: dict[str, Any]
    if canonical == "move_right":  # horizontal, constant speed
        travel = (cx_hi - cx_lo) * rng.uniform(0.55, 0.95)
        start = rng.uniform(cx_lo, cx_hi - travel)
        motion = {"kind": "linear", "x": _r(start), "x_end": _r(start + travel), "y": y, "y_end": y, "power": 1.0}
    elif canonical == "speed_up":  # vertical, accelerating; up or down
        travel = (cy_hi - cy_lo) * rng.uniform(0.55, 0.95)
        start = rng.uniform(cy_lo, cy_hi - travel)
        a, b = (start, start + travel) if rng.random() < 0.5 else (start + travel, start)
        motion = {"kind": "linear", "x": x, "x_end": x, "y": _r(a), "y_end": _r(b), "power": _r(rng.uniform(2.0, 3.0))}
    elif canonical == "rotate_clockwise":
        motion = {"kind": "rotate", "x": x, "y": y, "turn": _r(rng.uniform(0.5, 1.5) * math.pi)}
    elif canonical == "approach":
        motion = {"kind": "scale", "x": x, "y": y, "scale": _r(1.0 / rng.uniform(2.0, 3.0)), "scale_end": 1.0}
    elif canonical == "grow_then_shrink":  # one cycle: grow, back through the start size, shrink, back
        motion = {"kind": "pulse", "x": x, "y": y, "amp": _r(rng.uniform(0.35, 0.5))}
    elif canonical == "appear":
        motion = {
            "kind": "fade", "x": x, "y": y,
            "fade_start": _r(rng.uniform(0.0, 0.2)), "fade_end": _r(rng.uniform(0.6, 0.9)),
        }
    else:  # pragma: no cover - the pair table and this function must agree
        raise AssertionError(canonical)
    motion.setdefault("angle", angle)
    motion["reverse"] = label != canonical
    return motion, radius


def _sample_markers(
    rng: np.random.Generator,
    label: str,
    frames: tuple[int, int],
    box: Sequence[float],
    config: SynthConfig,
    radius_scale: float,
) -> list[dict[str, Any]]:
    """The two objects of ``a_then_b`` / ``b_then_a``: marker A (a warm square) shows for a
    while, then after a gap marker B (a cool circle); the partner plays this backwards.

    Each marker fades in and out symmetrically over a few percent of the clip, so a
    marker's own frames look the same in both classes; only which comes first differs.
    """
    d_a, d_b = rng.uniform(0.22, 0.3), rng.uniform(0.22, 0.3)
    gap = rng.uniform(0.1, 0.25)
    on_a = rng.uniform(0.03, 0.97 - d_a - gap - d_b)
    windows = [(on_a, on_a + d_a), (on_a + d_a + gap, on_a + d_a + gap + d_b)]
    reverse = label != _CANONICAL[label]
    side = min(config.width, config.height)
    x0, y0, x1, y1 = box
    out = []
    for (shape, families), (on, off) in zip((_MARKER_A, _MARKER_B), windows):
        colour = str(rng.choice(list(families)))
        rgb, rgb2 = _sample_colour(rng, colour)
        radius = _r(rng.uniform(0.13, 0.19) * radius_scale)
        rx, ry = radius * side / config.width, radius * side / config.height
        x = _r(rng.uniform(x0 + rx, max(x0 + rx, x1 - rx)))
        y = _r(rng.uniform(y0 + ry, max(y0 + ry, y1 - ry)))
        motion = {
            "kind": "blink", "x": x, "y": y, "angle": _r(rng.uniform(0, 2 * math.pi)),
            "on": _r(on), "off": _r(off), "fade": 0.03, "reverse": reverse,
        }
        out.append({
            "role": "action", "shape": shape, "texture": "solid", "colour_name": colour, "colour": rgb,
            "colour2": rgb2, "radius": radius, "label": label, "frames": list(frames), "motion": motion,
        })
    return out


def sample_actions(
    rng: np.random.Generator,
    label: str,
    classes: Sequence[str],
    frames: tuple[int, int],
    box: Sequence[float],
    config: SynthConfig,
    radius_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """The labelled objects that act ``label``: one object, or the two markers of ``a_then_b``/``b_then_a``."""
    if _CANONICAL.get(label) == "a_then_b":
        return _sample_markers(rng, label, frames, box, config, radius_scale)
    return [sample_action(rng, label, classes, frames, box, config, radius_scale)]


def sample_action(
    rng: np.random.Generator,
    label: str,
    classes: Sequence[str],
    frames: tuple[int, int],
    box: Sequence[float],
    config: SynthConfig,
    radius_scale: float = 1.0,
) -> dict[str, Any]:
    """One labelled object: appearance, motion and the frames where it exists (classes acted by
    one object; :func:`sample_actions` covers every class)."""
    if _CANONICAL.get(label) == "a_then_b":
        raise ConfigError(f"{label} is acted by two objects; use sample_actions")
    look = None if label in _PARTNER else AppearanceClass.parse(label)
    forbidden = {AppearanceClass.parse(c).triple for c in classes if c not in _PARTNER}
    obj = _sample_object(rng, look, forbidden, radius_scale)
    motion, radius = _sample_motion(rng, label, obj["radius"], box, config.width, config.height)
    obj.update(label=label, radius=_r(radius), frames=list(frames), motion=motion)
    return obj


def _backgrounds_for(label: str, classes: Sequence[str]) -> list[str]:
    """Backgrounds a video of ``label`` may have: its own if named, else those no sibling class claims."""
    if label in _PARTNER:
        return list(BACKGROUNDS)
    look = AppearanceClass.parse(label)
    if look.background is not None:
        return [look.background]
    taken = {
        AppearanceClass.parse(c).background
        for c in classes
        if c not in _PARTNER and AppearanceClass.parse(c).triple == look.triple
    }
    return [b for b in BACKGROUNDS if b not in taken]


def _scene(
    config: SynthConfig, rng: np.random.Generator, num_frames: int, backgrounds: Sequence[str]
) -> dict[str, Any]:
    return {
        "width": config.width,
        "height": config.height,
        "fps": config.fps,
        "num_frames": num_frames,
        "background": _sample_background(rng, backgrounds),
        "objects": _sample_distractors(rng, config, num_frames),
        "noise": {
            "std": _r(config.noise * rng.uniform(0.5, 1.0)),
            "jitter": config.jitter,
            "seed": int(rng.integers(0, 2**31)),
        },
    }


def _clip_frames(rng: np.random.Generator, config: SynthConfig) -> int:
    if config.num_frames is not None:
        return config.num_frames
    return max(2, round(rng.uniform(*config.duration) * config.fps))


@dataclass
class VideoSpec:
    """One video to generate: where it goes, its labels and split, and the scene that draws it."""

    id: str
    path: str  # relative to the output directory
    kind: str  # "trimmed", "multilabel" or "untrimmed"
    labels: list[str]
    split: str
    scene: dict[str, Any]
    segments: list[dict[str, Any]] = field(default_factory=list)  # untrimmed: [{"segment": [s, e], "label"}]

    @property
    def num_frames(self) -> int:
        return int(self.scene["num_frames"])

    @property
    def duration(self) -> float:
        return self.num_frames / self.scene["fps"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(num_frames=self.num_frames, fps=self.scene["fps"], duration=_r(self.duration))
        d.update(width=self.scene["width"], height=self.scene["height"])
        if not self.segments:
            del d["segments"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSpec:
        return cls(
            id=d["id"], path=d["path"], kind=d["kind"], labels=list(d["labels"]), split=d["split"],
            scene=d["scene"], segments=list(d.get("segments", [])),
        )


def trimmed_spec(config: SynthConfig, classes: Sequence[str], label: str, index: int) -> VideoSpec:
    """The ``index``-th single-label clip of class ``label`` (split not yet assigned)."""
    rng = np.random.default_rng([config.seed, _KEY_TRIMMED, _key(label), index])
    num_frames = _clip_frames(rng, config)
    scene = _scene(config, rng, num_frames, _backgrounds_for(label, classes))
    scene["objects"].extend(sample_actions(rng, label, classes, (0, num_frames), (0.0, 0.0, 1.0, 1.0), config))
    vid = f"{label}_{index:05d}"
    return VideoSpec(vid, f"videos/{label}/{vid}.mp4", "trimmed", [label], "", scene)


def multilabel_spec(config: SynthConfig, classes: Sequence[str], index: int) -> VideoSpec:
    """A clip with 2..max_labels distinct classes, each acted by its own object in its own strip of the frame."""
    rng = np.random.default_rng([config.seed, _KEY_MULTI, index])
    k = int(rng.integers(2, min(config.max_labels, len(classes)) + 1))
    labels = [str(c) for c in rng.choice(list(classes), size=k, replace=False)]
    num_frames = _clip_frames(rng, config)
    # backgrounds every label allows (an appearance class may pin one)
    allowed = [b for b in BACKGROUNDS if all(b in _backgrounds_for(lb, classes) for lb in labels)] or list(BACKGROUNDS)
    scene = _scene(config, rng, num_frames, allowed)
    # strips side by side (vertical) or stacked; horizontal movers want stacked
    # strips and vertical movers side-by-side ones, so their travel is not cramped
    horizontal = any(_CANONICAL.get(lb) == "move_right" for lb in labels)
    vertical = any(_CANONICAL.get(lb) == "speed_up" for lb in labels)
    side_by_side = bool(rng.random() < 0.5) if horizontal == vertical else vertical
    for i, label in enumerate(labels):
        a, b = i / k, (i + 1) / k
        box = (a, 0.0, b, 1.0) if side_by_side else (0.0, a, 1.0, b)
        scene["objects"].extend(
            sample_actions(rng, label, classes, (0, num_frames), box, config, radius_scale=1.0 - 0.1 * k)
        )
    vid = f"multi_{index:05d}"
    return VideoSpec(vid, f"multilabel/{vid}.mp4", "multilabel", labels, "", scene)


def untrimmed_spec(config: SynthConfig, classes: Sequence[str], index: int) -> VideoSpec:
    """A long video: background (distractors only) with actions at random, non-overlapping times."""
    rng = np.random.default_rng([config.seed, _KEY_UNTRIMMED, index])
    fps = config.fps
    num_frames = round(rng.uniform(*config.untrimmed_duration) * fps)
    scene = _scene(config, rng, num_frames, BACKGROUNDS)
    segments = []
    cursor = round(rng.uniform(0.5, 3.0) * fps)
    while True:
        length = _clip_frames(rng, config)
        if cursor + length + fps > num_frames:  # keep at least a second of background at the end
            break
        label = str(rng.choice(list(classes)))
        scene["objects"].extend(
            sample_actions(rng, label, classes, (cursor, cursor + length), (0.0, 0.0, 1.0, 1.0), config)
        )
        segments.append({"segment": [_r(cursor / fps), _r((cursor + length) / fps)], "label": label})
        cursor += length + round(rng.uniform(1.0, 4.0) * fps)
    vid = f"untrimmed_{index:05d}"
    return VideoSpec(vid, f"untrimmed/{vid}.mp4", "untrimmed", [s["label"] for s in segments], "", scene, segments)


def plan(config: SynthConfig) -> list[VideoSpec]:
    """Every video of a config, with its split, in output order. Pure and deterministic.

    Each video draws from its own generator seeded by ``(seed, kind, class, index)``,
    so a clip does not change when other classes or counts are added. Trimmed
    splits are stratified per class; multi-label clips are split at random with
    the same fractions; untrimmed videos alternate validation/testing
    (ActivityNet subsets) after a seeded shuffle.
    """
    classes = resolve_classes(config)
    specs: list[VideoSpec] = []
    for label in classes:
        clips = [trimmed_spec(config, classes, label, i) for i in range(config.videos_per_class)]
        _assign_splits(clips, np.random.default_rng([config.seed, _KEY_SPLIT, _key(label)]), config.splits)
        specs.extend(clips)
    multi = [multilabel_spec(config, classes, i) for i in range(config.multilabel)]
    _assign_splits(multi, np.random.default_rng([config.seed, _KEY_SPLIT, _KEY_MULTI]), config.splits)
    specs.extend(multi)
    long = [untrimmed_spec(config, classes, i) for i in range(config.untrimmed)]
    order = np.random.default_rng([config.seed, _KEY_SPLIT, _KEY_UNTRIMMED]).permutation(len(long))
    for rank, i in enumerate(order):
        long[i].split = ("validation", "testing")[rank % 2]
    specs.extend(long)
    return specs


def _assign_splits(specs: list[VideoSpec], rng: np.random.Generator, fractions: Sequence[float]) -> None:
    order = rng.permutation(len(specs))
    counts = split_counts(len(specs), fractions)
    names = [name for name, c in zip(SPLITS, counts) for _ in range(c)]
    for i, name in zip(order, names):
        specs[i].split = name


# ----------------------------------------------------------------------------- rendering and encoding

_CHUNK = 64  # frames rendered at once (bounds memory for long untrimmed videos)


def render_video(scene: dict[str, Any]) -> np.ndarray:
    """All frames of a scene, ``(T, H, W, 3)`` uint8 RGB (what :func:`encode_video` encodes)."""
    return render_frames(scene, 0, scene["num_frames"])


def encode_video(path: str | os.PathLike[str], scene: dict[str, Any], crf: int = 20) -> None:
    """Render a scene and write it as H.264 (libx264, yuv420p) in MP4.

    x264 runs single-threaded with fixed options and without MB-tree, so the
    same scene gives the same bytes (checked by the tests); parallelism comes
    from encoding several videos at once.
    """
    import av  # lazy: PyAV is heavy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    total, w, h = scene["num_frames"], scene["width"], scene["height"]
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(scene["fps"]))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # MB-tree rate control reads uninitialised memory on tiny frames (bytes
        # changed from run to run at 64x64); without it x264 is bit-exact.
        stream.options = {"threads": "1", "preset": "veryfast", "crf": str(crf), "x264-params": "no-mbtree=1"}
        for start in range(0, total, _CHUNK):
            yuv = rgb_to_yuv420p(render_frames(scene, start, start + _CHUNK))
            for i, plane in enumerate(yuv):
                frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
                frame.pts = start + i
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(tmp, path)


def _encode_job(job: tuple[str, dict[str, Any], int]) -> str:
    path, scene, crf = job
    encode_video(path, scene, crf)
    return path


# ----------------------------------------------------------------------------- output


@dataclass
class SynthManifest:
    """What :func:`generate` wrote: the config, classes and every video's spec.

    ``seconds`` (generation time) is not stored in ``manifest.json``, which
    depends only on the config.
    """

    root: Path
    config: SynthConfig
    classes: list[str]
    videos: list[VideoSpec]
    seconds: float = 0.0

    def split(self, name: str) -> list[VideoSpec]:
        """Videos of one split (``train``/``val``/``test`` or ``validation``/``testing`` for untrimmed)."""
        return [v for v in self.videos if v.split == name]

    @property
    def trimmed(self) -> list[VideoSpec]:
        return [v for v in self.videos if v.kind != "untrimmed"]

    @property
    def untrimmed(self) -> list[VideoSpec]:
        return [v for v in self.videos if v.kind == "untrimmed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "falv_version": __version__,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "classes": [
                {"index": i, "name": c, "kind": "temporal" if c in _PARTNER else "appearance", "partner": partner(c)}
                for i, c in enumerate(self.classes)
            ],
            "videos": [v.to_dict() for v in self.videos],
        }


def load_manifest(root: str | os.PathLike[str]) -> SynthManifest:
    """Read ``root/manifest.json`` written by :func:`generate`."""
    root = Path(root)
    try:
        data = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{root} has no readable falv synth manifest.json: {exc}") from exc
    if data.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{root / 'manifest.json'} is not a falv synth manifest")
    config = SynthConfig.from_dict(data["config"])
    classes = [c["name"] for c in data["classes"]]
    return SynthManifest(root, config, classes, [VideoSpec.from_dict(v) for v in data["videos"]])


def _prepare_output(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise ConfigError(f"{root} is not empty; choose a new directory or pass --overwrite")
        if not (root / "manifest.json").is_file():
            raise ConfigError(f"{root} is not empty and holds no falv synth manifest.json; refusing to overwrite it")
        load_manifest(root)  # only ever clear a directory falv synth wrote
        for name in ("videos", "multilabel", "untrimmed"):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in ("labels.txt", *(f"{s}.csv" for s in SPLITS), "manifest.json"):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def _write_index_files(manifest: SynthManifest) -> None:
    root = manifest.root
    _write_text(root / "labels.txt", "".join(f"{c}\n" for c in manifest.classes))
    _write_text(root / "taxonomy.txt", "".join(f"{taxonomy_path(c)}\n" for c in manifest.classes))
    for split in SPLITS:
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            for v in manifest.videos:
                if v.split == split and v.kind != "untrimmed":
                    writer.writerow([v.path, *v.labels])
    long = manifest.untrimmed
    if long:
        # ActivityNet v1.3 ground-truth layout (database -> subset, duration, annotations[segment, label])
        database = {
            v.id: {
                "subset": v.split,
                "duration": _r(v.duration),
                "url": "",
                "path": v.path,
                "fps": v.scene["fps"],
                "num_frames": v.num_frames,
                "annotations": [dict(s) for s in v.segments],
            }
            for v in long
        }
        gt = {"version": f"{MANIFEST_FORMAT}-{MANIFEST_VERSION}", "taxonomy": [], "database": database}
        _write_text(root / "untrimmed" / "ground_truth.json", json.dumps(gt, indent=1) + "\n")
        with open(root / "untrimmed" / "segments.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["video_id", "path", "subset", "start", "end", "label"])
            for v in long:
                for s in v.segments:
                    writer.writerow([v.id, v.path, v.split, s["segment"][0], s["segment"][1], s["label"]])
    _write_text(root / "manifest.json", json.dumps(manifest.to_dict(), indent=1) + "\n")


def default_workers() -> int:
    """Encoder processes: one per available core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def generate(
    out_dir: str | os.PathLike[str],
    config: SynthConfig,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthManifest:
    """Generate the benchmark described by ``config`` under ``out_dir``.

    ``workers`` encoder processes (default: one per core, 1 = in this process)
    render and encode videos; the output does not depend on it. They start like falv's
    decoding workers (forkserver on Linux, never a fork of this process), so a script that
    calls this with ``workers > 1`` needs an ``if __name__ == "__main__":`` guard
    (:class:`RunError` says so). ``progress(done,
    total)`` is called after each video. Raises :class:`ConfigError` for an
    invalid config or a non-empty ``out_dir`` (unless ``overwrite`` and it holds
    an earlier synth output).
    """
    start = time.perf_counter()
    root = Path(out_dir)
    specs = plan(config)  # validates everything before touching the disk
    classes = resolve_classes(config)
    _prepare_output(root, overwrite)
    jobs = [(str(root / s.path), s.scene, config.crf) for s in specs]
    workers = default_workers() if workers is None else max(1, workers)
    workers = min(workers, max(1, len(jobs)))
    done = 0
    results: Iterable[str]
    if workers == 1:
        results = map(_encode_job, jobs)
        for _ in results:
            done += 1
            if progress:
                progress(done, len(jobs))
    else:
        import multiprocessing
        from concurrent.futures.process import BrokenProcessPool

        from falv.video.pool import MAIN_GUARD_HINT, default_start_method

        # long videos first so no worker is left with one at the end
        order = sorted(range(len(jobs)), key=lambda i: -specs[i].num_frames)
        # the decoding pool's start method (forkserver on Linux), never a plain fork of a process
        # that may run torch, OpenMP or OpenVINO threads (Python 3.14's Linux default too)
        ctx = multiprocessing.get_context(default_start_method())
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                chunk = max(1, min(16, len(jobs) // (4 * workers)))
                for _ in pool.map(_encode_job, [jobs[i] for i in order], chunksize=chunk):
                    done += 1
                    if progress:
                        progress(done, len(jobs))
        except BrokenProcessPool as exc:
            raise RunError(f"the video encoder processes died. {MAIN_GUARD_HINT}, or pass workers=1") from exc
    manifest = SynthManifest(root, config, classes, specs)
    _write_index_files(manifest)
    manifest.seconds = time.perf_counter() - start
    return manifest
