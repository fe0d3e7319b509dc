"""Tests of falv.labeling.segments: tables for the arithmetic, properties for the merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falv.errors import ConfigError, FalvError
from falv.labeling.segments import (
    Segment,
    covered_duration,
    frame_span,
    iou_matrix,
    owned_bounds,
    refined_edge,
    smooth_scores,
    temporal_iou,
    windows_to_segments,
)

LABELS = ["A", "B", "C"]


def onehot(i: int, hi: float = 0.9, lo: float = 0.05, n: int = 3) -> np.ndarray:
    row = np.full(n, lo)
    row[i] = hi
    return row


def sliding(duration: float, window: float, stride: float, score_at) -> list:
    """Windows ``[t, t + window]`` every ``stride`` seconds, scored at their centre."""
    out, t = [], 0.0
    while t + window <= duration + 1e-9:
        out.append((t, t + window, score_at(t + window / 2)))
        t += stride
    return out


# --------------------------------------------------------------------------- the untrimmed example


def truth_scores(t: float) -> np.ndarray:
    """Action A during 5-12 s, B during 20-26 s, background elsewhere."""
    if 5 <= t < 12:
        return np.array([0.9, 0.05, 0.05])
    if 20 <= t < 26:
        return np.array([0.05, 0.85, 0.1])
    return np.array([0.2, 0.15, 0.1])


@pytest.mark.parametrize(
    ("window", "stride", "smoothing"),
    [
        (1.0, 1.0, 1),  # the brief's example: 1 s windows over 30 s
        (1.0, 1.0, 3),  # smoothing must not move boundaries by more than a window
        (2.0, 0.5, 1),  # overlapping windows
        (2.0, 0.5, 3),
        (1.0, 1.5, 1),  # gaps between windows
    ],
)
def test_untrimmed_example_recovers_both_actions(window, stride, smoothing):
    windows = sliding(30.0, window, stride, truth_scores)
    segs = windows_to_segments(windows, LABELS, smoothing=smoothing, background_threshold=0.5, duration=30.0)
    assert [s.label for s in segs] == ["A", "B"]
    tol = max(window, stride)  # "within one window of the truth"
    (a, b) = segs
    assert abs(a.start - 5) <= tol and abs(a.end - 12) <= tol
    assert abs(b.start - 20) <= tol and abs(b.end - 26) <= tol
    assert temporal_iou(a, (5, 12)) > 0.7 and temporal_iou(b, (20, 26)) > 0.6
    assert a.score == pytest.approx(0.9, abs=0.2) and b.score == pytest.approx(0.85, abs=0.2)


def test_untrimmed_example_exact_with_aligned_windows():
    windows = [(t, t + 1.0, truth_scores(t + 0.5)) for t in range(30)]
    segs = windows_to_segments(windows, LABELS)
    assert segs == [Segment("A", 5.0, 12.0, pytest.approx(0.9)), Segment("B", 20.0, 26.0, pytest.approx(0.85))]


def test_noisy_untrimmed_example_with_smoothing_and_min_duration():
    rng = np.random.default_rng(0)
    windows = [(t, t + 1.0, truth_scores(t + 0.5) + rng.normal(0, 0.15, 3)) for t in range(30)]
    windows[15] = (15, 16, np.array([0.1, 0.1, 0.95]))  # a one-window blip of C
    segs = windows_to_segments(windows, LABELS, smoothing=3, min_duration=2.0, background_threshold=0.5)
    assert [s.label for s in segs] == ["A", "B"]
    assert abs(segs[0].start - 5) <= 1 and abs(segs[0].end - 12) <= 1
    assert abs(segs[1].start - 20) <= 1 and abs(segs[1].end - 26) <= 1


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, [0, 3, 6, 9]),
        (2, [0, 1.5, 4.5, 7.5]),  # window i averages i-1 .. i
        (3, [1.5, 3, 6, 7.5]),  # truncated at the ends, not padded
        (5, [3, 4.5, 4.5, 6]),
    ],
)
def test_smooth_scores(k, expected):
    scores = np.array([[0.0], [3.0], [6.0], [9.0]])
    np.testing.assert_allclose(smooth_scores(scores, k)[:, 0], expected)


def test_smooth_scores_rejects_k_zero():
    with pytest.raises(ConfigError):
        smooth_scores(np.zeros((3, 2)), 0)


@pytest.mark.parametrize(
    ("starts", "ends", "bounds"),
    [
        ([0, 1, 2], [1, 2, 3], [0, 1, 2, 3]),  # stride == window: each window owns itself
        ([0, 1, 2], [2, 3, 4], [0, 1.5, 2.5, 4]),  # overlaps split at their middle
        ([0, 2, 4], [1, 3, 5], [0, 1.5, 3.5, 5]),  # gaps split at their middle
        ([0, 1], [3, 2], [0, 2, 3]),  # nested window: still non-decreasing
        ([5], [7], [5, 7]),
    ],
)
def test_owned_bounds(starts, ends, bounds):
    np.testing.assert_allclose(owned_bounds(np.array(starts, float), np.array(ends, float)), bounds)


def test_background_threshold_and_score_reduce():
    windows = [(0, 1, [0.9, 0.1]), (1, 2, [0.6, 0.1]), (2, 3, [0.4, 0.1]), (3, 4, [0.7, 0.2])]
    mean = windows_to_segments(windows, ["A", "B"], background_threshold=0.5)
    assert mean == [Segment("A", 0, 2, pytest.approx(0.75)), Segment("A", 3, 4, pytest.approx(0.7))]
    high = windows_to_segments(windows, ["A", "B"], background_threshold=0.8, score_reduce="max")
    assert high == [Segment("A", 0, 1, pytest.approx(0.9))]
    everything = windows_to_segments(windows, ["A", "B"], background_threshold=0.0)
    assert everything == [Segment("A", 0, 4, pytest.approx(0.65))]


def test_short_segments_are_dropped_not_merged():
    windows = [(0, 1, onehot(0)), (1, 2, onehot(0)), (2, 3, onehot(1)), (3, 4, onehot(0)), (4, 5, onehot(0))]
    segs = windows_to_segments(windows, LABELS, min_duration=1.5)
    assert [(s.label, s.start, s.end) for s in segs] == [("A", 0, 2), ("A", 3, 5)]


def test_multilabel_gives_overlapping_segments_per_class():
    windows = [
        (0, 1, [0.9, 0.1, 0.0]),
        (1, 2, [0.8, 0.7, 0.0]),
        (2, 3, [0.2, 0.9, 0.0]),
        (3, 4, [0.6, 0.6, 0.0]),
    ]
    single = windows_to_segments(windows, LABELS, background_threshold=0.5)
    assert [(s.label, s.start, s.end) for s in single] == [("A", 0, 2), ("B", 2, 3), ("A", 3, 4)]
    multi = windows_to_segments(windows, LABELS, background_threshold=0.5, multilabel=True)
    assert [(s.label, s.start, s.end) for s in multi] == [("A", 0, 2), ("B", 1, 4), ("A", 3, 4)]


def test_windows_in_any_order_and_clipped_to_duration():
    windows = [(8, 10, onehot(1)), (0, 2, onehot(0)), (4, 6, onehot(0)), (2, 4, onehot(0)), (6, 8, onehot(1))]
    segs = windows_to_segments(windows, LABELS, duration=9.0)
    assert [(s.label, s.start, s.end) for s in segs] == [("A", 0, 6), ("B", 6, 9)]


def test_empty_inputs():
    assert windows_to_segments([], LABELS) == []
    assert windows_to_segments([(0, 1, [])], []) == []


@pytest.mark.parametrize(
    ("windows", "kwargs"),
    [
        ([(0, 1, [0.5, 0.5])], {}),  # wrong number of scores
        ([(1, 1, [0.5, 0.5, 0.5])], {}),  # zero-length window
        ([(0, 1, [math.nan, 0.5, 0.5])], {}),
        ([(0, 1)], {}),
        ([(0, 1, onehot(0))], {"smoothing": 0}),
        ([(0, 1, onehot(0))], {"min_duration": -1}),
        ([(0, 1, onehot(0))], {"score_reduce": "median"}),
        ([(0, 1, onehot(0))], {"background_threshold": math.inf}),
    ],
)
def test_bad_arguments_raise(windows, kwargs):
    with pytest.raises(ValueError):
        windows_to_segments(windows, LABELS, **kwargs)


def test_bad_option_is_a_falv_error():
    with pytest.raises(FalvError, match="smoothing"):
        windows_to_segments([(0, 1, onehot(0))], LABELS, smoothing=0)


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 10), (0, 10), 1.0),
        ((0, 10), (5, 15), 5 / 15),
        ((0, 10), (10, 20), 0.0),
        ((0, 10), (2, 4), 0.2),
        ((3, 3), (3, 3), 0.0),
        (Segment("A", 0, 4, 1.0), {"start": 2, "end": 6}, 2 / 6),
    ],
)
def test_temporal_iou(a, b, iou):
    assert temporal_iou(a, b) == pytest.approx(iou)
    assert temporal_iou(b, a) == pytest.approx(iou)


def test_iou_matrix_matches_pairwise():
    a = [(0, 10), (5, 15), (3, 3)]
    b = [(0, 5), (8, 20)]
    m = iou_matrix(a, b)
    assert m.shape == (3, 2)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert m[i, j] == pytest.approx(temporal_iou(x, y))


def test_covered_duration():
    segs = [Segment("A", 0, 5, 1), Segment("A", 3, 8, 1), Segment("B", 10, 12, 1), Segment("A", 20, 21, 1)]
    assert covered_duration(segs) == pytest.approx(8 + 2 + 1)
    assert covered_duration(segs, "A") == pytest.approx(9)
    assert covered_duration([]) == 0


@pytest.mark.parametrize(
    ("start", "end", "fps", "num_frames", "span"),
    [
        (0.0, 1.0, 30, None, (1, 30)),
        (5.0, 12.0, 30, 900, (151, 360)),
        (0.0, 0.01, 25, None, (1, 1)),  # at least one frame
        (29.99, 31.0, 30, 900, (900, 900)),  # clipped to the last frame
        (1 / 3, 2 / 3, 3, None, (2, 2)),  # float noise does not add a frame
        (10.0, 10.0, 24, 100, (100, 100)),
    ],
)
def test_frame_span(start, end, fps, num_frames, span):
    assert frame_span(start, end, fps, num_frames) == span


def test_frame_span_needs_fps():
    with pytest.raises(ValueError):
        frame_span(0, 1, 0)


# --------------------------------------------------------------------------- properties

GRID = 0.25


@st.composite
def problems(draw):
    """Sliding windows on a 0.25 s grid (overlapping, abutting or with gaps) with scores."""
    n = draw(st.integers(1, 20))
    c = draw(st.integers(1, 4))
    window = draw(st.integers(1, 12)) * GRID
    stride = draw(st.integers(1, 12)) * GRID
    offset = draw(st.integers(0, 4)) * GRID
    cells = draw(st.lists(st.integers(0, 100), min_size=n * c, max_size=n * c))
    scores = np.array(cells, dtype=float).reshape(n, c) / 100
    windows = [(offset + i * stride, offset + i * stride + window, scores[i]) for i in range(n)]
    labels = [f"c{j}" for j in range(c)]
    last_end = windows[-1][1]
    duration = draw(st.sampled_from([None, last_end, last_end + 1.0, max(GRID, last_end - window / 2)]))
    options = dict(
        smoothing=draw(st.integers(1, 5)),
        min_duration=draw(st.integers(0, 8)) * GRID,
        background_threshold=draw(st.integers(0, 100)) / 100,
        multilabel=draw(st.booleans()),
        duration=duration,
        score_reduce=draw(st.sampled_from(["mean", "max"])),
        background=draw(st.sampled_from([None, labels[-1]])) if c > 1 else None,
        refine_edges=draw(st.booleans()),
    )
    return windows, labels, options


def check_invariants(segs, labels, options, windows):
    duration = options["duration"]
    lo = 0.0
    hi = duration if duration is not None else max(w[1] for w in windows)
    assert segs == sorted(segs, key=lambda s: (s.start, s.end, s.label))
    for s in segs:
        assert s.label in labels and s.label != options.get("background")
        assert lo <= s.start < s.end <= hi + 1e-9
        assert s.end - s.start >= options["min_duration"] - 1e-9
        assert 0.0 <= s.score <= 1.0 + 1e-9
    groups = [segs] if not options["multilabel"] else [[s for s in segs if s.label == lab] for lab in labels]
    for group in groups:  # single-label: nothing overlaps; multi-label: nothing of one class
        for x, y in zip(group, group[1:]):
            assert x.end <= y.start + 1e-9


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_segment_invariants(problem):
    windows, labels, options = problem
    segs = windows_to_segments(windows, labels, **options)
    check_invariants(segs, labels, options, windows)


@settings(max_examples=200, deadline=None)
@given(problems(), st.integers(0, 100), st.integers(0, 100))
def test_raising_the_threshold_never_adds_covered_time(problem, t1, t2):
    windows, labels, options = problem
    options = {**options, "refine_edges": False}  # refined edges follow the scores, not the threshold alone
    low, high = sorted((t1 / 100, t2 / 100))
    loose = windows_to_segments(windows, labels, **{**options, "background_threshold": low})
    strict = windows_to_segments(windows, labels, **{**options, "background_threshold": high})
    for label in labels:
        assert covered_duration(strict, label) <= covered_duration(loose, label) + 1e-9
    for s in strict:  # and every strict segment lies inside a loose one of the same label
        assert any(o.label == s.label and o.start <= s.start + 1e-9 and s.end <= o.end + 1e-9 for o in loose)


@settings(max_examples=150, deadline=None)
@given(problems(), st.integers(0, 3))
def test_constant_label_gives_one_segment_over_all_windows(problem, cls):
    windows, labels, options = problem
    cls = cls % len(labels)
    const = [(a, b, onehot(cls, hi=0.9, lo=0.1 / len(labels), n=len(labels))) for a, b, _ in windows]
    opts = {**options, "background_threshold": 0.5, "min_duration": 0.0, "duration": None, "background": None}
    segs = windows_to_segments(const, labels, **opts)
    first, last = min(w[0] for w in windows), max(w[1] for w in windows)
    assert segs == [Segment(labels[cls], first, last, pytest.approx(0.9))]


# --------------------------------------------------------------------------- background class, refined edges

BG_LABELS = ["A", "B", "background"]


def test_a_learnt_background_class_is_never_a_segment_and_splits_runs():
    rows = [[0.8, 0.1, 0.1], [0.7, 0.1, 0.2], [0.2, 0.1, 0.7], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]
    windows = [(i, i + 1.0, row) for i, row in enumerate(rows)]
    segs = windows_to_segments(windows, BG_LABELS, background="background")
    assert [(s.label, s.start, s.end) for s in segs] == [("A", 0, 2), ("A", 4, 5), ("B", 5, 6)]
    # without the flag the background class is a label like any other
    plain = windows_to_segments(windows, BG_LABELS)
    assert ("background", 2, 4) in [(s.label, s.start, s.end) for s in plain]
    # a background score under the threshold still wins its window: the gap is not given to A
    low = [(0, 1, [0.45, 0.1, 0.45]), (1, 2, [0.3, 0.3, 0.4])]
    assert windows_to_segments(low, BG_LABELS, background="background", background_threshold=0.0) == [
        Segment("A", 0, 1, pytest.approx(0.45))]
    with pytest.raises(ConfigError, match="background label"):
        windows_to_segments(windows, BG_LABELS, background="nothing")


@pytest.mark.parametrize("before, after, d0, d1, edge", [
    (1.0, 1.5, 0.4, -0.4, 1.25),    # symmetric: the middle
    (1.0, 1.5, 0.6, -0.2, 1.375),   # three quarters of the way
    (1.0, 1.5, 0.0, -0.5, 1.0),     # the first window is already on the edge
    (1.0, 1.5, 0.5, 0.0, 1.5),      # the second one is
    (1.0, 1.5, 0.0, 0.0, 1.25),     # flat: the middle
    (1.0, 1.5, -0.1, 0.2, 1.25),    # not falling (noise): the middle
])
def test_refined_edge_table(before, after, d0, d1, edge):
    assert refined_edge(before, after, d0, d1) == pytest.approx(edge)


def ramp_windows(edge: float, window: float, stride: float, duration: float, rising: bool, noise=None):
    """Windows whose action score is the share of the window after (rising) or before ``edge``:
    what a model trained on windows labeled by their majority approximates."""
    out = []
    for i, (a, b, _) in enumerate(sliding(duration, window, stride, lambda t: None)):
        share = min(max((b - edge) / window, 0.0), 1.0)
        action = share if rising else 1.0 - share
        if noise is not None:
            action = min(max(action + noise[i % len(noise)], 0.0), 1.0)
        out.append((a, b, [action, 0.0, 1.0 - action]))
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 40), st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from([1, 2, 4, 8]), st.booleans(),
       st.lists(st.floats(-0.05, 0.05), min_size=1, max_size=7))
def test_refined_edges_land_within_one_stride_of_the_truth(edge_at, window, per_window, rising, noise):
    """An edge between windows: refined, it lands within one stride of the truth (exactly on it for
    scores that change linearly across it); unrefined, within half a window plus a stride."""
    stride = window / per_window
    edge = edge_at * 0.25 + window  # at least one window from either end of a 20 s video
    duration = 20.0 + 2 * window
    for noisy in (None, noise):
        windows = ramp_windows(edge, window, stride, duration, rising, noisy)
        segs = windows_to_segments(windows, BG_LABELS, background="background", refine_edges=True)
        assert len(segs) == 1 and segs[0].label == "A"
        found = segs[0].start if rising else segs[0].end
        assert abs(found - edge) <= stride + 1e-9
        if noisy is None and per_window >= 2:  # both windows around the edge see part of it
            assert found == pytest.approx(edge)
        plain = windows_to_segments(windows, BG_LABELS, background="background")
        assert abs((plain[0].start if rising else plain[0].end) - edge) <= stride / 2 + stride + 1e-9


def test_refined_edges_between_two_classes_do_not_overlap():
    # A fades into B between 4 and 6 s; windows every 0.5 s
    windows = [(t, t + 1.0, [max(0.0, min(1.0, (5.5 - t) / 2)), max(0.0, min(1.0, (t - 3.5) / 2)), 0.0])
               for t in np.arange(0, 9.01, 0.5)]
    segs = windows_to_segments(windows, BG_LABELS, background="background", refine_edges=True)
    assert [s.label for s in segs] == ["A", "B"]
    assert segs[0].end == segs[1].start == pytest.approx(5.0)
