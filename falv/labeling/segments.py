"""Temporal segments from per-window scores: pure functions over plain data.

A labeling run scores a video in windows ``(start, end, scores)`` (seconds, one
score per class). :func:`windows_to_segments` turns that sequence into labeled
segments the way temporal action detection post-processing usually does:

1. **Smoothing.** Each class's score is replaced by its moving average over
   ``smoothing`` neighbouring windows, centred on the window (``k // 2`` before,
   ``(k - 1) // 2`` after). At the ends of the video the average runs over the
   windows that exist. ``smoothing=1`` leaves the scores as they are.
2. **Assignment.** Single-label: a window takes its top class when that class's
   (smoothed) score is ``>= background_threshold``, otherwise it is background.
   When the model has a learnt background class (``background=`` its label,
   ``falv train --untrimmed``), a window whose top class is that one is
   background too: the background class competes in the argmax but never becomes
   a segment. Multi-label: every class is thresholded on its own, so a window
   can carry several classes or none.
3. **Ownership.** Each window owns the stretch of time from the midpoint between
   the previous window's end and its own start to the midpoint between its own end
   and the next window's start; the first window owns from its start, the last up
   to its end. With ``stride == window`` a window owns exactly itself; with
   overlapping windows (``stride < window``) each overlap is split at its middle
   (a window owns its centre ``+- stride / 2``); with gaps (``stride > window``)
   each gap is split at its middle. Owned stretches tile ``[first start, last
   end]`` without overlap, so a constant label yields one segment over all windows.
   **Edge refinement** (``refine_edges=True``): where the label changes between
   two consecutive windows, the boundary is instead the point between their
   centres where the two labels' scores cross, found by linear interpolation of
   the difference ``score(before) - score(after)`` (positive at the first
   window, usually negative at the second) between the window centres, clamped
   to them. "No label" scores the background class's score when the model has
   one, else ``background_threshold`` (a multi-label class is compared with the
   threshold too). A window's score is taken to describe its centre (what a
   model trained on windows labeled by their majority, as ``falv train
   --untrimmed`` does, learns), so the refined edge lies between the centres of
   the two windows around the change (within one stride of the owned boundary)
   and, for scores that change linearly across the edge, on it.
   The first start and the last end stay as in step 3.
4. **Merging.** Consecutive windows with the same label merge into one segment
   from the first window's owned start to the last window's owned end. Its
   ``score`` is the **mean** (default) or the max (``score_reduce="max"``) of that
   class's smoothed score over the merged windows.
5. **Short segments** (``end - start < min_duration``) are **dropped**, not merged
   into a neighbour: dropping keeps the result monotonic in the threshold (raising
   ``background_threshold`` never adds covered time) and never invents a label
   for time the model did not give it.
6. Segments are clipped to ``[0, duration]`` when ``duration`` is given and sorted
   by ``(start, end, label)``.

Single-label segments never overlap; multi-label segments of one class never
overlap each other but may overlap segments of other classes.

The module also holds the arithmetic the exporters and evaluation share:
:func:`temporal_iou`, :func:`iou_matrix`, :func:`covered_duration` and
:func:`frame_span` (seconds -> 1-based inclusive frame numbers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from falv.errors import ConfigError

__all__ = [
    "Segment",
    "windows_to_segments",
    "smooth_scores",
    "assign_classes",
    "SegmentCloser",
    "owned_bounds",
    "refined_edge",
    "temporal_iou",
    "iou_matrix",
    "covered_duration",
    "frame_span",
    "SCORE_REDUCTIONS",
]

#: How a segment's score is computed from the scores of the windows it merges.
SCORE_REDUCTIONS = ("mean", "max")


@dataclass(frozen=True)
class Segment:
    """A labeled stretch of a video: ``[start, end]`` seconds, ``score`` of ``label``."""

    label: str
    start: float
    end: float
    score: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "start": self.start, "end": self.end, "score": self.score}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segment:
        return cls(
            label=str(data["label"]),
            start=float(data["start"]),
            end=float(data["end"]),
            score=float(data["score"]),
        )


WindowLike = tuple[float, float, Any]  # (start, end, per-class scores)


def _as_arrays(windows: Sequence[WindowLike], num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts (N,), ends (N,) and scores (N, C) of ``windows``, sorted by start then end."""
    n = len(windows)
    starts = np.empty(n, dtype=np.float64)
    ends = np.empty(n, dtype=np.float64)
    scores = np.empty((n, num_classes), dtype=np.float64)
    for i, window in enumerate(windows):
        try:
            start, end, row = window
        except (TypeError, ValueError):
            raise ValueError(f"window {i} is not a (start, end, scores) triple") from None
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        if row.shape[0] != num_classes:
            raise ValueError(f"window {i} has {row.shape[0]} scores but there are {num_classes} labels")
        starts[i], ends[i], scores[i] = float(start), float(end), row
    if not (np.all(np.isfinite(starts)) and np.all(np.isfinite(ends)) and np.all(np.isfinite(scores))):
        raise ValueError("window times and scores must be finite numbers")
    bad = np.nonzero(ends <= starts)[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"window {i} ends ({ends[i]}) at or before it starts ({starts[i]})")
    order = np.lexsort((ends, starts))
    return starts[order], ends[order], scores[order]


def smooth_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average of ``scores`` (N, C) over ``k`` windows along axis 0.

    Window ``i`` averages rows ``i - k // 2 .. i + (k - 1) // 2`` that exist, so the
    ends of the sequence are averaged over fewer windows instead of being padded.
    """
    if k < 1:
        raise ConfigError(f"smoothing must be >= 1 window, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if k == 1 or n == 0:
        return scores.copy()
    csum = np.concatenate([np.zeros((1,) + scores.shape[1:]), np.cumsum(scores, axis=0)])
    idx = np.arange(n)
    lo = np.clip(idx - k // 2, 0, n)
    hi = np.clip(idx + (k - 1) // 2 + 1, 0, n)
    counts = (hi - lo).reshape((n,) + (1,) * (scores.ndim - 1))
    return (csum[hi] - csum[lo]) / counts


def owned_bounds(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Boundaries ``b`` (N + 1,) such that window ``i`` owns ``[b[i], b[i + 1]]``.

    ``b[0]`` is the first start, ``b[N]`` the latest end, and every inner boundary
    is the midpoint between one window's end and the next window's start (the
    middle of an overlap or of a gap). Boundaries are made non-decreasing so that
    nested windows cannot produce negative stretches.
    """
    n = len(starts)
    if n == 0:
        return np.zeros(0)
    bounds = np.empty(n + 1, dtype=np.float64)
    bounds[0] = starts[0]
    bounds[1:n] = (ends[:-1] + starts[1:]) / 2.0
    bounds[n] = ends.max()  # the last window's stretch reaches the latest end
    return np.maximum.accumulate(bounds)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last]`` index pairs of the runs of True in a 1-D boolean array."""
    if mask.size == 0:
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    change = np.diff(padded)
    firsts = np.nonzero(change == 1)[0]
    lasts = np.nonzero(change == -1)[0] - 1
    return list(zip(firsts.tolist(), lasts.tolist()))


def assign_classes(smoothed: np.ndarray, background_threshold: float, *, multilabel: bool,
                   background_index: int | None = None) -> np.ndarray:
    """Step 2: the (N, C) boolean mask of the classes each window is assigned to.

    Single-label: the window's top class when its score is ``>= background_threshold``
    and it is not the background class ``background_index`` (else background: no
    class). Multi-label: every class over the threshold (never the background class).
    """
    smoothed = np.asarray(smoothed, dtype=np.float64)
    if multilabel:
        active = smoothed >= background_threshold
    else:
        top = np.argmax(smoothed, axis=1)
        keep = smoothed[np.arange(len(top)), top] >= background_threshold
        active = np.zeros_like(smoothed, dtype=bool)
        active[np.nonzero(keep)[0], top[keep]] = True
    if background_index is not None:
        active[:, background_index] = False
    return active


def _none_score(smoothed: np.ndarray, background_threshold: float, background_index: int | None) -> np.ndarray:
    """What "no label" scores in each window (N,): the background class's score when the model
    has one, else the threshold."""
    if background_index is not None:
        return smoothed[:, background_index].copy()
    return np.full(smoothed.shape[0], float(background_threshold))


def refined_edge(before: float, after: float, diff_before: float, diff_after: float) -> float:
    """Where ``diff`` crosses zero between two window centres (linear interpolation).

    ``before``/``after`` are the centres (seconds) of two consecutive windows and
    ``diff_*`` the score of the first window's label minus the second's at each
    (``>= 0`` then ``<= 0``). The result lies in ``[before, after]``; when the
    difference does not fall (flat or noisy scores) it is the middle.
    """
    drop = diff_before - diff_after
    if not (drop > 0 and math.isfinite(drop)):
        return (before + after) / 2.0
    fraction = min(max(diff_before / drop, 0.0), 1.0)
    return before + (after - before) * fraction


def _refined_bounds(bounds: np.ndarray, centres: np.ndarray, score_of: Any, states: np.ndarray) -> np.ndarray:
    """``bounds`` with each inner boundary where ``states`` changes moved to the scores' crossing.

    ``score_of(state, i)`` is the (smoothed) score of a window state at window ``i``.
    """
    out = bounds.copy()
    for i in np.nonzero(states[1:] != states[:-1])[0].tolist():  # between windows i and i + 1
        a, b = states[i], states[i + 1]
        out[i + 1] = refined_edge(centres[i], centres[i + 1], score_of(a, i) - score_of(b, i),
                                  score_of(a, i + 1) - score_of(b, i + 1))
    return np.maximum.accumulate(out)


def windows_to_segments(
    windows: Sequence[WindowLike],
    labels: Sequence[str],
    *,
    smoothing: int = 1,
    min_duration: float = 0.0,
    background_threshold: float = 0.5,
    multilabel: bool = False,
    duration: float | None = None,
    score_reduce: str = "mean",
    background: str | None = None,
    refine_edges: bool = False,
) -> list[Segment]:
    """Labeled segments from per-window class scores (see the module docstring).

    ``windows`` is a sequence of ``(start, end, scores)`` with times in seconds and
    ``scores`` a per-class array aligned with ``labels``; windows may be given in
    any order and may overlap. ``background`` names the label of a learnt
    background class (it competes for windows but never becomes a segment);
    ``refine_edges`` moves each edge to where the scores cross (step 3). Returns
    segments sorted by ``(start, end, label)``.
    """
    labels = [str(label) for label in labels]
    if len(set(labels)) != len(labels):
        raise ConfigError("labels must be unique")
    if score_reduce not in SCORE_REDUCTIONS:
        raise ConfigError(f"score_reduce must be one of {', '.join(SCORE_REDUCTIONS)}, got {score_reduce!r}")
    if not (isinstance(smoothing, (int, np.integer)) and smoothing >= 1):
        raise ConfigError(f"smoothing must be a whole number of windows >= 1, got {smoothing!r}")
    if not (min_duration >= 0.0):
        raise ConfigError(f"min_duration must be >= 0 seconds, got {min_duration!r}")
    if not math.isfinite(background_threshold):
        raise ConfigError(f"background_threshold must be a finite number, got {background_threshold!r}")
    if duration is not None and not (duration >= 0.0):
        raise ConfigError(f"duration must be >= 0 seconds, got {duration!r}")
    background_index = _background_index(background, labels)
    if not windows or not labels:
        return []

    starts, ends, scores = _as_arrays(windows, len(labels))
    smoothed = smooth_scores(scores, int(smoothing))  # (N, C)
    bounds = owned_bounds(starts, ends)  # (N + 1,)

    active = assign_classes(smoothed, background_threshold, multilabel=multilabel,
                            background_index=background_index)  # (N, C)
    centres = (starts + ends) / 2.0
    if refine_edges and not multilabel:
        none = _none_score(smoothed, background_threshold, background_index)
        states = np.where(active.any(axis=1), active.argmax(axis=1), -1)
        shared = _refined_bounds(bounds, centres, lambda st, i: none[i] if st < 0 else smoothed[i, st], states)

    reduce = np.mean if score_reduce == "mean" else np.max
    segments: list[Segment] = []
    for c, label in enumerate(labels):
        edges = bounds
        if refine_edges:
            edges = shared if not multilabel else _refined_bounds(
                bounds, centres, lambda st, i, c=c: smoothed[i, c] if st else background_threshold,
                active[:, c])
        for first, last in _runs(active[:, c]):
            start, end = float(edges[first]), float(edges[last + 1])
            if duration is not None:
                start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
            if end <= start or end - start < min_duration:
                continue  # dropped, never merged into a neighbour (see step 5)
            score = float(reduce(smoothed[first : last + 1, c]))
            segments.append(Segment(label=label, start=start, end=end, score=score))
    segments.sort(key=lambda s: (s.start, s.end, s.label))
    return segments


def _background_index(background: str | None, labels: Sequence[str]) -> int | None:
    if background is None:
        return None
    labels = [str(label) for label in labels]
    if str(background) not in labels:
        raise ConfigError(f"background label {background!r} is not one of the labels")
    return labels.index(str(background))


class SegmentCloser:
    """:func:`windows_to_segments` one window at a time, for windows that arrive live.

    ``push(start, end, scores)`` takes the next window (in order of start, as a live
    stream makes them) and returns the segments that this window closes;
    ``flush()`` ends the sequence and returns the segments still open. Together
    they return the segments :func:`windows_to_segments` gives for all the
    windows at once (same smoothing, assignment, ownership, merging, dropping and
    score; ``duration`` is not known live, so nothing is clipped), each as soon as
    it is final: with ``smoothing=k`` a window's label is final once
    ``(k - 1) // 2`` later windows have arrived, and a segment closes when the
    first window without its label is final.

    Memory is bounded whatever the stream's length: the raw scores of the last
    ``k`` windows and, per open segment, its start and running score.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        smoothing: int = 1,
        min_duration: float = 0.0,
        background_threshold: float = 0.5,
        multilabel: bool = False,
        score_reduce: str = "mean",
        background: str | None = None,
        refine_edges: bool = False,
    ) -> None:
        # the batch function's own checks of the options
        windows_to_segments([], labels, smoothing=smoothing, min_duration=min_duration,
                            background_threshold=background_threshold, multilabel=multilabel,
                            score_reduce=score_reduce, background=background)
        self.labels = [str(label) for label in labels]
        self.background_index = _background_index(background, self.labels)
        self.refine_edges = bool(refine_edges)
        # the last decided window: (centre, smoothed scores, active classes), for refined edges
        self._prev: tuple[float, np.ndarray, np.ndarray] | None = None
        self._edge_max = np.full(len(self.labels), -math.inf)  # running max of each class's edges
        self.smoothing = int(smoothing)
        self.min_duration = float(min_duration)
        self.background_threshold = float(background_threshold)
        self.multilabel = multilabel
        self.score_reduce = score_reduce
        self._back, self._ahead = self.smoothing // 2, (self.smoothing - 1) // 2
        # (index, start, end, owned start, raw scores) of the windows still needed for smoothing
        self._buffer: list[tuple[int, float, float, float, np.ndarray]] = []
        self._count = 0  # windows pushed
        self._decided = 0  # windows whose label is final
        self._last_bound = -math.inf
        self._previous: tuple[float, float] | None = None  # (start, end) of the last window pushed
        self._max_end = -math.inf
        self._open: dict[int, list[float]] = {}  # class -> [start, sum, max, count]
        self._flushed = False

    def push(self, start: float, end: float, scores: Any) -> list[Segment]:
        """Add the next window; returns the segments it closes, sorted by ``(start, end, label)``."""
        if self._flushed:
            raise ValueError("the segment closer was flushed; make a new one")
        row = np.asarray(scores, dtype=np.float64).reshape(-1)
        start, end = float(start), float(end)
        if row.shape[0] != len(self.labels):
            raise ValueError(f"window {self._count} has {row.shape[0]} scores but there are "
                             f"{len(self.labels)} labels")
        if not (math.isfinite(start) and math.isfinite(end) and np.all(np.isfinite(row))):
            raise ValueError("window times and scores must be finite numbers")
        if end <= start:
            raise ValueError(f"window {self._count} ends ({end}) at or before it starts ({start})")
        if self._previous is not None and (start, end) < self._previous:
            raise ValueError(f"window {self._count} starts at {start} s, before the previous window: "
                             "windows must arrive in order")
        # owned_bounds: the midpoint between the previous window's end and this start, non-decreasing
        bound = start if self._previous is None else (self._previous[1] + start) / 2.0
        bound = max(bound, self._last_bound)
        self._last_bound = bound
        self._previous = (start, end)
        self._max_end = max(self._max_end, end)
        self._buffer.append((self._count, start, end, bound, row))
        self._count += 1
        closed: list[Segment] = []
        while self._decided + self._ahead < self._count:
            closed.extend(self._decide())
        return sorted(closed, key=lambda s: (s.start, s.end, s.label))

    def flush(self) -> list[Segment]:
        """End of the windows: the segments still open (and the last windows' labels)."""
        if self._flushed:
            return []
        closed: list[Segment] = []
        while self._decided < self._count:
            closed.extend(self._decide())
        final = max(self._last_bound, self._max_end)
        for c in sorted(self._open):
            segment = self._close(c, final)
            if segment is not None:
                closed.append(segment)
        self._open.clear()
        self._buffer.clear()
        self._flushed = True
        return sorted(closed, key=lambda s: (s.start, s.end, s.label))

    def _decide(self) -> list[Segment]:
        """Make the label of the next undecided window final; close the runs it ends."""
        j = self._decided
        first = self._buffer[0][0]
        pos = j - first
        scores = np.stack([w[4] for w in self._buffer])
        smoothed = smooth_scores(scores, self.smoothing)[pos]  # the buffer starts at max(0, j - back)
        bound = self._buffer[pos][3]
        active = assign_classes(smoothed[None, :], self.background_threshold, multilabel=self.multilabel,
                                background_index=self.background_index)[0]
        centre = (self._buffer[pos][1] + self._buffer[pos][2]) / 2.0
        edges = self._edges(bound, centre, smoothed, active)
        self._prev = (centre, smoothed, active)
        closed = []
        for c in [c for c in self._open if not active[c]]:
            segment = self._close(c, float(edges[c]))
            if segment is not None:
                closed.append(segment)
        for c in np.nonzero(active)[0].tolist():
            run = self._open.setdefault(c, [float(edges[c]), 0.0, -math.inf, 0])
            run[1] += float(smoothed[c])
            run[2] = max(run[2], float(smoothed[c]))
            run[3] += 1
        self._decided += 1
        # keep the windows the next decisions smooth over
        while self._buffer and self._buffer[0][0] < self._decided - self._back:
            self._buffer.pop(0)
        return closed

    def _edges(self, bound: float, centre: float, smoothed: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Each class's boundary before the window being decided (as windows_to_segments places it)."""
        edges = np.full(len(self.labels), bound)
        if self.refine_edges and self._prev is not None:
            before, prev_scores, prev_active = self._prev
            if self.multilabel:
                for c in np.nonzero(prev_active != active)[0].tolist():
                    sign = 1.0 if prev_active[c] else -1.0
                    edges[c] = refined_edge(before, centre, sign * (prev_scores[c] - self.background_threshold),
                                            sign * (smoothed[c] - self.background_threshold))
            else:
                a = int(prev_active.argmax()) if prev_active.any() else -1
                b = int(active.argmax()) if active.any() else -1
                if a != b:
                    def score(state: int, row: np.ndarray) -> float:
                        if state >= 0:
                            return float(row[state])
                        return float(_none_score(row[None, :], self.background_threshold, self.background_index)[0])

                    edges[:] = refined_edge(before, centre, score(a, prev_scores) - score(b, prev_scores),
                                            score(a, smoothed) - score(b, smoothed))
        self._edge_max = np.maximum(self._edge_max, edges)
        return self._edge_max.copy()

    def _close(self, c: int, end: float) -> Segment | None:
        start, total, best, count = self._open.pop(c)
        if end <= start or end - start < self.min_duration:
            return None  # dropped, as windows_to_segments does
        score = total / count if self.score_reduce == "mean" else best
        return Segment(label=self.labels[c], start=float(start), end=float(end), score=float(score))


def _interval(item: Any) -> tuple[float, float]:
    if isinstance(item, Segment):
        return item.start, item.end
    if isinstance(item, Mapping):
        return float(item["start"]), float(item["end"])
    start, end = item
    return float(start), float(end)


def temporal_iou(a: Any, b: Any) -> float:
    """Intersection over union of two intervals (``Segment``, ``{"start", "end"}`` or pairs).

    Two empty (zero-length) intervals have IoU 0. Same definition as ActivityNet's
    ``segment_iou`` (Evaluation/utils.py).
    """
    a0, a1 = _interval(a)
    b0, b1 = _interval(b)
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = (a1 - a0) + (b1 - b0) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: Iterable[Any], b: Iterable[Any]) -> np.ndarray:
    """Pairwise temporal IoU, shape ``(len(a), len(b))``."""
    aa = np.array([_interval(x) for x in a], dtype=np.float64).reshape(-1, 2)
    bb = np.array([_interval(x) for x in b], dtype=np.float64).reshape(-1, 2)
    inter = np.clip(
        np.minimum(aa[:, None, 1], bb[None, :, 1]) - np.maximum(aa[:, None, 0], bb[None, :, 0]), 0.0, None
    )
    union = (aa[:, 1] - aa[:, 0])[:, None] + (bb[:, 1] - bb[:, 0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def covered_duration(segments: Iterable[Any], label: str | None = None) -> float:
    """Total time covered by the union of ``segments`` (only ``label``'s when given)."""
    spans = sorted(
        _interval(s)
        for s in segments
        if label is None or (s.label if isinstance(s, Segment) else s["label"]) == label
    )
    total, cur_start, cur_end = 0.0, None, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def frame_span(start: float, end: float, fps: float, num_frames: int | None = None) -> tuple[int, int]:
    """1-based inclusive ``(first, last)`` frame numbers of the frames ``[start, end)`` touches.

    Frame ``n`` (1-based) is shown during ``[(n - 1) / fps, n / fps)``; the span runs
    from the frame containing ``start`` to the last frame that starts before
    ``end``, and is at least one frame long. With ``num_frames`` both ends are
    clipped to ``[1, num_frames]``. This is the numbering of FiftyOne's
    ``TemporalDetection.support`` and of Label Studio's video timeline (both 1-based).
    """
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    eps = 1e-6  # absorb float noise such as 5.0 * 30 = 150.00000000000003
    first = int(math.floor(max(start, 0.0) * fps + eps)) + 1
    last = int(math.ceil(max(end, 0.0) * fps - eps))
    last = max(last, first)
    if num_frames is not None and num_frames > 0:
        first = min(max(first, 1), num_frames)
        last = min(max(last, first), num_frames)
    return first, last
