"""Tests of falv.data.transforms: pure functions (tables + properties) and the pipelines."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.data import transforms as T
from falv.errors import ConfigError

FAST = settings(max_examples=60, deadline=None)
sizes = st.integers(min_value=1, max_value=40)


def clip(t: int = 2, h: int = 12, w: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = torch.arange(t * 3 * h * w, dtype=torch.float32).reshape(t, 3, h, w) % 251
    return x.to(dtype)


def frames(t: int = 3, h: int = 30, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# -- existing functions keep their behaviour -----------------------------------------
@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [
        ((12, 16), 6, (6, 8)),
        ((16, 12), 6, (8, 6)),
        ((10, 10), 4, (4, 4)),
        ((240, 320), 224, (224, 298)),  # int(224 * 320 / 240) = 298, as transformers
        ((12, 16), 12, (12, 16)),  # already the size: unchanged
    ],
)
def test_resize_shortest_side_table(hw, size, expected):
    out = T.resize_shortest_side(clip(h=hw[0], w=hw[1]), size)
    assert tuple(out.shape[-2:]) == expected


@given(h=st.integers(4, 64), w=st.integers(4, 64), size=st.integers(2, 48))
@FAST
def test_resize_shortest_side_keeps_aspect(h, w, size):
    out = T.resize_shortest_side(torch.zeros(1, 3, h, w), size)
    oh, ow = out.shape[-2:]
    assert min(oh, ow) == size
    # the long side is truncated, so the aspect ratio is kept to within one pixel
    long_exact = size * max(h, w) / min(h, w)
    assert max(oh, ow) == int(long_exact) or (h == w and oh == ow == size)


def test_resize_uint8_stays_uint8_and_center_crop_pads():
    out = T.resize(clip(dtype=torch.uint8), (6, 8))
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 6, 8)
    padded = T.center_crop(torch.ones(1, 3, 4, 4), (6, 6))
    assert padded.shape == (1, 3, 6, 6) and padded.sum() == 3 * 16


# -- crops ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hw", "size", "offsets"),
    [
        ((10, 20), 10, [(0, 0), (0, 5), (0, 10)]),  # landscape: left / centre / right
        ((20, 10), 10, [(0, 0), (5, 0), (10, 0)]),  # portrait: top / centre / bottom
        ((12, 12), 8, [(2, 0), (2, 2), (2, 4)]),  # square: along the width, as SlowFast
        ((224, 298), 224, [(0, 0), (0, 37), (0, 74)]),
    ],
)
def test_three_crop_offsets_table(hw, size, offsets):
    assert T.three_crop_offsets(*hw, size) == offsets


@given(h=st.integers(1, 60), w=st.integers(1, 60), c=sizes)
@FAST
def test_three_crop_within_bounds_and_covers_long_side(h, w, c):
    if c > min(h, w):
        with pytest.raises(ConfigError):
            T.three_crop_offsets(h, w, c)
        return
    offs = T.three_crop_offsets(h, w, c)
    assert all(0 <= t <= h - c and 0 <= l <= w - c for t, l in offs)
    # the first crop starts at 0 and the last ends at the long side's end
    along = [t for t, _ in offs] if h > w else [l for _, l in offs]
    assert along[0] == 0 and along[-1] + c == max(h, w) and along == sorted(along)
    # the middle crop is the centre crop
    x = clip(t=1, h=h, w=w)
    assert torch.equal(T.three_crop(x, c)[1], T.center_crop(x, (c, c)))


def test_three_crop_pads_small_clips():
    views = T.three_crop(torch.ones(1, 3, 5, 7), 8)
    assert [tuple(v.shape) for v in views] == [(1, 3, 8, 8)] * 3


@given(h=st.integers(1, 50), w=st.integers(1, 50), th=sizes, tw=sizes)
@FAST
def test_center_crop_size_exact(h, w, th, tw):
    assert tuple(T.center_crop(torch.zeros(2, 3, h, w), (th, tw)).shape[-2:]) == (th, tw)


@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    lo=st.floats(0.01, 1.0),
    span=st.floats(0.0, 1.0),
    r0=st.floats(0.2, 2.0),
    rspan=st.floats(1.0, 3.0),
    seed=st.integers(0, 2**31),
)
@FAST
def test_random_resized_crop_params_within_bounds(h, w, lo, span, r0, rspan, seed):
    scale = (lo, min(1.0, lo + span))
    g = torch.Generator().manual_seed(seed)
    top, left, ch, cw = T.random_resized_crop_params(h, w, scale, (r0, r0 * rspan), g)
    assert 0 < ch <= h and 0 < cw <= w
    assert 0 <= top <= h - ch and 0 <= left <= w - cw


@given(h=st.integers(8, 80), w=st.integers(8, 80), size=st.tuples(sizes, sizes), seed=st.integers(0, 2**31))
@FAST
def test_random_resized_crop_exact_size_and_deterministic(h, w, size, seed):
    x = clip(t=2, h=h, w=w)
    a = T.random_resized_crop(x, size, generator=torch.Generator().manual_seed(seed))
    b = T.random_resized_crop(x, size, generator=torch.Generator().manual_seed(seed))
    assert tuple(a.shape) == (2, 3, *size)
    assert torch.equal(a, b)


def test_random_resized_crop_varies_with_seed():
    params = {T.random_resized_crop_params(100, 120, generator=torch.Generator().manual_seed(s)) for s in range(20)}
    assert len(params) > 10


def test_random_resized_crop_fallback_keeps_ratio():
    # a 1000:1 strip: no sample fits, so the fallback takes the largest centred crop with the max ratio
    top, left, ch, cw = T.random_resized_crop_params(2, 2000, (0.9, 1.0), (0.5, 2.0), torch.Generator().manual_seed(0))
    assert (ch, cw) == (2, 4) and top == 0 and left == (2000 - 4) // 2


def test_crop_rejects_out_of_bounds():
    with pytest.raises(ConfigError):
        T.crop(clip(), 5, 0, 10, 4)


# -- flips, rescale, layout -------------------------------------------------------------
@given(t=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9))
@FAST
def test_flip_twice_is_identity(t, h, w):
    x = torch.rand(t, 3, h, w)
    assert torch.equal(T.hflip(T.hflip(x)), x)
    assert torch.equal(T.hflip(x)[..., 0], x[..., -1])


@pytest.mark.parametrize(("p", "flipped"), [(0.0, False), (1.0, True)])
def test_random_hflip_extremes(p, flipped):
    x = clip()
    out = T.random_hflip(x, p, torch.Generator().manual_seed(0))
    assert torch.equal(out, T.hflip(x) if flipped else x)


def test_random_hflip_rate():
    g = torch.Generator().manual_seed(0)
    x = clip(t=1, h=2, w=3)
    n = sum(not torch.equal(T.random_hflip(x, 0.3, g), x) for _ in range(2000))
    assert 500 < n < 700


def test_rescale_and_layout():
    f = frames(t=2, h=4, w=5)
    x = T.to_clip_tensor(f)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.uint8
    assert torch.equal(x[1, 2], torch.from_numpy(f[1, :, :, 2]))
    r = T.rescale(x)
    assert r.dtype == torch.float32 and float(r.max()) <= 1.0
    assert T.to_clip_tensor(r) is r
    with pytest.raises(ConfigError):
        T.to_clip_tensor(np.zeros((4, 5, 3), np.uint8))


# -- pipelines -------------------------------------------------------------------------
def test_eval_transform_is_the_documented_pipeline():
    f = frames(t=3, h=30, w=40)
    tf = T.eval_transform(shortest_edge=20, crop_size=16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    x = torch.from_numpy(f).permute(0, 3, 1, 2).float()
    expected = T.resize_shortest_side(x, 20)
    expected = T.center_crop(expected, (16, 16)) / 255.0
    expected = T.normalize(expected, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    out = tf(f)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    # a (T, C, H, W) tensor gives the same result as the (T, H, W, 3) array
    torch.testing.assert_close(tf(torch.from_numpy(f).permute(0, 3, 1, 2)), out)
    torch.testing.assert_close(T.preprocess_clip(f, 20, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)), out)
    assert tf.size_hint == 20


def test_eval_transform_three_crop():
    f = frames(t=2, h=30, w=40)
    tf = T.eval_transform(shortest_edge=16, crop_size=16, num_crops=3)
    out = tf(f)
    assert out.shape == (3, 2, 3, 16, 16)
    torch.testing.assert_close(out[1], T.eval_transform(16, 16)(f))


@pytest.mark.parametrize("crop", [16, (12, 20)])
def test_train_transform_shapes_and_determinism(crop):
    f = frames(t=4, h=30, w=40)
    tf = T.train_transform(crop_size=crop, shortest_edge=24)
    a = tf(f, generator=torch.Generator().manual_seed(3))
    b = tf(f, generator=torch.Generator().manual_seed(3))
    hw = (crop, crop) if isinstance(crop, int) else crop
    assert a.shape == (4, 3, *hw) and a.dtype == torch.float32
    assert torch.equal(a, b)
    outs = {tf(f, generator=torch.Generator().manual_seed(s)).sum().item() for s in range(8)}
    assert len(outs) > 1


def test_train_transform_flip_switch():
    f = frames(t=1, h=16, w=16)
    # full-frame crop: the only randomness left is the flip
    base = dict(crop_size=16, shortest_edge=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = T.train_transform(**base, flip=True, flip_p=1.0)(f, generator=torch.Generator().manual_seed(0))
    plain = T.train_transform(**base, flip=False, flip_p=1.0)(f, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flipped, T.hflip(plain))
    torch.testing.assert_close(plain, T.eval_transform(16, 16)(f))


def test_pipelines_pickle():
    for tf in (T.train_transform(16), T.eval_transform(16, num_crops=3)):
        again = pickle.loads(pickle.dumps(tf))
        assert again == tf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crop_size": 0},
        {"scale": (0.5, 0.1)},
        {"scale": (0.0, 1.0)},
        {"ratio": (-1.0, 1.0)},
        {"flip_p": 1.5},
        {"mean": (0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        {"std": (0.5, 0.0, 0.5)},
    ],
)
def test_train_transform_rejects_bad_config(kwargs):
    with pytest.raises(ConfigError):
        T.train_transform(**kwargs)


def test_eval_transform_rejects_bad_config():
    with pytest.raises(ConfigError):
        T.eval_transform(16, num_crops=2)
    with pytest.raises(ConfigError):
        T.eval_transform(0)
