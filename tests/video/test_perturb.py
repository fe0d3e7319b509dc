"""falv.video.perturb: what each perturbation does to a clip, its strengths and its parsing."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.errors import ConfigError
from falv.video.perturb import FALLBACK_FPS, KINDS, Perturbation, parse_perturbations


def _clips(windows=2, frames=8, h=24, w=32, seed=0):
    """Clips whose frames all differ (a frame's index is readable from its mean) with texture."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 60, size=(windows, 1, h, w, 3))
    ramp = (np.arange(frames) * 20).reshape(1, frames, 1, 1, 1)
    return (base + ramp).clip(0, 255).astype(np.uint8)


FRAME_KINDS = [name for name, kind in KINDS.items() if kind.stage == "frames"]


@pytest.mark.parametrize("name", FRAME_KINDS)
def test_shape_type_and_determinism(name):
    clips = _clips()
    p = Perturbation(name, KINDS[name].default, seed=3)
    once, again = p.apply(clips, "a.mp4", 5), p.apply(clips, "a.mp4", 5)
    assert once.shape == clips.shape and once.dtype == np.uint8
    assert np.array_equal(once, again)  # the same (seed, path, window): the same draws
    assert not np.array_equal(once, clips), "the default strength changes the clip"
    assert np.array_equal(clips, _clips()), "the input is left alone"


@pytest.mark.parametrize("name", [n for n in FRAME_KINDS if n not in ("resolution", "blur", "jpeg")])
def test_random_draws_depend_on_seed_path_and_window(name):
    clips = _clips(windows=1)
    p = Perturbation(name, KINDS[name].default, seed=0)
    base = p.apply(clips, "a.mp4", 0)
    others = [Perturbation(name, KINDS[name].default, seed=1).apply(clips, "a.mp4", 0),
              p.apply(clips, "b.mp4", 0), p.apply(clips, "a.mp4", 1)]
    assert all(not np.array_equal(base, o) for o in others)


@pytest.mark.parametrize("name", FRAME_KINDS)
def test_identity_strength_changes_nothing(name):
    clips = _clips()
    assert np.array_equal(Perturbation(name, KINDS[name].identity).apply(clips, "a.mp4"), clips)


def test_a_window_does_not_depend_on_the_chunk_it_was_decoded_in():
    """Window 3 of a video is perturbed alike whether its chunk started at window 0 or 3."""
    clips = _clips(windows=4)
    p = Perturbation("noise", 0.2)
    whole = p.apply(clips, "v.mp4", 0)
    assert np.array_equal(whole[3:], p.apply(clips[3:], "v.mp4", 3))


@settings(max_examples=30)
@given(p=st.floats(0.0, 0.95), seed=st.integers(0, 10_000))
def test_frame_drop_shows_earlier_frames_in_order(p, seed):
    clips = _clips(windows=1)
    out = Perturbation("frame-drop", p, seed).apply(clips)[0]
    shown = [int(np.argmin([np.abs(out[t].astype(int) - clips[0, i]).sum() for i in range(8)])) for t in range(8)]
    assert shown[0] == 0 and shown == sorted(shown) and all(s <= t for t, s in enumerate(shown))
    assert all(np.array_equal(out[t], clips[0, s]) for t, s in enumerate(shown))


@settings(max_examples=30)
@given(s=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_shuffle_is_a_permutation_moving_at_most_its_share(s, seed):
    clips = _clips(windows=1, frames=10)
    out = Perturbation("shuffle", s, seed).apply(clips)[0]
    order = [int(np.argmin([np.abs(out[t].astype(int) - clips[0, i]).sum() for i in range(10)])) for t in range(10)]
    assert sorted(order) == list(range(10))
    assert sum(o != t for t, o in enumerate(order)) <= round(s * 10)


def test_full_shuffle_changes_the_order_of_most_clips():
    clips = _clips(windows=20)
    out = Perturbation("shuffle", 1.0).apply(clips, "x.mp4")
    assert sum(not np.array_equal(out[w], clips[w]) for w in range(20)) >= 19


@pytest.mark.parametrize("name, weak, strong", [
    ("noise", 0.02, 0.3), ("blur", 0.5, 4.0), ("resolution", 0.8, 0.15), ("jpeg", 90, 5), ("crop", 0.9, 0.3)])
def test_stronger_is_further_from_the_clean_clip(name, weak, strong):
    clips = _clips(windows=3, h=48, w=64)

    def error(strength):
        out = Perturbation(name, strength, seed=1).apply(clips, "x.mp4").astype(float)
        return np.abs(out - clips).mean()

    assert 0 < error(weak) < error(strong)


def test_noise_has_the_standard_deviation_it_says():
    clips = np.full((4, 8, 32, 32, 3), 128, dtype=np.uint8)
    out = Perturbation("noise", 0.1).apply(clips, "x.mp4").astype(float)
    assert abs((out - 128).std() - 25.5) < 0.5


def test_blur_removes_fine_detail_and_keeps_the_mean():
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    clips = np.repeat(checker[None, None, :, :, None], 3, axis=-1).repeat(2, axis=1)
    out = Perturbation("blur", 2.0).apply(clips, "x.mp4").astype(float)
    assert out[..., 8:24, 8:24, :].std() < 10 and abs(out.mean() - clips.mean()) < 3


@pytest.mark.parametrize("fps, strength", [(30.0, 0.25), (12.0, 0.5), (25.0, 0.1), (None, 0.5), (float("nan"), 0.25)])
def test_fps_holds_frames_on_the_lower_rate_grid(fps, strength):
    clips = [[0.05 * i for i in range(8)], [3.0, 3.1, 3.2]]  # sampled at 20 fps: denser than every lower rate
    out = Perturbation("fps", strength).retime(clips, fps)
    rate = fps if fps is not None and math.isfinite(fps) else FALLBACK_FPS
    step = 1 / (rate * strength)
    for before, after in zip(clips, out):
        assert len(before) == len(after)
        for t, u in zip(before, after):
            assert u <= t + 1e-9 and t - u < step + 1e-9
            assert abs(u / step - round(u / step)) < 1e-6  # on the lower rate's grid
        assert after == sorted(after)
    assert len(set(out[0])) < len(clips[0])  # some frames are now held


def test_only_fps_moves_timestamps_and_frame_kinds_only_pixels():
    clips = [[0.0, 0.5, 1.0]]
    assert all(Perturbation(n, KINDS[n].default).retime(clips, 30.0) == clips for n in FRAME_KINDS)
    assert Perturbation("fps", 1.0).retime(clips, 30.0) == clips
    frames = _clips()
    assert np.array_equal(Perturbation("fps", 0.25).apply(frames), frames)


@pytest.mark.parametrize("text, expected", [
    ("blur", ["blur=2"]),
    ("blur=3, noise=0.2", ["blur=3", "noise=0.2"]),
    ("Frame_Drop=0.25", ["frame-drop=0.25"]),
    ("blur=1,blur=3", ["blur=1", "blur=3"]),
    (["jpeg=10", "fps"], ["jpeg=10", "fps=0.25"]),
    ("all", [f"{n}={k.default:g}" for n, k in KINDS.items()]),
])
def test_parse(text, expected):
    assert [p.spec for p in parse_perturbations(text, seed=4)] == expected
    assert all(p.seed == 4 for p in parse_perturbations(text, seed=4))


@pytest.mark.parametrize("text, message", [
    ("", "no perturbation"),
    ("wobble", "unknown perturbation 'wobble'; valid names: frame-drop, shuffle, fps"),
    ("blur=abc", "blur: the strength must be a number"),
    ("blur=-1", "blur: the strength must be a number in [0, 50]"),
    ("fps=0", "fps: the strength must be a number in (0, 1]"),
    ("resolution=1.5", "resolution: the strength must be a number in (0, 1]"),
    ("jpeg=12.5", "jpeg: the strength must be an integer in [1, 95]"),
    ("noise=nan", "noise: the strength must be a number"),
    ("blur,blur=2", "perturbation given twice: blur=2"),
])
def test_parse_errors_say_what_is_valid(text, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_perturbations(text)
    assert message in str(info.value)


def test_every_kind_is_documented_in_the_module_and_the_docs():
    import pathlib

    import falv.video.perturb as module

    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    for name, kind in KINDS.items():
        assert f"\n{name} " in module.__doc__
        assert f"`{name}`" in docs, name
        assert kind.low <= kind.default <= kind.high and kind.low <= kind.identity <= kind.high
