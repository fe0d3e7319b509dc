"""Colour jitter and rotation: PIL as the oracle, and the same augmentation for every frame."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from falv.data import transforms as T
from falv.errors import ConfigError


def _image(seed=0, h=24, w=32):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _clip(img, frames=1):
    return torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0).repeat(frames, 1, 1, 1)


@pytest.mark.parametrize("kind,factor", [("brightness", 0.6), ("brightness", 1.4), ("saturation", 0.3),
                                         ("saturation", 1.7), ("contrast", 0.5), ("contrast", 1.5)])
def test_color_factors_match_pil_image_enhance(kind, factor):
    img = _image()
    enhancer = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
                "saturation": ImageEnhance.Color}[kind]
    expected = np.asarray(enhancer(Image.fromarray(img)).enhance(factor)).astype(np.float32)
    ours = T.adjust_color(_clip(img), **{kind: factor})[0].permute(1, 2, 0).numpy()
    # PIL rounds to uint8 (and its contrast uses the rounded mean of the grey image)
    assert np.abs(ours - expected).max() <= 2.0


def _smooth_image(h=41, w=41):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([128 + 100 * np.sin(xx / 6.0), 128 + 100 * np.cos(yy / 5.0),
                     128 + 60 * np.sin((xx + yy) / 7.0)], -1).astype(np.uint8)


@pytest.mark.parametrize("degrees", [-10.0, 7.5, 30.0])
def test_rotation_matches_pil_rotate_inside_the_frame(degrees):
    img = _smooth_image()  # smooth, so that bilinear sampling conventions matter little
    expected = np.asarray(Image.fromarray(img).rotate(degrees, resample=Image.BILINEAR)).astype(np.float32)
    ours = T.rotate(_clip(img), degrees)[0].permute(1, 2, 0).numpy()
    inner = (slice(12, 29), slice(12, 29))  # away from the corners that rotate out of the frame
    assert np.abs(ours[inner] - expected[inner]).mean() < 1.5  # the other direction: 15 to 45
    rotated_back = T.rotate(T.rotate(_clip(img), degrees), -degrees)[0].permute(1, 2, 0).numpy()
    assert np.abs(rotated_back[inner] - img[inner]).mean() < 3.0  # two bilinear resamplings


def test_rotation_keeps_shape_and_non_square_frames_rotate_in_pixels():
    clip = torch.zeros(2, 3, 20, 40)
    clip[:, :, 9:11, :] = 255.0  # a horizontal bar through the centre
    out = T.rotate(clip, 90.0)
    assert out.shape == clip.shape
    # rotated by 90 degrees in pixels, the bar is vertical: the centre column is lit, row ends are dark
    assert out[0, 0, 5:15, 19:21].mean() > 200 and out[0, 0, 10, :5].max() < 1


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), strength=st.floats(0.05, 1.0), degrees=st.floats(1.0, 30.0))
def test_every_frame_of_a_clip_gets_the_same_augmentation(seed, strength, degrees):
    frames = np.repeat(_image(2, 40, 48)[None], 4, axis=0)  # a still clip: 4 identical frames
    tf = T.train_transform(crop_size=32, scale=(0.5, 1.0), flip=True, color_jitter=strength, rotate=degrees)
    out = tf(frames, torch.Generator().manual_seed(seed))
    assert out.shape == (4, 3, 32, 32)
    assert all(torch.equal(out[0], out[i]) for i in range(1, 4))
    again = tf(frames, torch.Generator().manual_seed(seed))
    assert torch.equal(out, again)  # a function of the seed


def test_off_by_default_and_zero_strength_is_the_identity():
    frames = np.repeat(_image(3, 40, 48)[None], 2, axis=0)
    plain = T.train_transform(crop_size=32)
    assert plain.color_jitter == 0 and plain.rotate == 0
    zero = T.train_transform(crop_size=32, color_jitter=0.0, rotate=0.0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(plain(frames, g1), zero(frames, g2))
    assert torch.equal(T.adjust_color(_clip(_image()), 1.0, 1.0, 1.0), _clip(_image()))


@pytest.mark.parametrize("kw", [dict(color_jitter=-0.1), dict(color_jitter=1.5), dict(rotate=90)])
def test_out_of_range_augmentation_is_a_config_error(kw):
    with pytest.raises(ConfigError):
        T.train_transform(crop_size=32, **kw)
