"""TSM: parity with a TSM built as mit-han-lab/temporal-shift-module builds it, on transformers'
ResNet (timm, whose ResNet has torchvision's names, needs torchvision, which does not import beside
falv's torch; transformers' ResNetModel is torchvision's ResNet with other names), checkpoints
written as TSM's main.py writes them, strict key maps, save/load."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from falv.errors import CheckpointError, ConfigError
from falv.hub.families import family_of, load_model, read_checkpoint
from falv.model import tsm as ft
from falv.model.tsm import TSMConfig, TSMForVideoClassification, count_flops, count_parameters, tsm_preset
from tests.oracles import randomize_batch_norm

transformers = pytest.importorskip("transformers")

CLASSES = 5


@pytest.fixture(autouse=True)
def _plain_cpu_convolutions(monkeypatch):
    """oneDNN spends most of a second creating a primitive for every new tiny conv shape; torch's
    own kernels run these tiny models in milliseconds (the reference runs under the same setting)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)

FRAMES = 4


# -- the reference: TSM's ops/temporal_shift.py and ops/models.py (TSN), on transformers' ResNet ------


class TemporalShift(nn.Module):
    """TSM's ``TemporalShift`` (its non-inplace shift, as written there): ``.net`` is the wrapped conv."""

    def __init__(self, net, n_segment=3, n_div=8):
        super().__init__()
        self.net, self.n_segment, self.fold_div = net, n_segment, n_div

    def forward(self, x):
        return self.net(self.shift(x, self.n_segment, fold_div=self.fold_div))

    @staticmethod
    def shift(x, n_segment, fold_div=3):
        nt, c, h, w = x.size()
        n_batch = nt // n_segment
        x = x.view(n_batch, n_segment, c, h, w)
        fold = c // fold_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
        out[:, 1:, fold: 2 * fold] = x[:, :-1, fold: 2 * fold]  # shift right
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]  # not shift
        return out.view(nt, c, h, w)


def make_temporal_shift(net, n_segment, n_div=8):
    """TSM's ``make_temporal_shift(place='blockres')``: wrap each bottleneck's first conv, every
    block, or every other block when layer3 has >= 23 blocks (``n_round = 2``)."""
    stages = net.encoder.stages
    n_round = 2 if len(stages[2].layers) >= 23 else 1
    for stage in stages:
        for i, block in enumerate(stage.layers):
            if i % n_round == 0:
                block.layer[0].convolution = TemporalShift(block.layer[0].convolution, n_segment, n_div)


class TSN(nn.Module):
    """TSM's ``TSN`` forward: frames through the base model (dropout replacing its fc), ``new_fc``
    (or, with dropout 0, the base model's own fc), average consensus over the segments."""

    def __init__(self, base_model, num_class, num_segments, dropout=0.5):
        super().__init__()
        self.base_model, self.num_segments = base_model, num_segments
        features = base_model.config.hidden_sizes[-1]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(features, num_class)
        self.dropout_rate = dropout

    def forward(self, input):  # (B, T*3, H, W), as TSM's data loader stacks a video's frames
        frames = input.view((-1, 3) + input.size()[-2:])
        base_out = self.fc(self.dropout(self.base_model(frames).pooler_output.flatten(1)))
        return base_out.view((-1, self.num_segments) + base_out.size()[1:]).mean(dim=1)


def _oracle(depths, shift=True, dropout=0.5, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 128, 256],
                                    depths=list(depths), layer_type="bottleneck", hidden_act="relu",
                                    downsample_in_first_stage=False, downsample_in_bottleneck=False)
    base = transformers.ResNetModel(cfg).eval()
    if shift:
        make_temporal_shift(base, FRAMES, n_div=8)
    net = TSN(base, CLASSES, FRAMES, dropout=dropout)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    randomize_batch_norm(net, seed=seed)
    return net.eval()


def _torchvision_name(key: str) -> str:
    """transformers' ResNet name -> torchvision's (what TSM's base_model holds)."""
    key = re.sub(r"^embedder\.embedder\.convolution\.", "conv1.", key)
    key = re.sub(r"^embedder\.embedder\.normalization\.", "bn1.", key)
    key = re.sub(r"^encoder\.stages\.(\d)\.layers\.(\d+)\.",
                 lambda m: f"layer{int(m[1]) + 1}.{m[2]}.", key)
    key = key.replace(".shortcut.convolution.", ".downsample.0.").replace(".shortcut.normalization.", ".downsample.1.")
    key = re.sub(r"\.layer\.(\d)\.convolution\.", lambda m: f".conv{int(m[1]) + 1}.", key)
    return re.sub(r"\.layer\.(\d)\.normalization\.", lambda m: f".bn{int(m[1]) + 1}.", key)


def _tsm_state(net: TSN) -> dict:
    """The state_dict of TSM's ``torch.nn.DataParallel(TSN(...))``."""
    state = {f"module.base_model.{_torchvision_name(k)}": v for k, v in net.base_model.state_dict().items()}
    head = "module.new_fc." if net.dropout_rate > 0 else "module.base_model.fc."
    state.update({head + k: v for k, v in net.fc.state_dict().items()})
    return state


NAME = "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment4_e50.pth"
VARIANTS = {  # depths, shift, dropout, file name
    "r50": ((2, 2, 2, 2), True, 0.5, NAME),
    "r101_every_other_block": ((1, 1, 23, 1), True, 0.5, NAME.replace("resnet50", "resnet101")),
    "tsn": ((2, 1, 1, 1), False, 0.5, "TSM_kinetics_RGB_resnet50_avg_segment4_e50.pth"),
    "dropout0_fc": ((1, 2, 1, 1), True, 0.0, NAME),
}


def _write(tmp_path, variant="r50"):
    depths, shift, dropout, name = VARIANTS[variant]
    oracle = _oracle(depths, shift, dropout)
    optimizer = torch.optim.SGD(oracle.parameters(), lr=0.01, momentum=0.9)
    path = tmp_path / name
    torch.save({"epoch": 50, "arch": "resnet101" if "101" in name else "resnet50", "state_dict": _tsm_state(oracle),
                "optimizer": optimizer.state_dict(), "best_prec1": torch.tensor(71.2)}, path)
    return path, oracle


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_equal_tsm_for_the_same_weights(tmp_path, variant):
    path, oracle = _write(tmp_path, variant)
    model = load_model(path)
    assert family_of(model) == "tsm" and isinstance(model, TSMForVideoClassification) and not model.training
    cfg = model.config
    assert (cfg.num_frames, cfg.shift_div, cfg.num_labels) == (FRAMES, 8, CLASSES)
    assert cfg.temporal_shift == VARIANTS[variant][1] and cfg.depths == VARIANTS[variant][0]
    x = torch.randn(2, FRAMES, 3, 32, 32)
    with torch.no_grad():
        ref = oracle(x.reshape(2, FRAMES * 3, 32, 32))  # TSM's input: a video's frames stacked on channels
        out = model(x)
        per_frame = model.forward_head(model.backbone(x.reshape(2 * FRAMES, 3, 32, 32), FRAMES)).view(2, FRAMES, -1)
    diff = (out.logits - ref).abs().max().item()
    assert diff / ref.abs().max().item() <= 1e-4, diff
    # logits of the frame-averaged features = the TSN average of the per-frame logits (the head is affine)
    torch.testing.assert_close(out.logits, per_frame.mean(1), rtol=1e-5, atol=1e-5)
    assert out.embeddings.shape == (2, 256) == (2, cfg.hidden_size)


def test_shift_is_in_the_residual_branch_and_every_other_block_for_resnet101(tmp_path):
    shifted = TSMConfig(depths=(1, 1, 23, 1))
    assert shifted.shift_every == 2 and [shifted.shifted(2, i) for i in range(4)] == [True, False, True, False]
    assert TSMConfig().shift_every == 1 and not TSMConfig(temporal_shift=False).shifted(0, 0)
    x = torch.arange(2 * 4 * 16, dtype=torch.float32).view(2 * 4, 16, 1, 1)
    out = ft.temporal_shift(x, 4, 8).view(2, 4, 16)
    ref = TemporalShift.shift(x, 4, 8).view(2, 4, 16)
    assert torch.equal(out, ref) and (out[:, -1, :2] == 0).all() and (out[:, 0, 2:4] == 0).all()


def test_sampling_and_settings_come_from_the_file_name(tmp_path):
    dense = ft._file_settings(tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth")
    assert (dense["num_frames"], dense["shift_div"]) == (8, 8)
    assert dense["sampling"].mode == "dense" and dense["sampling"].frame_stride == 8  # 64 // 8, I3D-style
    uniform = ft._file_settings(tmp_path / "TSM_something_RGB_resnet50_shift4_blockres_avg_segment16_e45.pth")
    assert (uniform["num_frames"], uniform["shift_div"]) == (16, 4)
    assert uniform["sampling"].mode == "uniform" and uniform["sampling"].clip_seconds is None
    default = ft._file_settings(tmp_path / "model.pth")
    assert (default["num_frames"], default["shift_div"]) == (8, 8)
    path, _ = _write(tmp_path)
    cfg = load_model(path).config
    assert cfg.sampling.mode == "uniform" and cfg.image_mean == (0.485, 0.456, 0.406) and cfg.image_size == 224


@pytest.mark.parametrize("damage,named", [("drop", "missing"), ("add", "unexpected"), ("shape", "shape mismatch")])
def test_strict_key_errors_name_every_key(tmp_path, damage, named):
    path, _ = _write(tmp_path)
    data = torch.load(path, weights_only=True)
    state = data["state_dict"]
    victim = "module.base_model.layer3.1.conv1.net.weight"
    if damage == "drop":
        del state["module.base_model.layer3.1.bn2.running_var"]
        victim = "module.base_model.layer3.1.bn2.running_var"
    elif damage == "add":
        victim = "module.base_model.layer9.0.conv1.weight"
        state[victim] = torch.zeros(1)
    else:
        state[victim] = torch.zeros(3, 3, 1, 1)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=rf"{named} \[[^\]]*{re.escape(victim)}"):
        load_model(path)


def test_an_unshifted_block_in_a_shifted_model_is_named(tmp_path):
    path, _ = _write(tmp_path)
    data = torch.load(path, weights_only=True)
    state = data["state_dict"]
    state["module.base_model.layer2.1.conv1.weight"] = state.pop("module.base_model.layer2.1.conv1.net.weight")
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"missing \['module.base_model.layer2.1.conv1.net.weight'\]"):
        load_model(path)


@pytest.mark.parametrize("extra,message", [
    ({"module.base_model.layer2.0.nl.g.weight": torch.zeros(1)}, "non-local"),
    ({"module.base_model.layer2.net.0.conv1.weight": torch.zeros(1)}, "temporal pooling"),
])
def test_unsupported_tsm_variants_are_refused_clearly(tmp_path, extra, message):
    path, _ = _write(tmp_path)
    data = torch.load(path, weights_only=True)
    data["state_dict"].update(extra)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_other_backbones_and_modalities_are_refused(tmp_path):
    mobilenet = {"module.base_model.features.0.0.weight": torch.zeros(32, 3, 3, 3), "module.new_fc.weight": torch.zeros(2, 8)}
    torch.save({"state_dict": mobilenet}, tmp_path / "TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth")
    with pytest.raises(CheckpointError, match="MobileNetV2 backbone is not supported"):
        load_model(tmp_path / "TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth")
    torch.save({"arch": "BNInception", "state_dict": mobilenet}, tmp_path / "bninception.pth")
    with pytest.raises(CheckpointError, match="BNInception backbone is not supported"):
        load_model(tmp_path / "bninception.pth")
    path, _ = _write(tmp_path)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["module.base_model.conv1.weight"] = torch.zeros(16, 10, 7, 7)
    torch.save(data, tmp_path / "TSM_kinetics_Flow_resnet50_shift8_blockres_avg_segment8_e50.pth")
    with pytest.raises(CheckpointError, match="Flow / RGBDiff"):
        load_model(tmp_path / "TSM_kinetics_Flow_resnet50_shift8_blockres_avg_segment8_e50.pth")


def test_other_files_are_refused(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a PyTorch checkpoint"):
        load_model(tmp_path / "text.pth")
    for state in ({"s1.pathway0_stem.conv.weight": torch.zeros(1)},           # PySlowFast
                  {"blocks.0.conv.conv_t.weight": torch.zeros(1)},            # pytorchvideo
                  {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}):  # torchvision ResNet
        torch.save({"state_dict": state, "model_state": state}, tmp_path / "other.pth")
        assert not ft._sniff(read_checkpoint(tmp_path / "other.pth"))
    with pytest.raises(CheckpointError, match="no known family"):
        load_model(tmp_path / "other.pth")


def test_labels_give_a_fresh_head_and_directories_round_trip(tmp_path):
    path, _ = _write(tmp_path)
    model = load_model(path)
    relabelled = load_model(path, labels=["x", "y"])
    x = torch.randn(1, FRAMES, 3, 32, 32)
    with torch.no_grad():
        assert relabelled(x).logits.shape == (1, 2)
        torch.testing.assert_close(relabelled.forward_features(x), model.forward_features(x))
    model.save_pretrained(tmp_path / "falv")
    assert json.loads((tmp_path / "falv" / "config.json").read_text())["model_type"] == "falv_tsm"
    loaded = load_model(tmp_path / "falv")
    assert family_of(loaded) == "tsm" and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    assert load_model(tmp_path / "falv", labels=["a", "b", "c"])(x).logits.shape == (1, 3)
    from falv.model.x3d import X3DForVideoClassification

    with pytest.raises(CheckpointError, match="model_type 'falv_tsm', not 'falv_x3d'"):
        X3DForVideoClassification.from_pretrained(tmp_path / "falv")


def test_meta_device_autocast_batch_of_one_and_other_clip_lengths():
    cfg = TSMConfig(stem_width=8, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), num_frames=4, image_size=32,
                    num_labels=3)
    assert count_flops(cfg) > 0
    model = TSMForVideoClassification(cfg).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 4, 3, 32, 32))
    assert out.logits.shape == (1, 3) and torch.isfinite(out.logits.float()).all()
    assert model(torch.randn(1, 6, 3, 32, 32)).logits.shape == (1, 3)
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model(torch.randn(4, 3, 32, 32))
    model.train()
    model(torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
    assert model.backbone.conv1.weight.grad is not None


def test_presets_have_resnet_sizes():
    """TSM-R50 (torchvision ResNet-50 + a 400-class new_fc): 24.33 M parameters; 8 frames of 224:
    32.7 G multiply-adds (TSM paper: 33 GFLOPs), 65.4 G in falv's count (2 per MAC)."""
    r50 = tsm_preset("tsm_r50", num_labels=400)
    assert count_parameters(r50) == 23_508_032 + 2048 * 400 + 400
    assert abs(count_flops(r50) / 2e9 / 33.0 - 1) < 0.015
    assert count_parameters(tsm_preset("tsm_r101", num_labels=400)) == 42_500_160 + 2048 * 400 + 400
    with pytest.raises(ConfigError, match="valid presets"):
        tsm_preset("tsm_mobilenetv2")


@pytest.mark.parametrize("bad,message", [
    (dict(depths=(3, 4, 6)), "depths needs 4 entries"),
    (dict(shift_place="block"), "shift_place"),
    (dict(shift_round=0), "shift_round"),
    (dict(model_type="falv_x3d"), "model_type"),
    (dict(image_mean=(0.5,)), "one value per channel"),
])
def test_invalid_configs_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        TSMConfig(**bad)


def test_config_json_round_trip():
    cfg = tsm_preset("tsm_r101", id2label={0: "a", 1: "b"}, shift_round=1)
    assert TSMConfig.from_dict(json.loads(cfg.to_json_string())) == cfg


def test_preprocessing_scales_the_short_side_to_256_then_crops_224_as_tsm_tests():
    from falv.processing import FALImageProcessor

    processor = FALImageProcessor.from_config(TSMConfig(num_labels=2))
    assert processor.size == {"shortest_edge": 256} and processor.crop_size == {"height": 224, "width": 224}
    with pytest.raises(ConfigError, match="resize_size"):
        TSMConfig(num_labels=2, resize_size=200)
