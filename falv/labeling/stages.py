"""Worker-side stages of the labeling engine and the options they need.

Nothing here imports torch, so decoding processes start fast and stay small.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from falv.config import FRAME_SELECTIONS
from falv.errors import ConfigError, error_fields
from falv.video.errors import VideoError
from falv.video.perturb import Perturbation


class SegmentOutsideVideoError(VideoError):
    """The part of a file an input names (e.g. a Kinetics row's times) is not in the file."""

    code = "segment_outside_video"
    default_detail = "the segment lies outside the video"


@dataclass(frozen=True)
class LabelOptions:
    """How to label. Preprocessing (frames, size, mean/std) comes from the model."""

    # Windows (falv.labeling.stages.plan_video): by default windows of the model's clip duration
    # (FALConfig.sampling) over the whole video; clips=K: K such windows spread over it.
    clips: int | None = None       # K windows of the model's clip duration spread over the video
    crops: int = 1                 # 1 (centre) or 3 (three crops along the long side)
    window: float | None = None    # sliding windows of this many seconds instead of the model's duration
    stride: float | None = None    # their stride (default: window)
    clip_seconds: float | None = None  # the model's clip duration, overriding its config's sampling
    temperature: float | None = None   # scores = softmax/sigmoid(logits / T); None: the config's (1 if none)
    thresholds: tuple[float, ...] | None = None  # multi-label: per-class thresholds instead of the config's
    top_k: int = 5
    # Multi-label models keep only the classes over their thresholds in the video labels;
    # False keeps the top_k best classes whatever their score (evaluation needs every score).
    apply_thresholds: bool = True
    batch_size: int = 4            # clips per model call (1-4 measured fastest on CPU)
    workers: int = 2               # decoding processes (2 measured fastest on a 2-core machine)
    timeout: float = 120.0         # seconds per decoding task before the file is given up
    # Windows decoded per task: bounds memory (64 x 8 frames at 224 short side: ~140 MB of
    # uint8). Within a task no frame is decoded twice; between two tasks of one long video
    # the frames from the keyframe before the next window may be decoded again.
    chunk_windows: int = 64
    smoothing: int = 1             # moving average over windows before segmenting
    min_duration: float = 0.0      # drop segments shorter than this (seconds)
    background_threshold: float = 0.5
    # Segment edges where the scores of consecutive windows cross instead of half-way between them
    # (falv.labeling.segments, step 3); matters with a stride finer than the window.
    refine_edges: bool = True
    embeddings: bool = False
    precision: str = "auto"
    device: str = "auto"
    runtime: str = "torch"         # torch, onnxruntime or openvino (falv.export.runtime.prepare_runtime)
    # Label perturbed clips instead (falv.video.perturb; falv evaluate --perturb): robustness measurements.
    perturb: Perturbation | None = None
    # Where a window's frames go: "uniform" (one per equal segment) or "key-moments" (more where the
    # picture changes: falv.video.keymoments; measured in docs/results.md). None: as the model was
    # trained (its config's sampling; uniform when it says nothing).
    frame_selection: str | None = None
    # A hierarchical model's labels (falv.taxonomy.Taxonomy.view): level=L reports the nodes L deep,
    # max_depth=D every leaf cut to D names; None: the leaves. Records carry the best path (label_path).
    level: int | None = None
    max_depth: int | None = None

    def __post_init__(self) -> None:
        if self.crops not in (1, 3):
            raise ConfigError(f"crops must be 1 or 3, got {self.crops}")
        if (self.clips is not None and self.clips < 1) or self.top_k < 1 or self.batch_size < 1 or self.workers < 0:
            raise ConfigError("clips, top_k and batch_size must be >= 1 and workers >= 0")
        if self.stride is not None and self.window is not None and self.stride > self.window:
            raise ConfigError(f"--stride ({self.stride:g} s) must not exceed --window ({self.window:g} s): "
                              "windows would leave gaps")
        if self.clips is not None and self.stride is not None:
            raise ConfigError("give --clips (K windows spread over the video) or --stride, not both")
        for name in ("clip_seconds", "temperature"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
            if not all(math.isfinite(t) for t in self.thresholds):
                raise ConfigError(f"thresholds must be finite numbers, got {list(self.thresholds)}")
        if self.window is not None and self.window <= 0:
            raise ConfigError(f"window must be > 0 seconds, got {self.window}")
        if self.stride is not None and self.window is None:
            raise ConfigError("--stride needs --window")
        from falv.export.runtime import RUNTIMES  # no torch import

        if self.perturb is not None and not isinstance(self.perturb, Perturbation):
            raise ConfigError(f"perturb must be a falv.video.perturb.Perturbation, got {self.perturb!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; valid values: {', '.join(RUNTIMES)}")
        for name in ("level", "max_depth"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.level is not None and self.max_depth is not None and self.max_depth < self.level:
            raise ConfigError(f"max_depth ({self.max_depth}) is above level ({self.level}): give one of them")
        if self.frame_selection is not None and self.frame_selection not in FRAME_SELECTIONS:
            raise ConfigError(f"unknown frame selection {self.frame_selection!r}; valid values: "
                              f"{', '.join(FRAME_SELECTIONS)}")


@dataclass(frozen=True)
class ModelSpec:
    """What the worker stages need to know about the model (picklable)."""

    num_frames: int
    short_side: int
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float
    # seconds one clip of the model spans (FALConfig.clip_seconds); None: unknown / a whole video
    clip_seconds: float | None = None
    # how the model's training frames were placed (its sampling's frame_selection): "uniform" or "key-moments"
    frame_selection: str = "uniform"


def frame_selection(spec: ModelSpec, options: LabelOptions) -> str:
    """Where a window's frames go: the options' choice, else the model's."""
    return options.frame_selection or spec.frame_selection


def chunk_size(spec: ModelSpec, options: LabelOptions) -> int:
    """Windows per decode task: ``options.chunk_windows``, divided by the candidates decoded per
    frame with key-moment selection, so that a task holds about as many frames either way."""
    if frame_selection(spec, options) == "key-moments":
        from falv.video.keymoments import DEFAULT_CANDIDATES_PER_FRAME

        return max(1, options.chunk_windows // DEFAULT_CANDIDATES_PER_FRAME)
    return options.chunk_windows


def default_window(num_frames: int, clip_seconds: float | None = None) -> float:
    """Sliding-window seconds where a window length is needed and none was given (live streams,
    untrimmed evaluation): the model's clip duration ``clip_seconds`` (FALConfig.clip_seconds)
    when known, else ``num_frames / 4`` seconds (at least 0.25): 2 s for 8 frames, a clip of
    4 frames per second, about as long as the actions of falv's synthetic benchmark."""
    if clip_seconds is not None:
        return float(clip_seconds)
    return max(0.25, num_frames / 4.0)


def window_plan(spec: ModelSpec, options: LabelOptions) -> dict[str, Any]:
    """The :func:`falv.video.plan_windows` arguments for a video, from the model and the options.

    - ``window`` given: windows of that many seconds (``stride``; with ``clips=K``: K of them);
    - else, when the model's clip duration ``W`` is known (``options.clip_seconds`` or the
      config's sampling): windows of ``W`` seconds side by side over the whole video, or with
      ``clips=K`` K windows of ``W`` spread over it; a video no longer than ``W`` is one window;
    - else (a model without recorded sampling, or trained on whole videos): ``clips`` (default
      1) equal parts of the video, as falv planned before sampling was recorded.
    """
    seconds = options.clip_seconds if options.clip_seconds is not None else spec.clip_seconds
    if options.window is not None:
        return {"num_clips": options.clips, "window": options.window, "stride": options.stride}
    if seconds is not None:
        return {"num_clips": options.clips, "window": seconds, "stride": None}
    return {"num_clips": options.clips if options.clips is not None else 1, "window": None, "stride": None}


# -- stages run in workers ------------------------------------------------------------------------


def plan_video(path: str, spec: ModelSpec, options: LabelOptions,
               segment: tuple[float, float] | None = None) -> dict[str, Any]:
    """Probe the file and cut it into windows (seconds + timestamps to decode).

    Windows are planned from what the packets say when the header lies (a duration of 0
    while frames decode, a duration longer than the data, a first frame elsewhere than the
    stated start; :func:`falv.video.metadata.check_timing`), and always have a length: a
    video of one frame or of unknown duration gets one frame's worth. ``segment``
    (``(start, end)`` seconds, e.g. a Kinetics row's ``time_start``/``time_end``) plans the
    windows inside that part of the file only (:func:`segment_span`).
    """
    from falv.video import plan_windows, probe
    from falv.video.metadata import DEFAULT_FRAME_S, check_timing

    header = probe(path)
    info, notes = check_timing(path, header)
    duration = info.duration if math.isfinite(info.duration) and info.duration > 0 else 0.0
    if duration <= 0:
        duration = 1.0 / info.fps if math.isfinite(info.fps) and info.fps > 0 else DEFAULT_FRAME_S
        info = dataclasses.replace(info, duration=duration)
    offset, span = segment_span(path, duration, segment) if segment is not None else (0.0, duration)
    fps = info.fps if math.isfinite(info.fps) else 0.0
    windows = plan_windows(span, fps, spec.num_frames, **window_plan(spec, options))
    if frame_selection(spec, options) == "key-moments":  # candidates; decode_chunk keeps num_frames of them
        from falv.video.keymoments import candidate_timestamps

        planned = [(w.start + offset, w.end + offset,
                    [t + offset for t in candidate_timestamps(w.start, w.end, spec.num_frames, fps or None)])
                   for w in windows]
    else:
        planned = [(w.start + offset, w.end + offset, [t + offset for t in w.timestamps]) for w in windows]
    return {
        "path": path,
        "info": info.to_dict(),
        "windows": planned,
        # the decoder counts time from here when the header's start was wrong
        "origin": info.start_time if info.start_time != header.start_time else None,
        "warnings": notes,
    }


def segment_span(path: str, duration: float, segment: tuple[float, float]) -> tuple[float, float]:
    """``(start, length)`` of ``segment`` clipped to a file of ``duration`` seconds; a segment
    outside the file is a :class:`SegmentOutsideVideoError` (the input's error record)."""
    start, end = max(0.0, float(segment[0])), min(duration, float(segment[1]))
    if not end > start:
        raise SegmentOutsideVideoError(path, f"the segment [{segment[0]:g}, {segment[1]:g}] s lies outside "
                                             f"the video ({duration:g} s)")
    return start, end - start


def decode_chunk(path: str, timestamps: list[list[float]], short_side: int, timeout: float,
                 origin: float | None = None, perturb: Perturbation | None = None,
                 first: int = 0, select: int | None = None) -> dict[str, Any]:
    """Frames of some windows of one video, scaled by the decoder to the model's short side;
    with ``perturb``, perturbed (the windows being ``first``, ``first + 1``, ... of the video);
    with ``select=T``, each window's timestamps are key-moment candidates of which the ``T``
    where the picture changes most are kept (:func:`falv.video.keymoments.key_frames`)."""
    from falv.video import read_clips

    # One decoder thread per worker: the model in the main process needs the cores.
    result = read_clips(path, timestamps, size=short_side, timeout=timeout, threads=1, origin=origin)
    clips = result.clips
    if select is not None:
        from falv.video.keymoments import key_frames

        clips = [clip[key_frames(clip, select)] for clip in clips]
    frames = np.stack(clips)  # (W, T, H, W', 3) uint8
    if perturb is not None:
        frames = perturb.apply(frames, path, first)
    return {
        "frames": frames,
        "damaged": result.damaged,
        "warnings": list(result.warnings),
        "frames_decoded": result.frames_decoded,
    }


def decode_tasks(path: str, plan: dict[str, Any], spec: ModelSpec, options: LabelOptions,
                 origin: float | None = None) -> list[dict[str, Any]]:
    """The decode tasks of a planned video: :func:`chunk_size` windows each, in order;
    ``task["first"]`` is the index of its first window, ``task["args"]`` :func:`decode_chunk`'s."""
    windows = plan["windows"]
    step = chunk_size(spec, options)
    perturb = options.perturb
    select = (spec.num_frames,) if frame_selection(spec, options) == "key-moments" else ()
    if perturb is None:
        return [{"kind": "decode", "path": path, "first": i,
                 "args": (path, [list(ts) for *_, ts in windows[i:i + step]], spec.short_side, options.timeout,
                          origin, *((None, i, *select) if select else ()))}
                for i in range(0, len(windows), step)]
    fps = (plan.get("info") or {}).get("fps")
    return [{"kind": "decode", "path": path, "first": i,
             "args": (path, perturb.retime([ts for *_, ts in windows[i:i + step]], fps), spec.short_side,
                      options.timeout, origin, perturb, i, *select)}
            for i in range(0, len(windows), step)]


def check_frames(frames: Any, windows: int, num_frames: int) -> np.ndarray:
    """The decoded frames of a chunk, checked before they wait for the model:
    (windows, T, H, W, 3) uint8 with the model's frame count, every side >= 1."""
    wanted = (windows, num_frames)
    if (not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 5
            or frames.shape[:2] != wanted or frames.shape[4] != 3 or min(frames.shape[2:4]) < 1):
        shape = getattr(frames, "shape", None)
        raise ValueError(f"the decoder returned frames of shape {shape} and type "
                         f"{getattr(frames, 'dtype', type(frames).__name__)}; expected "
                         f"({wanted[0]}, {wanted[1]}, H, W, 3) uint8")
    return frames


def failure(error: BaseException, path: str, stage: str) -> dict[str, str]:
    """The error of one video: its typed code, or ``internal`` naming the stage and the exception."""
    code, message = error_fields(error, path, stage)
    return {"type": code, "message": message}


#: Fault injection for tests (as Ray's own ``RAY_testing_*`` settings): a decoding process whose
#: file's name is in this comma-separated list kills itself with SIGSEGV before decoding it, as a
#: crashing decoder would. Set where the workers start (a Ray node inherits its environment).
CRASH_ENV = "FALV_TESTING_CRASH_DECODING"


def _crash_if_named(path: str) -> None:
    names = os.environ.get(CRASH_ENV)
    if names and os.path.basename(path) in names.split(","):
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)


#: What each worker task kind is doing, for error messages.
TASK_STAGES = {"plan": "probing and planning", "decode": "decoding"}


def run_task(task: dict[str, Any]) -> Any:
    """Worker entry point (top-level so it pickles): ``task["kind"]`` is ``"plan"``
    (:func:`plan_video` of ``task["args"]``) or ``"decode"`` (:func:`decode_chunk`). Typed
    errors (:class:`falv.video.VideoError`) pass as they are; anything else becomes the
    file's :class:`~falv.errors.InternalError`."""
    from falv.errors import InternalError
    from falv.video.errors import VideoError

    kind, args = task["kind"], task["args"]
    if kind == "decode":
        _crash_if_named(args[0])
    try:
        if kind == "plan":
            return plan_video(*args)
        return decode_chunk(*args)
    except (VideoError, InternalError):
        raise
    except Exception as exc:
        raise InternalError.wrap(exc, args[0], TASK_STAGES.get(kind, kind)) from None
