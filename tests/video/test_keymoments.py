"""Key-moment frame selection (falv.video.keymoments): properties of the selection and the change measure."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.video.keymoments import (
    DEFAULT_CANDIDATES_PER_FRAME,
    candidate_timestamps,
    change_energy,
    key_frames,
    select_key_frames,
    thumbnails,
)

energies = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(energy=energies, num_frames=st.integers(1, 16), share=st.floats(0, 0.95))
def test_frames_are_in_order_distinct_and_bounded_in_spacing(energy, num_frames, share):
    picks = select_key_frames(energy, num_frames, share)
    m = len(energy)
    assert len(picks) == num_frames and all(0 <= p < m for p in picks)
    if m <= num_frames:  # every candidate, the last one repeated
        assert picks == list(range(m)) + [m - 1] * (num_frames - m)
        return
    assert all(a < b for a, b in zip(picks, picks[1:]))
    # every candidate keeps (1 - share) / m of the density: consecutive frames are at most
    # 1 / (T (1 - share)) of it, i.e. m / (T (1 - share)) candidates, apart (plus rounding)
    limit = math.ceil(m / (num_frames * (1 - share))) + 1
    assert all(b - a <= limit for a, b in zip(picks, picks[1:]))
    assert picks[0] <= limit and m - 1 - picks[-1] <= limit


@pytest.mark.parametrize("num_frames", [1, 4, 8, 16])
@pytest.mark.parametrize("energy", ["zeros", "constant"])
def test_without_change_the_choice_is_uniform_sampling(num_frames, energy):
    m = DEFAULT_CANDIDATES_PER_FRAME * num_frames
    picks = select_key_frames(np.zeros(m) if energy == "zeros" else np.full(m, 3.0), num_frames)
    times = candidate_timestamps(0.0, 2.0, num_frames, fps=None)
    segment = 2.0 / num_frames
    assert [times[p] for p in picks] == pytest.approx([(k + 0.5) * segment for k in range(num_frames)])


def test_frames_gather_where_the_picture_changes_and_thin_out_where_it_stays():
    pictures = np.zeros((40, 8, 8))
    pictures[20:] = 100.0  # a cut between candidates 19 and 20
    picks = select_key_frames(change_energy(pictures), 8)
    assert {19, 20} <= set(picks)  # a frame on each side of the cut
    uniform = select_key_frames(np.zeros(40), 8)
    near = lambda ps: sum(15 <= p <= 24 for p in ps)  # noqa: E731
    assert near(picks) > near(uniform)


def test_change_energy_weighs_a_cut_on_both_sides_and_is_zero_for_a_still_picture():
    pictures = np.zeros((6, 4, 4))
    pictures[3:] = 10.0
    assert change_energy(pictures).tolist() == [0, 0, 5, 5, 0, 0]
    assert change_energy(np.ones((5, 4, 4))).tolist() == [0] * 5
    assert change_energy(np.ones((1, 4, 4))).tolist() == [0]


@pytest.mark.parametrize("start, end, fps, expected", [
    (0.0, 2.0, None, 5 * 8),        # no frame rate: candidates_per_frame per clip frame
    (0.0, 2.0, 100.0, 5 * 8),       # plenty of source frames
    (0.0, 2.0, 12.0, 24),           # 24 source frames in the window: one candidate each
    (0.0, 0.25, 12.0, 8),           # fewer source frames than clip frames: still num_frames
])
def test_candidates_are_even_and_at_most_one_per_source_frame(start, end, fps, expected):
    times = candidate_timestamps(start, end, 8, fps)
    assert len(times) == expected
    steps = np.diff([start, *times])
    assert steps[0] == pytest.approx(steps[1] / 2) and np.allclose(steps[1:], steps[1])
    assert start < times[0] and times[-1] < end


def test_key_frames_on_decoded_pictures():
    frames = np.zeros((30, 48, 64, 3), dtype=np.uint8)
    frames[12:] = 200  # the picture changes once
    assert thumbnails(frames).shape == (30, 48, 32)  # block means, about 32 pixels across
    picks = key_frames(frames, 6)
    assert {11, 12} <= set(picks) and picks == sorted(set(picks))


@pytest.mark.parametrize("call, message", [
    (lambda: select_key_frames([], 4), "no candidates"),
    (lambda: select_key_frames([1.0] * 10, 0), "num_frames"),
    (lambda: select_key_frames([1.0] * 10, 4, change_share=1.0), "change_share"),
    (lambda: candidate_timestamps(1.0, 1.0, 8, None), "no length"),
    (lambda: thumbnails(np.zeros((4, 8, 8))), "M, H, W, 3"),
])
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
