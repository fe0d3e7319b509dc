"""Sampling and window planning: tables for the exact values, hypothesis for the invariants."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.errors import ConfigError
from falv.video.sampling import (
    Window,
    dense_clip_timestamps,
    feature_index_to_seconds,
    plan_windows,
    random_clip_start,
    seconds_to_feature_index,
    seconds_to_feature_position,
    uniform_timestamps,
)

durations = st.floats(min_value=0.0, max_value=7200.0, allow_nan=False, allow_infinity=False)
positive_durations = st.floats(min_value=1e-3, max_value=7200.0, allow_nan=False, allow_infinity=False)
frame_counts = st.integers(min_value=1, max_value=64)
fps_values = st.one_of(st.none(), st.just(0.0), st.sampled_from([1.0, 12.0, 24.0, 25.0, 30000 / 1001, 30.0, 60.0]))


# ---- tables ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("duration", "frames", "expected"),
    [
        (8.0, 4, [1.0, 3.0, 5.0, 7.0]),
        (1.0, 1, [0.5]),
        (0.0, 3, [0.0, 0.0, 0.0]),
        (10.0, 5, [1.0, 3.0, 5.0, 7.0, 9.0]),
    ],
)
def test_uniform_centres(duration, frames, expected):
    assert uniform_timestamps(duration, frames) == expected


def test_uniform_random_is_one_point_per_segment_and_seeded():
    a = uniform_timestamps(8.0, 4, mode="random", seed=3)
    assert a == uniform_timestamps(8.0, 4, mode="random", seed=3)
    assert a != uniform_timestamps(8.0, 4, mode="random", seed=4)
    for i, t in enumerate(a):
        assert 2 * i <= t < 2 * (i + 1)
    assert uniform_timestamps(8.0, 4, mode="random", seed=random.Random(3)) == a


@pytest.mark.parametrize(
    ("start", "frames", "stride", "fps", "expected"),
    [
        (0.0, 4, 2, 10, [0.0, 0.2, 0.4, 0.6]),
        (1.0, 3, 1, 4, [1.0, 1.25, 1.5]),
        (0.5, 2, 8, 16, [0.5, 1.0]),
    ],
)
def test_dense_clip(start, frames, stride, fps, expected):
    assert dense_clip_timestamps(start, frames, stride, fps) == expected


def test_dense_clip_clamps_to_duration():
    assert dense_clip_timestamps(0.8, 4, 2, 10, duration=1.0) == [0.8, 1.0, 1.0, 1.0]


def test_random_clip_start():
    starts = {random_clip_start(10.0, 2.0, seed=s) for s in range(50)}
    assert all(0.0 <= s <= 8.0 for s in starts) and len(starts) == 50
    assert random_clip_start(10.0, 2.0, seed=7) == random_clip_start(10.0, 2.0, seed=7)
    assert random_clip_start(1.0, 2.0, seed=7) == 0.0


@pytest.mark.parametrize(
    ("duration", "window", "stride", "bounds"),
    [
        (12.0, 4.0, None, [(0, 4), (4, 8), (8, 12)]),
        (10.5, 4.0, None, [(0, 4), (4, 8), (6.5, 10.5)]),  # last window filled from the last frames
        (11.0, 4.0, 2.0, [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]),
        (10.0, 4.0, 2.0, [(0, 4), (2, 6), (4, 8), (6, 10)]),
        (3.0, 4.0, None, [(0, 3)]),  # shorter than one window
        (4.0, 4.0, None, [(0, 4)]),
        (0.30000000000000004, 0.1, None, [(0, 0.1), (0.1, 0.2), (0.2, 0.30000000000000004)]),
    ],
)
def test_sliding_windows(duration, window, stride, bounds):
    windows = plan_windows(duration, 30.0, 4, window=window, stride=stride)
    flat = [x for w in windows for x in (w.start, w.end)]
    assert flat == pytest.approx([x for b in bounds for x in b])
    assert [w.index for w in windows] == list(range(len(bounds)))
    assert windows[-1].end == duration


def test_clip_windows_partition_the_video():
    windows = plan_windows(10.0, None, 2, num_clips=4)
    assert [(w.start, w.end) for w in windows] == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    assert windows[0].timestamps == (0.625, 1.875)
    for k, w in enumerate(windows):
        assert (w.start, w.end) == feature_index_to_seconds(k, 4, 10.0)


def test_clip_windows_of_fixed_length():
    windows = plan_windows(10.0, None, 1, num_clips=3, window=2.0)
    assert [(w.start, w.end) for w in windows] == [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]
    (single,) = plan_windows(10.0, None, 1, num_clips=1, window=2.0)
    assert (single.start, single.end) == (4.0, 6.0)


def test_timestamps_snap_to_frame_middles_and_repeat_for_short_videos():
    # 3 frames at 30 fps, 8 wanted: every frame's middle, repeated
    (w,) = plan_windows(0.1, 30, 8, window=2.0)
    assert (w.start, w.end) == (0.0, 0.1)
    assert sorted(set(w.timestamps)) == pytest.approx([1 / 60, 3 / 60, 5 / 60])
    assert len(w.timestamps) == 8 and list(w.timestamps) == sorted(w.timestamps)


def test_one_frame_video_and_unknown_fps():
    (w,) = plan_windows(1 / 30, 30, 4, window=1.0)
    assert w.timestamps == pytest.approx((1 / 60,) * 4)
    (w,) = plan_windows(0.0, 0, 4, window=1.0)
    assert (w.start, w.end, w.timestamps) == (0.0, 0.0, (0.0,) * 4)
    (w,) = plan_windows(0.0, None, 2, num_clips=1)
    assert w.timestamps == (0.0, 0.0)
    assert plan_windows(2.0, float("nan"), 2, window=1.0)[0].timestamps == (0.25, 0.75)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"window": 1.0, "stride": 2.0},
        {"stride": 1.0},
        {"window": 0.0},
        {"window": -1.0},
        {"num_clips": 0},
        {"num_clips": 2.5},
    ],
)
def test_plan_windows_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        plan_windows(10.0, 30.0, 8, **kwargs)


def test_bad_inputs():
    with pytest.raises(ConfigError):
        uniform_timestamps(-1.0, 4)
    with pytest.raises(ConfigError):
        uniform_timestamps(1.0, 0)
    with pytest.raises(ConfigError):
        uniform_timestamps(1.0, 2, mode="random")  # no seed
    with pytest.raises(ConfigError):
        dense_clip_timestamps(0.0, 4, 2, 0)
    with pytest.raises(ConfigError):
        feature_index_to_seconds(4, 4, 10.0)


@pytest.mark.parametrize(
    ("t", "n", "duration", "index", "position"),
    [
        (0.0, 10, 20.0, 0, 0.0),
        (1.999, 10, 20.0, 0, 0.9995),
        (2.0, 10, 20.0, 1, 1.0),
        (19.99, 10, 20.0, 9, 9.995),
        (20.0, 10, 20.0, 9, 10.0),  # the end belongs to the last feature
        (25.0, 10, 20.0, 9, 10.0),  # clamped
        (-1.0, 10, 20.0, 0, 0.0),
        (5.0, 3, 0.0, 0, 0.0),
    ],
)
def test_feature_mapping_table(t, n, duration, index, position):
    assert seconds_to_feature_index(t, n, duration) == index
    assert seconds_to_feature_position(t, n, duration) == pytest.approx(position)


def test_seed_formula():
    # tau = t * n * fps / l with l frames at fps: a 300-frame 30 fps video with 16 features
    t, n, fps, frames = 4.2, 16, 30.0, 300
    tau = t * n * fps / frames
    assert seconds_to_feature_position(t, n, frames / fps) == pytest.approx(tau)
    assert seconds_to_feature_index(t, n, frames / fps) == int(tau)


def test_window_to_dict():
    w = Window(0, 0.0, 1.0, (0.5,))
    assert w.to_dict() == {"index": 0, "start": 0.0, "end": 1.0, "timestamps": [0.5]}
    assert w.duration == 1.0


# ---- properties ----------------------------------------------------------------------------------
@given(durations, frame_counts, st.sampled_from(["center", "random"]), st.integers(0, 2**32))
def test_uniform_properties(duration, frames, mode, seed):
    ts = uniform_timestamps(duration, frames, mode=mode, seed=seed)
    assert len(ts) == frames
    assert ts == sorted(ts)
    assert all(0.0 <= t <= duration for t in ts)
    assert ts == uniform_timestamps(duration, frames, mode=mode, seed=seed)


def _check_plan(windows, duration, frames):
    assert windows, "at least one window"
    assert windows[0].start == 0.0
    assert windows[-1].end == duration
    for a, b in zip(windows, windows[1:]):
        assert b.start <= a.end + 1e-9, "no gap between windows"
        assert b.start >= a.start
    for w in windows:
        assert len(w.timestamps) == frames
        assert list(w.timestamps) == sorted(w.timestamps)
        assert all(w.start - 1e-9 <= t <= w.end + 1e-9 for t in w.timestamps)
        assert all(0.0 <= t <= duration for t in w.timestamps)


@settings(max_examples=150, deadline=None)
@given(
    durations,
    fps_values,
    frame_counts,
    st.floats(min_value=0.05, max_value=1.0),
    st.floats(min_value=0.1, max_value=1.0),
)
def test_sliding_window_properties(duration, fps, frames, window_ratio, stride_ratio):
    # windows relative to the duration keep the plan under ~200 windows
    window = max(duration * window_ratio, 0.05)
    stride = window * stride_ratio
    windows = plan_windows(duration, fps, frames, window=window, stride=stride)
    _check_plan(windows, duration, frames)
    if duration > window:
        assert all(w.end - w.start == pytest.approx(window) for w in windows)
    assert len(windows) <= max(1, int((duration - window) / stride) + 2) if duration > window else len(windows) == 1
    assert windows == plan_windows(duration, fps, frames, window=window, stride=stride)


@given(durations, fps_values, frame_counts, st.integers(1, 64))
def test_clip_plan_properties(duration, fps, frames, clips):
    windows = plan_windows(duration, fps, frames, num_clips=clips)
    assert len(windows) == clips
    _check_plan(windows, duration, frames)


@given(positive_durations, st.integers(1, 2000), st.data())
def test_feature_index_round_trip(duration, n, data):
    i = data.draw(st.integers(0, n - 1))
    start, end = feature_index_to_seconds(i, n, duration)
    assert start <= end
    assert seconds_to_feature_index(start, n, duration) == i
    mid = (start + end) / 2
    if start < mid < end:
        assert seconds_to_feature_index(mid, n, duration) == i
    if i == n - 1:
        assert end == duration
        assert seconds_to_feature_index(end, n, duration) == i
    else:
        assert seconds_to_feature_index(end, n, duration) == i + 1


@given(positive_durations, st.integers(1, 2000), st.floats(0.0, 1.0))
def test_seconds_to_index_is_consistent_with_position(duration, n, fraction):
    t = duration * fraction
    index = seconds_to_feature_index(t, n, duration)
    position = seconds_to_feature_position(t, n, duration)
    assert 0 <= index < n
    assert index <= position + 1e-6
    assert position <= index + 1 + 1e-6


def test_fraction_inputs_are_exact():
    windows = plan_windows(Fraction(10, 3), Fraction(30000, 1001), 2, window=Fraction(1, 3))
    assert windows[-1].end == float(Fraction(10, 3))
    assert len(windows) == 10


@pytest.mark.parametrize("duration, clips", [(1.5, 1), (1.5, 4), (2.0, 8), (0.0, 3)])
def test_a_video_no_longer_than_the_window_is_one_window(duration, clips):
    (only,) = plan_windows(duration, 30.0, 8, num_clips=clips, window=2.0)
    assert (only.start, only.end) == (0.0, duration)


def test_clips_of_the_model_duration_are_spread_over_the_video():
    windows = plan_windows(10.0, 30.0, 8, num_clips=4, window=4.0)
    assert [(w.start, w.end) for w in windows] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert all(w.duration == 4.0 for w in windows)
