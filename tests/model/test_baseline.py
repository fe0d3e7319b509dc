"""The R(2+1)D-style CNN baseline: interface, FLOP parity with FAL tiny, save/load, training."""

from __future__ import annotations

import json

import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.errors import CheckpointError, ConfigError
from falv.model import flops as fal_flops
from falv.model.baseline import (
    BASELINE_PRESETS,
    R2Plus1DConfig,
    R2Plus1DForVideoClassification,
    baseline_preset,
    count_flops,
    midplanes,
)
from falv.model.transformer import VideoClassifierOutput


def small_config(**overrides) -> R2Plus1DConfig:
    """Fast for tests: 4 frames of 32x32, narrow stages."""
    base = dict(num_frames=4, image_size=32, stem_width=8, widths=(8, 16), depths=(1, 1),
                spatial_strides=(1, 2), temporal_strides=(1, 2), id2label={0: "a", 1: "b", 2: "c"})
    base.update(overrides)
    return R2Plus1DConfig(**base)


def test_shapes_and_interface():
    model = R2Plus1DForVideoClassification(small_config()).eval()
    x = torch.randn(2, 4, 3, 32, 32)  # (B, T, C, H, W), as FAL takes it
    out = model(x)
    assert isinstance(out, VideoClassifierOutput)
    assert out.logits.shape == (2, 3) and out.loss is None
    assert out.embeddings.shape == (2, 16) == (2, model.config.hidden_size)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)
    # other clip lengths and sizes run too (global pooling)
    assert model(torch.randn(1, 6, 3, 40, 48)).logits.shape == (1, 3)
    cfg = model.config
    assert (cfg.num_labels, cfg.labels, cfg.label2id) == (3, ["a", "b", "c"], {"a": 0, "b": 1, "c": 2})
    assert (cfg.num_frames, cfg.image_size, cfg.problem_type) == (4, 32, "single_label_classification")
    assert len(cfg.image_mean) == len(cfg.image_std) == 3 and not cfg.is_multilabel
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model(torch.randn(4, 3, 32, 32))


def test_factorised_convolutions():
    """Every 3D convolution is a (1, d, d) spatial + (t, 1, 1) temporal pair (or a 1x1x1 shortcut),
    sized like the full t x d x d kernel (Tran et al. 2018, Sec. 3.5)."""
    model = R2Plus1DForVideoClassification(small_config())
    kernels = {tuple(m.kernel_size) for m in model.modules() if isinstance(m, torch.nn.Conv3d)}
    assert kernels == {(1, 5, 5), (1, 3, 3), (3, 1, 1), (1, 1, 1)}
    assert midplanes(64, 64, 3, 3) == 144  # R(2+1)D-18's first stage
    full, mid = 3 * 9 * 64 * 64, midplanes(64, 64, 3, 3)
    assert abs((9 * 64 * mid + 3 * mid * 64) - full) / full < 0.01


def test_loss_and_gradients_reach_every_parameter():
    model = R2Plus1DForVideoClassification(small_config())
    labels = torch.tensor([0, 2])
    out = model(torch.randn(2, 4, 3, 32, 32), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_multilabel_loss_is_bce():
    model = R2Plus1DForVideoClassification(small_config(problem_type="multi_label_classification"))
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    out = model(torch.randn(1, 4, 3, 32, 32), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))


def test_tiny_flops_match_fal_tiny_within_30_percent():
    fal = fal_flops.count_flops(preset("tiny"))
    cnn = count_flops(baseline_preset("tiny"))
    cfg = baseline_preset("tiny")
    assert (cfg.num_frames, cfg.image_size) == (preset("tiny").num_frames, preset("tiny").image_size)
    assert 0.7 <= cnn / fal <= 1.3, (cnn, fal)


def test_flop_counter_matches_hand_count():
    """One stage, stride 1: the counter sees exactly the convolutions and the head."""
    cfg = small_config(widths=(8,), depths=(1,), spatial_strides=(1,), temporal_strides=(1,), stem_spatial_stride=1)
    t, hw = 4, 32 * 32
    positions = t * hw

    def pair(cin, cout, d):
        m = midplanes(cin, cout, d, 3)
        return 2 * positions * (cin * d * d * m + m * 3 * cout)

    expected = pair(3, 8, 5) + pair(8, 8, 3) * 2 + 2 * 8 * 3  # stem, block (2 pairs), head
    assert count_flops(cfg) == expected


def test_save_and_load_round_trip(tmp_path):
    model = R2Plus1DForVideoClassification(small_config(image_mean=(0.5, 0.5, 0.5)))
    # A few training steps so BatchNorm running statistics differ from their initial values.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "falv_r2plus1d"
    loaded = R2Plus1DForVideoClassification.from_pretrained(tmp_path)
    assert not loaded.training and loaded.config == model.config
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    from falv.processing import FALImageProcessor

    proc = FALImageProcessor.from_pretrained(tmp_path)
    assert proc.image_mean == [0.5, 0.5, 0.5] and proc.crop_size == {"height": 32, "width": 32}
    relabelled = R2Plus1DForVideoClassification.from_pretrained(tmp_path, labels=["x", "y"])
    assert relabelled.config.labels == ["x", "y"] and relabelled(x).logits.shape == (2, 2)
    torch.testing.assert_close(relabelled.forward_features(x), loaded.forward_features(x))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        R2Plus1DForVideoClassification.from_pretrained(tmp_path)
    FALForVideoClassification(preset("tiny")).save_pretrained(tmp_path / "fal")
    with pytest.raises(CheckpointError, match="model_type .fal., not .falv_r2plus1d.*falv.load_model"):
        R2Plus1DForVideoClassification.from_pretrained(tmp_path / "fal")
    R2Plus1DForVideoClassification(small_config()).save_pretrained(tmp_path / "cnn")
    small_config(widths=(8, 32)).save_pretrained(tmp_path / "cnn")  # config no longer fits the weights
    with pytest.raises(CheckpointError, match="does not match"):
        R2Plus1DForVideoClassification.from_pretrained(tmp_path / "cnn")


@pytest.mark.parametrize("bad,message", [
    (dict(widths=(8,)), "depths has 2 entries for 1 stages"),
    (dict(widths=()), "at least one stage"),
    (dict(problem_type="regression"), "problem_type"),
    (dict(id2label={}), "at least one label"),
    (dict(num_frames=0), "num_frames"),
    (dict(image_mean=(0.5,)), "one value per channel"),
])
def test_invalid_configs_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**bad)


def test_presets_and_json_round_trip():
    assert list(BASELINE_PRESETS) == ["tiny", "r2plus1d_18"]
    cfg = baseline_preset("r2plus1d_18", id2label={0: "x"})
    assert R2Plus1DConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    with pytest.raises(ConfigError, match="valid presets"):
        baseline_preset("resnet50")


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = R2Plus1DForVideoClassification(small_config())
    x, y = torch.randn(6, 4, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = model(x, labels=y).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
