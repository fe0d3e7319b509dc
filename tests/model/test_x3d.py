"""X3D: parity with pytorchvideo's X3D (the oracle) for PySlowFast and pytorchvideo checkpoints,
strict key maps, detection by content, save/load, presets against PySlowFast's model zoo."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from falv.config import ClipSampling
from falv.errors import CheckpointError, ConfigError
from falv.hub.families import family_of, load_model, read_checkpoint
from falv.model import x3d as fx
from falv.model.x3d import X3D_PRESETS, X3DConfig, X3DForVideoClassification, count_flops, x3d_dims, x3d_preset
from tests.oracles import pytorchvideo, randomize_batch_norm

CLASSES = 5


@pytest.fixture(autouse=True)
def _plain_cpu_convolutions(monkeypatch):
    """oneDNN spends most of a second creating a primitive for every new tiny conv shape; torch's
    own kernels run these tiny models in milliseconds (the reference runs under the same setting)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)

#: Tiny X3Ds: DIM_C1 4 (stem and res2 8 wide), DIM_C5 32, depth factor 0.5 -> blocks (1, 1, 3, 2),
#: so SE on every other block shows in res4 and res5.
VARIANTS = {
    "plain": dict(bn_lin5=False),
    "bn_lin5": dict(bn_lin5=True),
}


def _pv_x3d(bn_lin5: bool, pyslowfast_shortcut: bool, seed: int = 0):
    """pytorchvideo's ``create_x3d`` at tiny sizes, random weights and BatchNorm statistics, logits
    out (no softmax). ``pyslowfast_shortcut`` adds the BatchNorm PySlowFast puts on res2's first
    (width-keeping, strided) shortcut, which pytorchvideo's builder leaves out."""
    pytorchvideo()
    import importlib

    x3d = importlib.import_module("pytorchvideo.models.x3d")
    torch.manual_seed(seed)
    model = x3d.create_x3d(input_clip_length=4, input_crop_size=32, model_num_class=CLASSES, stem_dim_in=4,
                           width_factor=2.0, depth_factor=0.5, bottleneck_factor=2.25, head_dim_out=32,
                           head_bn_lin5_on=bn_lin5, head_activation=None, dropout_rate=0.5)
    block = model.blocks[1].res_blocks[0]
    assert block.branch1_conv is not None and block.branch1_norm is None  # pytorchvideo's difference
    if pyslowfast_shortcut:
        block.branch1_norm = torch.nn.BatchNorm3d(block.branch1_conv.out_channels)
    randomize_batch_norm(model, seed=seed)
    return model.eval()


#: pytorchvideo -> PySlowFast names, written out here independently of falv's map.
_PV_TO_PYSLOWFAST = [
    (r"^blocks\.0\.conv\.conv_t\.", "s1.pathway0_stem.conv_xy."),
    (r"^blocks\.0\.conv\.conv_xy\.", "s1.pathway0_stem.conv."),
    (r"^blocks\.0\.norm\.", "s1.pathway0_stem.bn."),
    (r"^blocks\.5\.pool\.pre_conv\.", "head.conv_5."),
    (r"^blocks\.5\.pool\.pre_norm\.", "head.conv_5_bn."),
    (r"^blocks\.5\.pool\.post_conv\.", "head.lin_5."),
    (r"^blocks\.5\.pool\.post_norm\.", "head.lin_5_bn."),
    (r"^blocks\.5\.proj\.", "head.projection."),
    (r"\.branch1_conv\.", ".branch1."),
    (r"\.branch1_norm\.", ".branch1_bn."),
    (r"\.conv_a\.", ".a."), (r"\.norm_a\.", ".a_bn."), (r"\.conv_b\.", ".b."), (r"\.norm_b\.0\.", ".b_bn."),
    (r"\.norm_b\.1\.block\.0\.", ".se.fc1."), (r"\.norm_b\.1\.block\.2\.", ".se.fc2."),
    (r"\.conv_c\.", ".c."), (r"\.norm_c\.", ".c_bn."),
]


def _pyslowfast_state(pv_state: dict) -> dict:
    out = {}
    for key, value in pv_state.items():
        name = re.sub(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.", lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.", key)
        for pattern, repl in _PV_TO_PYSLOWFAST:
            name = re.sub(pattern, repl, name)
        out[name] = value
    return out


def _cfg_yaml(bn_lin5: bool, model_name: str = "X3D") -> str:
    """The part of a PySlowFast run's cfg dump that X3D reads (a real dump holds every key)."""
    cfg = {
        "X3D": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 0.5, "BOTTLENECK_FACTOR": 2.25, "DIM_C5": 32, "DIM_C1": 4,
                "SCALE_RES2": False, "BN_LIN5": bn_lin5, "CHANNELWISE_3x3x3": True},
        "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 6, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 64,
                 "MEAN": [0.45, 0.45, 0.45], "STD": [0.225, 0.225, 0.225], "INPUT_CHANNEL_NUM": [3]},
        "MODEL": {"NUM_CLASSES": CLASSES, "ARCH": "x3d", "MODEL_NAME": model_name, "DROPOUT_RATE": 0.5,
                  "HEAD_ACT": "softmax"},
        "RESNET": {"TRANS_FUNC": "x3d_transform", "ZERO_INIT_FINAL_BN": True},
    }
    return yaml.safe_dump(cfg)


def _write(tmp_path, layout: str, variant: str, name: str | None = None):
    """(path, oracle): a checkpoint exactly as the original code writes it."""
    bn_lin5 = VARIANTS[variant]["bn_lin5"]
    if layout == "pytorchvideo":  # hub file: {"model_state": create_x3d(...).state_dict()}
        oracle = _pv_x3d(bn_lin5, pyslowfast_shortcut=False)
        data = {"model_state": oracle.state_dict()}
    elif layout == "pyslowfast":  # PySlowFast checkpoint.save_checkpoint
        oracle = _pv_x3d(bn_lin5, pyslowfast_shortcut=True)
        data = {"epoch": 1, "model_state": _pyslowfast_state(oracle.state_dict()), "optimizer_state": {},
                "cfg": _cfg_yaml(bn_lin5)}
    else:  # PySlowFast training pytorchvideo's X3D (MODEL_NAME PTVX3D): model.<pytorchvideo names>
        oracle = _pv_x3d(bn_lin5, pyslowfast_shortcut=False)
        data = {"epoch": 1, "model_state": {f"model.{k}": v for k, v in oracle.state_dict().items()},
                "optimizer_state": {}, "cfg": _cfg_yaml(bn_lin5, "PTVX3D")}
    path = tmp_path / (name or f"{layout}_{variant}.pyth")
    torch.save(data, path)
    return path, oracle


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a - b).abs().max().item()
    return diff, diff / b.abs().max().item()


LAYOUTS = ["pyslowfast", "pytorchvideo", "ptvx3d"]


#: 64 px: the test crop above the training crop (32), where PySlowFast's head runs fully
#: convolutionally (its pool, lin_5 and projection at 2x2 positions, averaged). Only a cfg says the
#: training crop; pytorchvideo hub files hold none (their pool comes from the preset their name says),
#: so they are compared at the training crop, and at 64 with the run's cfg given (``cfg=``).
CASES = [(layout, size, cfg) for layout in LAYOUTS for size in (32, 64) for cfg in (False, True)
         if (layout == "pytorchvideo") == cfg or (layout == "pytorchvideo" and size == 32)]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layout,size,given_cfg", CASES)
def test_logits_equal_the_reference_for_the_same_weights(tmp_path, layout, variant, size, given_cfg):
    path, oracle = _write(tmp_path, layout, variant)
    model = load_model(path, cfg=_cfg_yaml(VARIANTS[variant]["bn_lin5"]) if given_cfg else None)
    assert family_of(model) == "x3d" and isinstance(model, X3DForVideoClassification) and not model.training
    x = torch.randn(2, 4, 3, size, size)
    with torch.no_grad():
        ref = oracle(x.permute(0, 2, 1, 3, 4))  # pytorchvideo / PySlowFast take (B, C, T, H, W)
        out = model(x)
    assert out.logits.shape == (2, CLASSES) and out.embeddings.shape == (2, 32)
    diff, rel = _rel(out.logits, ref)
    assert rel <= 1e-4, (diff, rel)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)


def test_config_comes_from_the_cfg(tmp_path):
    path, _ = _write(tmp_path, "pyslowfast", "bn_lin5")
    cfg = load_model(path).config
    assert (cfg.num_frames, cfg.image_size, cfg.head_pool_size, cfg.num_labels) == (4, 64, (4, 1, 1), CLASSES)
    assert cfg.sampling.mode == "dense" and cfg.sampling.frame_stride == 6 and cfg.sampling.fps == 30.0
    assert cfg.sampling.seconds(4) == pytest.approx(0.8)
    assert (cfg.image_mean, cfg.image_std) == ((0.45,) * 3, (0.225,) * 3)
    assert (cfg.stem_width, cfg.widths, cfg.depths, cfg.bottleneck_widths) == (8, (8, 16, 32, 64), (1, 1, 3, 2),
                                                                                (18, 36, 72, 144))
    assert cfg.bn_lin5 and cfg.shortcut_norm_same_width and cfg.dim_c5 == 32 == cfg.hidden_size


def test_hub_files_without_cfg_take_the_preset_their_name_says():
    arch_s = {**fx.x3d_dims(), "dim_c5": 2048}
    for name, frames, stride in [("X3D_XS.pyth", 4, 12), ("X3D_S.pyth", 13, 6), ("x3d_m.pyth", 16, 5),
                                 ("X3D_L.pyth", 16, 5)]:
        got = fx._data_defaults(Path(name), arch_s)
        assert got["num_frames"] == frames and got["sampling"].frame_stride == stride, name
    assert fx._data_defaults(Path("weights.pyth"), arch_s)["head_pool_size"] == (16, 7, 7)
    tiny = {**fx.x3d_dims(2.0, 0.5, 2.25, 4), "dim_c5": 32}
    assert fx._data_defaults(Path("weights.pyth"), tiny) == dict(
        num_frames=16, image_size=224, head_pool_size=None)


def _drop(state, key):
    del state[key]


@pytest.mark.parametrize("layout", ["pyslowfast", "pytorchvideo"])
@pytest.mark.parametrize("damage,named", [
    ("drop", "missing"), ("add", "unexpected"), ("shape", "shape mismatch"),
])
def test_strict_key_errors_name_every_key(tmp_path, layout, damage, named):
    path, _ = _write(tmp_path, layout, "plain")
    data = torch.load(path, weights_only=True)
    state = data["model_state"]
    victim = ("s4.pathway0_res2.branch2.se.fc1.bias" if layout == "pyslowfast"
              else "blocks.3.res_blocks.2.branch2.norm_b.1.block.0.bias")
    if damage == "drop":
        del state[victim]
    elif damage == "add":
        victim = "s9.extra.weight" if layout == "pyslowfast" else "blocks.9.extra.weight"
        state[victim] = torch.zeros(1)
    else:
        state[victim] = torch.zeros(3)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=rf"{named} \[[^\]]*{re.escape(victim)}"):
        load_model(path)


def test_the_width_keeping_shortcut_batchnorm_is_checked_per_layout(tmp_path):
    """A PySlowFast file without res2's shortcut BatchNorm is refused (its cfg says PySlowFast's X3D)."""
    path, _ = _write(tmp_path, "pyslowfast", "plain")
    data = torch.load(path, weights_only=True)
    data["model_state"] = {k: v for k, v in data["model_state"].items() if ".branch1_bn." not in k
                           or not k.startswith("s2.")}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"missing \['s2.pathway0_res0.branch1_bn.bias"):
        load_model(path)


def test_a_cfg_file_stands_for_a_hub_files_missing_cfg(tmp_path):
    path, _ = _write(tmp_path, "pytorchvideo", "plain", name="X3D_S.pyth")
    (tmp_path / "X3D_TINY.yaml").write_text(_cfg_yaml(False))
    named = load_model(path).config  # no cfg: the shapes give the architecture, the name X3D-S's clip
    assert (named.num_frames, named.image_size, named.head_pool_size) == (13, 182, (13, 5, 5))
    assert named.sampling.frame_stride == 6 and named.widths == (8, 16, 32, 64)
    cfg = load_model(path, cfg=tmp_path / "X3D_TINY.yaml").config
    assert (cfg.num_frames, cfg.image_size, cfg.head_pool_size, cfg.shortcut_norm_same_width) == (4, 64, (4, 1, 1), False)
    assert load_model(path, cfg=str(tmp_path / "X3D_TINY.yaml")).config == cfg
    load_model(path, cfg=tmp_path / "X3D_TINY.yaml").save_pretrained(tmp_path / "falv")
    with pytest.raises(CheckpointError, match="falv directory"):
        load_model(tmp_path / "falv", cfg=tmp_path / "X3D_TINY.yaml")


def test_labels_give_a_fresh_head(tmp_path):
    path, _ = _write(tmp_path, "pyslowfast", "plain")
    original = load_model(path)
    relabelled = load_model(path, labels=["x", "y", "z"])
    assert relabelled.config.labels == ["x", "y", "z"] and relabelled.config.sampling == original.config.sampling
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert relabelled(x).logits.shape == (1, 3)
        torch.testing.assert_close(relabelled.forward_features(x), original.forward_features(x))


def test_save_pretrained_round_trip(tmp_path):
    path, _ = _write(tmp_path, "pytorchvideo", "bn_lin5")
    model = load_model(path)
    model.save_pretrained(tmp_path / "falv")
    assert {p.name for p in (tmp_path / "falv").iterdir()} == {"config.json", "model.safetensors",
                                                               "preprocessor_config.json"}
    assert json.loads((tmp_path / "falv" / "config.json").read_text())["model_type"] == "falv_x3d"
    loaded = load_model(tmp_path / "falv")
    assert family_of(loaded) == "x3d" and loaded.config == model.config and not loaded.training
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    fresh = load_model(tmp_path / "falv", labels=["a", "b"])
    assert fresh(x).logits.shape == (1, 2)


def test_other_files_are_refused(tmp_path):
    (tmp_path / "text.pyth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a PyTorch checkpoint"):
        load_model(tmp_path / "text.pyth")
    # a PySlowFast ResNet/SlowFast checkpoint (basic stem) and a TSM one are not X3D
    for state in ({"s1.pathway0_stem.conv.weight": torch.zeros(8, 3, 1, 7, 7)},
                  {"module.base_model.conv1.weight": torch.zeros(8, 3, 7, 7), "module.new_fc.weight": torch.zeros(2, 8)}):
        torch.save({"model_state": state, "state_dict": state}, tmp_path / "other.pth")
        assert not fx._sniff(read_checkpoint(tmp_path / "other.pth"))
    path, _ = _write(tmp_path, "pytorchvideo", "plain")
    with pytest.raises(CheckpointError, match="not an X3D checkpoint"):
        fx.load_x3d_checkpoint(read_checkpoint(tmp_path / "other.pth"), tmp_path / "other.pth")
    assert fx._sniff(read_checkpoint(path))


def test_meta_device_autocast_and_batch_of_one():
    cfg = X3DConfig(**{**x3d_dims(2.0, 0.5, 2.25, 4), "dim_c5": 32, "num_frames": 4, "image_size": 32,
                       "head_pool_size": (4, 1, 1), "num_labels": 3})
    assert count_flops(cfg) > 0
    model = X3DForVideoClassification(cfg).eval()
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.logits.shape == (1, 3) and torch.isfinite(out.logits.float()).all()
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model(torch.randn(4, 3, 32, 32))
    # training: loss, gradients, fewer frames than the pool (clamped to a global pool)
    model.train()
    out = model(torch.randn(2, 2, 3, 32, 32), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert model.head.projection.weight.grad is not None


def test_presets_match_pyslowfast_model_zoo():
    """Parameters with 400 classes and GFLOPs per view at the training crop. PySlowFast's MODEL_ZOO
    lists X3D-S 3.76 M / 1.96 GFLOPs, X3D-M 3.76 M / 4.73, X3D-L 6.08 M / 18.37 (fvcore: a multiply-add
    is one FLOP; falv's counter counts two). falv's X3D-S/M have 3.79 M parameters (pytorchvideo's
    create_x3d builds 3794274: the same less res2's 48 shortcut BatchNorm parameters), X3D-L 6.15 M."""
    zoo = {"x3d_s": (3.76e6, 1.96), "x3d_m": (3.76e6, 4.73), "x3d_l": (6.08e6, 18.37)}
    for name, (params, gflops) in zoo.items():
        cfg = x3d_preset(name, num_labels=400)
        assert abs(fx.count_parameters(cfg) / params - 1) < 0.015, name
        train_crop = fx.X3D_SAMPLING[name][2]
        assert abs(count_flops(cfg, image_size=train_crop) / 2e9 / gflops - 1) < 0.005, name
    assert fx.count_parameters(x3d_preset("x3d_s", num_labels=400)) == 3794322
    assert x3d_preset("x3d_l").depths == (5, 10, 25, 15) and x3d_preset("x3d_m").image_size == 256
    assert x3d_preset("x3d_s").head_pool_size == (13, 5, 5) and x3d_preset("x3d_l").head_pool_size == (16, 10, 10)
    assert x3d_preset("x3d_s", num_frames=16).head_pool_size == (16, 5, 5)
    with pytest.raises(ConfigError, match="valid presets"):
        x3d_preset("x3d_xl")


@pytest.mark.parametrize("bad,message", [
    (dict(widths=(8, 16)), "widths needs 4 entries"),
    (dict(depths=(1, 0, 1, 1)), "depths must be positive"),
    (dict(head_pool_size=(1, 2)), "head_pool_size"),
    (dict(se_ratio=1.5), "se_ratio"),
    (dict(model_type="falv_tsm"), "model_type"),
    (dict(num_frames=0), "num_frames"),
    (dict(image_mean=(0.5,)), "one value per channel"),
])
def test_invalid_configs_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        X3DConfig(**bad)


def test_config_json_round_trip():
    cfg = x3d_preset("x3d_m", id2label={0: "a"}, sampling=ClipSampling(mode="dense", frame_stride=5, fps=30.0))
    assert X3DConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    assert X3DConfig.from_dict(json.loads(X3DConfig(head_pool_size=None).to_json_string())).head_pool_size is None
    assert math.isclose(cfg.clip_seconds, 16 * 5 / 30)
