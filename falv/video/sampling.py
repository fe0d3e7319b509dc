"""Which instants of a video to look at: pure functions over numbers, no I/O.

All times are seconds from the video's first frame (what
:func:`falv.video.read_frames` takes). Arithmetic is done with
:class:`fractions.Fraction` (inputs are converted exactly), so boundaries such as
"the last window ends at the duration" hold exactly, and the results are
rounded to ``float`` once at the end. Randomness only comes from an explicit
``seed`` (an ``int`` or a :class:`random.Random`), so a seed gives the same
timestamps on every machine.

- :func:`uniform_timestamps`: TSN segment sampling over the whole video.
- :func:`dense_clip_timestamps`: ``F`` frames ``stride`` frames apart.
- :func:`random_clip_start`: a seeded random start for a training clip.
- :func:`plan_windows`: the windows of a long video for labeling.
- :func:`feature_index_to_seconds` / :func:`seconds_to_feature_index`: the
  mapping between a feature (window) index and time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from falv.errors import ConfigError

Seed = int | random.Random | None
Number = float | int | Fraction

#: Two boundaries closer than this (seconds) are the same boundary: it absorbs
#: the rounding in a duration such as ``0.1 * 3``.
EPS = Fraction(1, 10**9)
#: A time less than this many features before a feature boundary counts as on it,
#: which absorbs the rounding of ``feature_index_to_seconds`` to float.
FEATURE_EPS = Fraction(1, 10**6)


@dataclass(frozen=True)
class Window:
    """One window of a video: ``[start, end]`` seconds and the ``timestamps`` to decode in it."""

    index: int
    start: float
    end: float
    timestamps: tuple[float, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start, "end": self.end, "timestamps": list(self.timestamps)}


# ---- helpers ---------------------------------------------------------------------------
def _frac(x: Number, name: str) -> Fraction:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ConfigError(f"{name} must be a number, got {x!r}")
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be finite, got {x!r}")
    return Fraction(x)


def _duration(duration: Number) -> Fraction:
    d = _frac(duration, "duration")
    if d < 0:
        raise ConfigError(f"duration must be >= 0, got {duration}")
    return d


def _count(n: int, name: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return n


def _fps(fps: Number | None) -> Fraction | None:
    """The frame rate, or ``None`` when unknown (``None``, 0, negative, NaN)."""
    if fps is None or isinstance(fps, bool):
        return None
    if isinstance(fps, float) and not math.isfinite(fps):
        return None
    f = Fraction(fps)
    return f if f > 0 else None


def _rng(seed: Seed) -> random.Random:
    if isinstance(seed, random.Random):
        return seed
    if seed is None:
        raise ConfigError("random sampling needs an explicit seed (an int or a random.Random)")
    return random.Random(seed)


def _segment_points(start: Fraction, end: Fraction, num_frames: int, offsets: list[Fraction]) -> list[Fraction]:
    """TSN: split ``[start, end)`` into ``num_frames`` equal segments, one point per segment."""
    length = end - start
    return [start + (i + offsets[i]) * length / num_frames for i in range(num_frames)]


# ---- whole-video and clip sampling -------------------------------------------------------
def uniform_timestamps(
    duration: Number,
    num_frames: int,
    *,
    mode: Literal["center", "random"] = "center",
    seed: Seed = None,
) -> list[float]:
    """``num_frames`` times spread over ``[0, duration)``, TSN style (Wang et al., 2016).

    The video is split into ``num_frames`` equal segments; ``mode="center"``
    (evaluation) takes each segment's centre, ``mode="random"`` (training) a
    uniformly random point of each segment drawn from ``seed``. The result is
    sorted, has ``num_frames`` entries and lies in ``[0, duration]``; a zero
    duration gives zeros.
    """
    d = _duration(duration)
    n = _count(num_frames, "num_frames")
    if mode == "center":
        offsets = [Fraction(1, 2)] * n
    elif mode == "random":
        rng = _rng(seed)
        offsets = [Fraction(rng.random()) for _ in range(n)]
    else:
        raise ConfigError(f"mode must be 'center' or 'random', got {mode!r}")
    return [float(t) for t in _segment_points(Fraction(0), d, n, offsets)]


def dense_clip_timestamps(
    start: Number,
    num_frames: int,
    stride_frames: int,
    fps: Number,
    *,
    duration: Number | None = None,
) -> list[float]:
    """``num_frames`` times ``stride_frames`` frames apart at ``fps``, from ``start``.

    ``t_k = start + k * stride_frames / fps`` (the SlowFast/X3D "dense" clip of
    ``F x s`` frames). With ``duration`` the times are clamped to
    ``[0, duration]``, i.e. a clip running past the end repeats the last frame.
    """
    n = _count(num_frames, "num_frames")
    s = _count(stride_frames, "stride_frames")
    rate = _fps(fps)
    if rate is None:
        raise ConfigError(f"fps must be a positive number for a dense clip, got {fps!r}")
    t0 = _frac(start, "start")
    times = [t0 + Fraction(k * s) / rate for k in range(n)]
    if duration is not None:
        d = _duration(duration)
        times = [min(max(t, Fraction(0)), d) for t in times]
    return [float(t) for t in times]


def random_clip_start(duration: Number, clip_duration: Number, *, seed: Seed) -> float:
    """Training jitter: a start drawn uniformly from ``[0, duration - clip_duration]``.

    A clip longer than the video starts at 0.
    """
    d = _duration(duration)
    c = _frac(clip_duration, "clip_duration")
    if c < 0:
        raise ConfigError(f"clip_duration must be >= 0, got {clip_duration}")
    room = max(Fraction(0), d - c)
    return float(room * Fraction(_rng(seed).random()))


# ---- windows of a long video ---------------------------------------------------------------
def plan_windows(
    duration: Number,
    fps: Number | None,
    num_frames: int,
    *,
    num_clips: int | None = None,
    window: Number | None = None,
    stride: Number | None = None,
) -> list[Window]:
    """Cut a video into windows and choose ``num_frames`` timestamps in each.

    Two plans:

    - ``num_clips=K``: K consecutive windows of equal length ``duration / K``;
      window ``k`` is ``feature_index_to_seconds(k, K, duration)``. With
      ``window=W`` as well, K windows of length ``W`` whose starts are spread
      evenly from 0 to ``duration - W`` (they cover the video when ``K * W >= duration``;
      K = 1: the middle ``W`` seconds); a video no longer than ``W`` gets one window
      ``[0, duration]``, however large K (the multi-view protocol of PySlowFast/TimeSformer,
      where K clips of the model's duration are spread over the video).
    - ``window=W`` (seconds) and ``stride=S`` (default ``W``, must be ``<= W``):
      sliding windows ``[k S, k S + W]``. When the video is not a multiple of the
      stride, the last window is filled from the last frames: it is
      ``[duration - W, duration]`` (the feature extractor of the seed notes does
      the same with its last bucket), so every window has length ``W`` and the
      last one ends exactly at ``duration``. A video shorter than ``W`` gives one
      window ``[0, duration]``.

    In each window the timestamps are TSN segment centres (``uniform_timestamps``
    within the window). When ``fps`` is known each is moved to the middle of the
    frame that shows it (clamped into the window), which keeps it away from frame
    boundaries and makes repeats explicit: a 3-frame video asked for 8 frames
    gets each frame's time 2-3 times. ``fps`` of ``None``/0 means unknown and
    leaves the centres as they are. A zero duration gives a window ``[0, 0]``
    whose timestamps are all 0 (a one-frame video with unknown rate).
    """
    d = _duration(duration)
    f = _count(num_frames, "num_frames")
    rate = _fps(fps)
    if num_clips is None and window is None:
        raise ConfigError("plan_windows needs num_clips or window")
    if stride is not None and window is None:
        raise ConfigError("stride needs window")
    if num_clips is not None:
        k = _count(num_clips, "num_clips")
        if window is None:
            bounds = [(d * i / k, d * (i + 1) / k) for i in range(k)]
        else:
            w = _positive(window, "window")
            if d <= w + EPS:  # the video fits in one window: one window over all of it
                bounds = [(Fraction(0), d)]
            elif k == 1:
                first = (d - w) / 2
                bounds = [(first, first + w)]
            else:
                bounds = [((d - w) * i / (k - 1), (d - w) * i / (k - 1) + w) for i in range(k)]
    else:
        w = _positive(window, "window")  # type: ignore[arg-type]
        s = w if stride is None else _positive(stride, "stride")
        if s > w:
            raise ConfigError(
                f"stride ({float(s):g} s) must not exceed window ({float(w):g} s): windows would leave gaps"
            )
        bounds = _sliding_bounds(d, w, s)
    return [
        Window(index=i, start=float(a), end=float(b), timestamps=_window_timestamps(a, b, f, rate, d))
        for i, (a, b) in enumerate(bounds)
    ]


def _positive(x: Number, name: str) -> Fraction:
    v = _frac(x, name)
    if v <= 0:
        raise ConfigError(f"{name} must be > 0 seconds, got {x}")
    return v


def _sliding_bounds(d: Fraction, w: Fraction, s: Fraction) -> list[tuple[Fraction, Fraction]]:
    if d <= w + EPS:
        return [(Fraction(0), d)]
    # windows needed so that the last one reaches d (within EPS)
    count = math.ceil((d - w) / s - EPS / s) + 1
    bounds = [(s * i, s * i + w) for i in range(count)]
    last_start = s * (count - 1)
    if last_start + w >= d - EPS:  # fill the last window from the last frames
        bounds[-1] = (d - w, d)
    return bounds


def _window_timestamps(a: Fraction, b: Fraction, f: int, rate: Fraction | None, d: Fraction) -> tuple[float, ...]:
    points = _segment_points(a, b, f, [Fraction(1, 2)] * f)
    if rate is None or d == 0:
        return tuple(float(t) for t in points)
    last_frame = max(0, math.ceil(d * rate) - 1)
    snapped = []
    for t in points:
        k = min(max(math.floor(t * rate), 0), last_frame)
        centre = (k + Fraction(1, 2)) / rate
        snapped.append(min(max(centre, a), b, d))
    return tuple(float(t) for t in snapped)


def window_timestamps(start: Number, end: Number, fps: Number | None, num_frames: int) -> list[float]:
    """The ``num_frames`` timestamps :func:`plan_windows` chooses inside the window ``[start, end]``.

    For a window whose end is not known to be the video's end (a live stream, where
    the duration is not known yet): TSN centres, each moved to the middle of the
    frame that shows it when ``fps`` is known, clamped into the window. For every
    window of a sliding-window plan except a last one filled from the video's end,
    this equals that window's ``timestamps``.
    """
    a, b = _frac(start, "start"), _frac(end, "end")
    if b < a:
        raise ConfigError(f"end ({end}) must not be before start ({start})")
    return list(_window_timestamps(a, b, _count(num_frames, "num_frames"), _fps(fps), b))


# ---- feature index <-> seconds ---------------------------------------------------------------
def seconds_to_feature_position(t: Number, num_features: int, duration: Number) -> float:
    """Continuous feature position of time ``t``: ``tau = t * n / duration``, clamped to ``[0, n]``.

    This is the seed notes' ``tau = (t * n * fps) / l`` with ``l / fps = duration``
    (``l`` frames, ``n`` features): ``n`` features cover the video evenly, feature
    ``i`` (0-based) spans ``tau`` in ``[i, i + 1)``. A zero duration gives 0.
    """
    n = _count(num_features, "num_features")
    d = _duration(duration)
    if d == 0:
        return 0.0
    tau = _frac(t, "t") * n / d
    return float(min(max(tau, Fraction(0)), Fraction(n)))


def seconds_to_feature_index(t: Number, num_features: int, duration: Number) -> int:
    """0-based index of the feature that covers time ``t``: ``floor(t * n / duration)``.

    Feature ``i`` covers ``[i * duration / n, (i + 1) * duration / n)``: the start is
    inclusive, the end exclusive, except that ``t = duration`` belongs to the last
    feature ``n - 1``. Times outside ``[0, duration]`` are clamped. A ``t`` less
    than :data:`FEATURE_EPS` (a millionth of a feature) before a boundary counts as
    on it, so ``feature_index_to_seconds`` round trips through float seconds.
    The seed notes' 1-based ``tau`` in ``[1, n]`` is this index + 1.
    """
    n = _count(num_features, "num_features")
    d = _duration(duration)
    if d == 0:
        return 0
    tau = _frac(t, "t") * n / d
    index = math.floor(tau + FEATURE_EPS)
    return min(max(index, 0), n - 1)


def feature_index_to_seconds(index: int, num_features: int, duration: Number) -> tuple[float, float]:
    """``(start, end)`` seconds of feature ``index`` (0-based) of ``num_features`` over ``duration``.

    ``start = index * duration / n``, ``end = (index + 1) * duration / n``; the
    inverse of :func:`seconds_to_feature_index`. Index ``n - 1`` ends exactly at
    ``duration``.
    """
    n = _count(num_features, "num_features")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ConfigError(f"index must be an integer in [0, {n - 1}], got {index!r}")
    d = _duration(duration)
    return float(d * index / n), float(d * (index + 1) / n)


__all__ = [
    "Window",
    "uniform_timestamps",
    "dense_clip_timestamps",
    "random_clip_start",
    "plan_windows",
    "window_timestamps",
    "seconds_to_feature_position",
    "seconds_to_feature_index",
    "feature_index_to_seconds",
]
