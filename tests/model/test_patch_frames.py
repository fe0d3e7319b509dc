"""patch_frames: each token also embeds its patch in the previous frames."""

from __future__ import annotations

import json

import pytest
import torch

from falv import FALForVideoClassification
from falv.errors import CheckpointError, ConfigError
from falv.hub.convert import timesformer_key_map
from falv.model.embeddings import PatchEmbedding, stack_previous_frames
from falv.model.presets import preset

from .conftest import randomize_, tiny_config


@pytest.mark.parametrize("frames", [1, 2, 3])
@pytest.mark.parametrize("t", [1, 4])
def test_stack_previous_frames_puts_frame_t_minus_j_in_block_j(frames, t):
    x = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1, 1).expand(2, t, 3, 4, 4)
    out = stack_previous_frames(x, frames)
    assert out.shape == (2, t, 3 * frames, 4, 4)
    for i in range(t):
        for j in range(frames):
            assert (out[:, i, 3 * j : 3 * j + 3] == max(i - j, 0)).all()


def test_a_token_sees_only_its_own_and_the_previous_frame():
    torch.manual_seed(0)
    embed = PatchEmbedding(patch_size=4, num_channels=3, dim=8, frames=2)
    x = torch.randn(1, 5, 3, 8, 8)
    y = x.clone()
    y[:, 2] += 1.0  # change frame 2 only
    (a, grid), (b, _) = embed(x), embed(y)
    per_frame = grid[1] * grid[2]
    changed = [(a[:, f * per_frame : (f + 1) * per_frame] != b[:, f * per_frame : (f + 1) * per_frame]).any().item()
               for f in range(5)]
    assert changed == [False, False, True, True, False]


def test_one_frame_per_token_is_the_timesformer_embedding():
    torch.manual_seed(0)
    one = PatchEmbedding(patch_size=4, num_channels=3, dim=8, frames=1)
    two = PatchEmbedding(patch_size=4, num_channels=3, dim=8, frames=2)
    with torch.no_grad():  # weights on the previous frame at zero: the same map as one frame
        two.proj.weight.zero_()
        two.proj.weight[:, :48] = one.proj.weight
        two.proj.bias.copy_(one.proj.bias)
    x = torch.randn(2, 3, 3, 8, 8)
    torch.testing.assert_close(two(x)[0], one(x)[0])


def test_the_model_tells_a_clip_from_its_reversal_at_initialisation():
    """Frame order reaches the logits from the first step: not only through the zero-initialised time embedding."""
    cfg = tiny_config(patch_frames=2, position_embedding="none")
    model = FALForVideoClassification(cfg).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        forward, backward = model(x).logits, model(x.flip(1)).logits
    assert not torch.allclose(forward, backward, atol=1e-5)
    baseline = FALForVideoClassification(tiny_config(position_embedding="none")).eval()
    with torch.no_grad():  # one frame per token and no time embedding: a bag of frames
        torch.testing.assert_close(baseline(x).logits, baseline(x.flip(1)).logits, atol=1e-5, rtol=1e-4)


def test_saved_and_loaded_with_the_option(tmp_path):
    model = randomize_(FALForVideoClassification(tiny_config(patch_frames=2))).eval()
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["patch_frames"] == 2
    back = FALForVideoClassification.from_pretrained(tmp_path / "m").eval()
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, model(x).logits)
    FALForVideoClassification(tiny_config()).save_pretrained(tmp_path / "d")  # default: key left out
    assert "patch_frames" not in json.loads((tmp_path / "d" / "config.json").read_text())


@pytest.mark.parametrize("bad", [0, -1, 5, 1.5])
def test_invalid_patch_frames_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="patch_frames"):
        tiny_config(patch_frames=bad)


def test_timesformer_keys_refuse_several_frames_per_token():
    with pytest.raises(CheckpointError, match="patch_frames"):
        timesformer_key_map(tiny_config(patch_frames=2), "transformers")


def test_tiny_preset_uses_two_frames_and_width_scaled_init():
    cfg = preset("tiny")
    assert cfg.patch_frames == 2
    assert cfg.initializer_range == pytest.approx(cfg.hidden_size ** -0.5, abs=1e-3)
    assert preset("base").patch_frames == 1 and preset("base").initializer_range == 0.02
