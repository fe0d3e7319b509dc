"""Heat-map rendering: colormap, scaling, upsampling, blending, and the PNG / GIF / MP4 files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from falv.explain import ExplainError
from falv.explain.render import (
    jet,
    normalize_relevance,
    overlay_frames,
    parse_formats,
    save_explanation,
    upsample,
)
from falv.explain.rollout import Explanation


def explanation(frames: int = 3, size: int = 32, grid: int = 4) -> Explanation:
    rng = np.random.default_rng(0)
    relevance = np.zeros((frames, grid, grid), dtype=np.float32)
    relevance[:, 1, 2] = 1.0
    return Explanation(
        relevance=relevance,
        frames=rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8),
        labels=[("<b>stir</b>", 0.9), ("pour", 0.1)],
        attention_type="divided_space_time",
        patch_size=size // grid,
        timestamps=[0.5 * i for i in range(frames)],
        source="v.mp4",
    )


def test_jet_runs_blue_to_red():
    lo, mid, hi = jet(np.array([0.0, 0.5, 1.0]))
    assert lo[2] > 100 and lo[0] == 0  # dark blue
    assert mid[1] == 255  # green in the middle
    assert hi[0] > 100 and hi[2] == 0  # dark red
    assert jet(np.zeros((2, 3))).shape == (2, 3, 3)


def test_normalize_relevance():
    r = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    np.testing.assert_allclose(normalize_relevance(r), r / 4)
    np.testing.assert_allclose(normalize_relevance(r, "minmax"), (r - 1) / 3)
    assert np.all(normalize_relevance(np.zeros((1, 2, 2))) == 0)
    assert np.all(normalize_relevance(np.full((1, 2, 2), 0.3), "minmax") == 1)
    bad = np.array([[[np.nan, 1.0]]])
    assert np.isfinite(normalize_relevance(bad)).all()
    with pytest.raises(ExplainError, match="scale"):
        normalize_relevance(r, "log")


def test_upsample_covers_the_patch_area_only():
    maps = np.ones((2, 2, 3), dtype=np.float32)
    up = upsample(maps, (20, 30), patch_size=8)  # patches cover 16 x 24 of the frame
    assert up.shape == (2, 20, 30)
    assert np.all(up[:, :16, :24] == 1) and np.all(up[:, 16:] == 0) and np.all(up[:, :, 24:] == 0)
    assert upsample(maps, (20, 30)).shape == (2, 20, 30)


def test_overlay_blends():
    frames = np.full((1, 8, 8, 3), 100, dtype=np.uint8)
    rel = np.zeros((1, 2, 2), dtype=np.float32)
    rel[0, 0, 0] = 1.0
    np.testing.assert_array_equal(overlay_frames(frames, rel, alpha=0.0), frames)
    full = overlay_frames(frames, rel, alpha=1.0)
    assert tuple(full[0, 0, 0]) == tuple(jet(np.array(1.0)))  # the peak is red
    assert tuple(full[0, 7, 7]) == tuple(jet(np.array(0.0)))  # far from it, blue
    with pytest.raises(ExplainError):
        overlay_frames(frames, np.zeros((2, 2, 2)))


def test_parse_formats():
    assert parse_formats("png, GIF,png") == ["png", "gif"]
    assert parse_formats(["mp4"]) == ["mp4"]
    with pytest.raises(ExplainError, match="webm"):
        parse_formats("png,webm")
    with pytest.raises(ExplainError):
        parse_formats("")


def test_save_png_gif_mp4(tmp_path):
    from falv.video import probe

    result = explanation()
    written = save_explanation(result, tmp_path / "out", formats="png,gif,mp4", stem="v.explain")
    assert set(written) == {"png", "gif", "mp4"}
    with Image.open(written["png"]) as png:
        # 3 frames enlarged to 160 px side by side; two rows (frames, overlays) under a title
        assert png.format == "PNG" and png.width >= 3 * 160 and png.height > 2 * 160
        strip = np.asarray(png.convert("RGB"))
    assert strip.std() > 0
    with Image.open(written["gif"]) as gif:
        assert gif.n_frames == 3 and gif.info.get("loop") == 0
    info = probe(written["mp4"])
    assert info.num_frames == 3 and info.width % 2 == 0 and info.height % 2 == 0
