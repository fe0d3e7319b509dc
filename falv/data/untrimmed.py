"""Training windows from annotated untrimmed videos (``falv train --untrimmed GROUND_TRUTH.json``).

An ActivityNet-style ground-truth file (the one ``falv evaluate --untrimmed``
reads, :func:`falv.evaluation.localization.load_ground_truth`) says where the
actions of each untrimmed video are. :func:`untrimmed_entries` cuts every video
into sliding windows of the length labeling will use and labels each window by
what fills most of it:

- a window mostly inside one action trains that action's class;
- a window mostly in the gaps between actions trains the **background** class
  (single-label models), or no class at all (multi-label models: every class
  under its threshold is how they say "nothing here");
- a window across an edge takes the label that covers the larger part of it, so
  the model's decision flips where the window's centre crosses the edge, which is
  what edge refinement (:func:`falv.labeling.segments.windows_to_segments`) reads.

Windows are :class:`falv.data.sources.VideoEntry` rows with ``start``/``end``, so
the training dataset samples their frames the way it samples a trimmed clip
(TSN segments with jitter) and caches each file's frames once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from falv.data.sources import DatasetError, VideoEntry
from falv.errors import ConfigError

#: The label of the learnt "no action" class when the data has none of its own.
BACKGROUND_LABEL = "background"
#: Training windows' stride as a fraction of their length (2 per window length: more videos,
#: rather than more overlapping windows of the same video, is what teaches backgrounds).
DEFAULT_TRAIN_STRIDE_FRACTION = 0.5


@dataclass(frozen=True)
class UntrimmedWindows:
    """The windows of some untrimmed videos: entries, the classes they use and counts."""

    entries: list[VideoEntry]
    labels: list[str]          # action classes found in the ground truth, in order of appearance
    videos: int                # videos used
    missing: list[str]         # video ids whose file was not found (left out)
    background_windows: int    # windows labeled background (no class for multi-label)


def window_label(start: float, end: float, segments: Sequence[tuple[str, float, float]],
                 *, multilabel: bool = False) -> tuple[str, ...]:
    """The label(s) of the window ``[start, end]`` given an untrimmed video's action segments.

    Single-label: the class covering the largest part of the window, when it covers
    more than the background (the part no action covers) does; ``()`` (background)
    otherwise. Ties go to background, then to the class listed first. Multi-label:
    every class covering at least half of the window.
    """
    length = end - start
    if not length > 0:
        raise ValueError(f"window [{start}, {end}] has no length")
    cover: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for label, seg_start, seg_end in segments:
        lo, hi = max(start, seg_start), min(end, seg_end)
        if hi > lo:
            cover[label] = cover.get(label, 0.0) + (hi - lo)
            spans.append((lo, hi))
    if multilabel:
        return tuple(label for label, c in cover.items() if c >= length / 2 - 1e-9)
    if not cover:
        return ()
    background = length - _union(spans)
    best = max(cover, key=lambda label: cover[label])  # first of the ties
    return (best,) if cover[best] > background + 1e-9 else ()


def _union(spans: list[tuple[float, float]]) -> float:
    total, cur_lo, cur_hi = 0.0, None, None
    for lo, hi in sorted(spans):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    return total + (cur_hi - cur_lo if cur_hi is not None else 0.0)


def window_bounds(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Sliding ``[k stride, k stride + window]`` over ``[0, duration]`` (the last one ends at
    ``duration``), as :func:`falv.video.sampling.plan_windows` plans them for labeling."""
    from falv.video.sampling import plan_windows

    return [(w.start, w.end) for w in plan_windows(duration, None, 1, window=window, stride=stride)]


def untrimmed_entries(
    ground_truth: str,
    *,
    window: float,
    stride: float | None = None,
    subset: str | None = None,
    background: str = BACKGROUND_LABEL,
    multilabel: bool = False,
) -> UntrimmedWindows:
    """Labeled training windows of the videos of an ActivityNet-style ground-truth file.

    ``window`` seconds long, ``stride`` apart (default half the window);
    ``subset`` keeps one subset of the file (default: every annotated video). Each
    window is labeled by :func:`window_label`; background windows carry
    ``(background,)`` for single-label training and ``()`` for multi-label.
    Videos whose file is missing are left out (listed in ``missing``); a file
    without a usable video raises :class:`~falv.data.sources.DatasetError`.
    """
    from falv.evaluation.localization import GroundTruthError, load_ground_truth

    if not (window > 0 and math.isfinite(window)):
        raise ConfigError(f"untrimmed window must be > 0 seconds, got {window!r}")
    stride = window * DEFAULT_TRAIN_STRIDE_FRACTION if stride is None else stride
    if not (0 < stride <= window):
        raise ConfigError(f"untrimmed stride must be in (0, window = {window:g} s], got {stride!r}")
    try:
        videos = load_ground_truth(ground_truth, subset=subset)
    except GroundTruthError as exc:
        raise DatasetError(str(exc), code="bad_format") from None
    entries: list[VideoEntry] = []
    labels: dict[str, None] = {}
    missing: list[str] = []
    used = background_windows = 0
    for video in videos:
        if video.path is None:
            missing.append(video.video_id)
            continue
        duration = video.duration
        if duration is None or not duration > 0:
            from falv.video import probe

            duration = float(probe(video.path).duration)
        if not (duration > 0 and math.isfinite(duration)):
            missing.append(video.video_id)
            continue
        for label, _, _ in video.segments:
            labels.setdefault(label, None)
        used += 1
        for start, end in window_bounds(duration, window, stride):
            found = window_label(start, end, video.segments, multilabel=multilabel)
            if not found:
                background_windows += 1
                found = () if multilabel else (background,)
            entries.append(VideoEntry(path=video.path, labels=found, start=start, end=end))
    if not entries:
        raise DatasetError(f"{ground_truth}: none of its videos was found; no untrimmed training windows",
                           code="empty")
    return UntrimmedWindows(entries=entries, labels=list(labels), videos=used, missing=missing,
                            background_windows=background_windows)


def with_untrimmed(source, windows: UntrimmedWindows, *, background: str = BACKGROUND_LABEL):
    """``source`` (a :class:`~falv.data.sources.DatasetSource`) plus the untrimmed windows.

    Classes: the source's, then the ground truth's classes it lacks, then (single-label)
    the background class, unless the data already has a class of that name, which is
    then the one the gaps train. Returns ``(source, background label or None)``.
    """
    from dataclasses import replace

    classes = list(source.classes)
    classes += [label for label in windows.labels if label not in classes]
    label = None
    if not source.multilabel:
        label = background
        if label not in classes:
            classes.append(label)
    return replace(source, entries=list(source.entries) + list(windows.entries), classes=classes,
                   problems=list(source.problems)), label
