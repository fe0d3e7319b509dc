"""The PySlowFast ResNet family (falv.model.slowfast) against pytorchvideo, the reference
implementation of the same architectures, at tiny widths with random weights and random
BatchNorm statistics.

Each tiny variant is built with pytorchvideo (``create_resnet`` / ``create_slowfast``; non-local
blocks are pytorchvideo's ``create_nonlocal`` inserted after the blocks PySlowFast puts them
after, time folded into the batch for ``nonlocal_group`` as PySlowFast's ResStage does) and
written in the three original layouts, each as the original code writes it:

(a) a pytorchvideo hub ``.pyth``: ``{"model_state": model.state_dict()}``;
(b) a PySlowFast ``.pyth``: ``{"epoch", "model_state", "optimizer_state", "cfg"}`` with the
    weights under PySlowFast's names (this file's own renaming) and the run's YAML;
(c) a Caffe2 ``.pkl``: ``pickle`` of ``{"blobs": {name: numpy array}}`` under Caffe2 names (the
    inverse of PySlowFast's ``c2_model_loading`` rules, written here), with solver blobs.

Each loads through :func:`falv.hub.families.load_model` (auto-detected) and its logits (the
projection, before any softmax) must equal pytorchvideo's within 1e-4 relative.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from falv.errors import CheckpointError, ConfigError
from falv.hub.families import Checkpoint, detect, family, load_model, read_checkpoint
from falv.model import slowfast as sf
from falv.model.slowfast import (
    PYSLOWFAST_PRESETS,
    PySlowFastConfig,
    PySlowFastForVideoClassification,
    count_flops,
    count_parameters,
    pyslowfast_preset,
)
from tests.oracles import pytorchvideo, randomize_batch_norm

NUM_CLASSES = 5
SIZE = 64  # final feature map 2x2


@pytest.fixture(scope="module")
def pv():
    return pytorchvideo()


@pytest.fixture(autouse=True, scope="module")
def _small_model_cpu_settings():
    """Random tiny ResNets make denormal activations, which x86 can compute many times slower;
    they are far below the 1e-4 this file compares at, so they are flushed while these tests
    run. One intra-op thread: these models are too small to gain from two, and on a shared
    machine the second thread's spin-waits doubled the module's time."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


# -- the oracle's tiny variants ------------------------------------------------------------------


class _WithNonlocal(nn.Module):
    """A pytorchvideo res block followed by pytorchvideo's NonLocal; ``group`` > 1 folds time into
    the batch around it as PySlowFast's ResStage does."""

    def __init__(self, block: nn.Module, nonlocal_: nn.Module, group: int) -> None:
        super().__init__()
        self.block, self.nonlocal_, self.group = block, nonlocal_, group

    def forward(self, x):
        x = self.block(x)
        if self.group == 1:
            return self.nonlocal_(x)
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * self.group, t // self.group, c, h, w).permute(0, 2, 1, 3, 4)
        y = self.nonlocal_(y)
        return y.permute(0, 2, 1, 3, 4).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def _insert_nonlocal(pv, stage: nn.Module, indices, dim: int, instantiation: str, group: int = 1) -> None:
    from pytorchvideo.layers.nonlocal_net import create_nonlocal

    for i in indices:
        stage.res_blocks[i] = _WithNonlocal(
            stage.res_blocks[i],
            create_nonlocal(dim_in=dim, dim_inner=dim // 2, pool_size=(1, 2, 2), instantiation=instantiation), group)


def _resnet(pv, **kw):
    base = dict(input_channel=3, model_depth=50, model_num_class=NUM_CLASSES, dropout_rate=0.0, stem_dim_out=8,
                head_pool=nn.AdaptiveAvgPool3d, head_output_size=(1, 1, 1))
    return pv.resnet.create_resnet(**{**base, **kw})


def _slowfast(pv, **kw):
    base = dict(input_channels=(3, 3), model_depth=50, model_num_class=NUM_CLASSES, dropout_rate=0.0,
                stem_dim_outs=(16, 2), slowfast_channel_reduction_ratio=(8,), slowfast_conv_channel_fusion_ratio=2,
                head_pool=nn.AdaptiveAvgPool3d, head_output_size=(1, 1, 1))
    return pv.slowfast.create_slowfast(**{**base, **kw})


_I3D_KERNELS = ((3, 1, 1), [(3, 1, 1), (1, 1, 1)], [(3, 1, 1), (1, 1, 1)], [(1, 1, 1), (3, 1, 1)])


def _cfg(arch, width, frames, rate, depth=50, **sections):
    cfg = {"MODEL": {"ARCH": arch, "MODEL_NAME": "SlowFast" if arch == "slowfast" else "ResNet",
                     "NUM_CLASSES": NUM_CLASSES, "DROPOUT_RATE": 0.5},
           "RESNET": {"DEPTH": depth, "WIDTH_PER_GROUP": width, "NUM_GROUPS": 1, "TRANS_FUNC": "bottleneck_transform",
                      "ZERO_INIT_FINAL_BN": True, "STRIDE_1X1": False},
           "DATA": {"NUM_FRAMES": frames, "SAMPLING_RATE": rate, "TRAIN_CROP_SIZE": 224, "TEST_CROP_SIZE": 256,
                    "INPUT_CHANNEL_NUM": [3, 3] if arch == "slowfast" else [3]},
           "TRAIN": {"CHECKPOINT_TYPE": "pytorch"}, "NUM_GPUS": 8}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def build(pv, name):
    """(oracle model, PySlowFast cfg dict, frames, flags) of one tiny variant."""
    torch.manual_seed(0)
    hub, c2_cfg = True, False
    if name == "c2d":
        model = _resnet(pv, stem_conv_kernel_size=(1, 7, 7), stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=((1, 1, 1),) * 4)
        cfg, frames = _cfg("c2d", 8, 8, 8, NONLOCAL={"INSTANTIATION": "softmax"}), 8
        c2_cfg = True  # a Caffe2 C2D is the zoo's C2D_NOPOOL unless a cfg says otherwise
    elif name == "i3d":
        model = _resnet(pv, stem_conv_kernel_size=(5, 7, 7), stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=_I3D_KERNELS)
        cfg, frames = _cfg("i3d", 8, 8, 8, RESNET={"NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]]}), 8
    elif name == "i3d_nln":
        model = _resnet(pv, stem_conv_kernel_size=(5, 7, 7), stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=_I3D_KERNELS)
        _insert_nonlocal(pv, model.blocks[3], (1, 3), 64, "softmax")
        _insert_nonlocal(pv, model.blocks[4], (1, 3, 5), 128, "softmax")
        cfg = _cfg("i3d", 8, 8, 8, NONLOCAL={"LOCATION": [[[]], [[1, 3]], [[1, 3, 5]], [[]]],
                                             "GROUP": [[1], [1], [1], [1]], "INSTANTIATION": "softmax"})
        frames, hub = 8, False
    elif name == "slow":
        model = _resnet(pv, stem_conv_kernel_size=(1, 7, 7))
        cfg, frames = _cfg("slow", 8, 8, 8), 8
    elif name == "slow_dilated":  # PySlowFast SPATIAL_STRIDES [[1],[2],[2],[1]], SPATIAL_DILATIONS [..., [2]]
        model = _resnet(pv, stem_conv_kernel_size=(1, 7, 7), stage_spatial_h_stride=(1, 2, 2, 1),
                        stage_spatial_w_stride=(1, 2, 2, 1),
                        stage_conv_b_dilation=((1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 2, 2)))
        cfg = _cfg("slow", 8, 4, 16, RESNET={"SPATIAL_STRIDES": [[1], [2], [2], [1]],
                                              "SPATIAL_DILATIONS": [[1], [1], [1], [2]]})
        frames, hub, c2_cfg = 4, False, True  # strides and dilations are not in the weights
    elif name == "slowfast_8x8":
        model = _slowfast(pv, slowfast_fusion_conv_kernel_size=(7, 1, 1), slowfast_fusion_conv_stride=(4, 1, 1))
        cfg = _cfg("slowfast", 16, 32, 2, SLOWFAST={"ALPHA": 4, "BETA_INV": 8, "FUSION_CONV_CHANNEL_RATIO": 2,
                                                    "FUSION_KERNEL_SZ": 7},
                   RESNET={"NUM_BLOCK_TEMP_KERNEL": [[3, 3], [4, 4], [6, 6], [3, 3]],
                           "SPATIAL_STRIDES": [[1, 1], [2, 2], [2, 2], [2, 2]]})
        frames = 16
    elif name == "slowfast_4x16":
        model = _slowfast(pv, slowfast_fusion_conv_kernel_size=(5, 1, 1), slowfast_fusion_conv_stride=(8, 1, 1))
        cfg = _cfg("slowfast", 16, 32, 2, SLOWFAST={"ALPHA": 8, "FUSION_KERNEL_SZ": 5})
        frames = 16
    elif name == "slowfast_r101_16x8":  # pytorchvideo's slowfast_16x8_r101_50_50 kernels
        kernels = (((1, 1, 1), (1, 1, 1), ((3, 1, 1),) * 6 + ((1, 1, 1),) * 17, (3, 1, 1)),
                   ((3, 1, 1), (3, 1, 1), ((3, 1, 1),) * 6 + ((1, 1, 1),) * 17, (3, 1, 1)))
        model = _slowfast(pv, model_depth=101, slowfast_fusion_conv_kernel_size=(5, 1, 1),
                          slowfast_fusion_conv_stride=(4, 1, 1), stage_conv_a_kernel_sizes=kernels)
        cfg = _cfg("slowfast", 16, 64, 2, depth=101, SLOWFAST={"ALPHA": 4, "FUSION_KERNEL_SZ": 5},
                   RESNET={"NUM_BLOCK_TEMP_KERNEL": [[3, 3], [4, 4], [6, 6], [3, 3]]})
        frames = 16
    elif name == "slowfast_nln":  # dot_product non-local in the slow pathway, time folded in 2 groups
        model = _slowfast(pv, slowfast_fusion_conv_kernel_size=(5, 1, 1), slowfast_fusion_conv_stride=(4, 1, 1))
        _insert_nonlocal(pv, model.blocks[2].multipathway_blocks[0], (1,), 128, "dot_product", group=2)
        cfg = _cfg("slowfast", 16, 32, 2, SLOWFAST={"ALPHA": 4, "FUSION_KERNEL_SZ": 5},
                   NONLOCAL={"LOCATION": [[[], []], [[1], []], [[], []], [[], []]],
                             "GROUP": [[1, 1], [2, 1], [1, 1], [1, 1]], "INSTANTIATION": "dot_product",
                             "POOL": [[[1, 2, 2], [1, 2, 2]]] * 4})
        frames, hub, c2_cfg = 16, False, True  # the group is not in the weights
    else:  # pragma: no cover
        raise AssertionError(name)
    randomize_batch_norm(model, seed=1)
    return model.eval(), cfg, frames, dict(hub=hub, c2_cfg=c2_cfg)


VARIANTS = ["c2d", "i3d", "i3d_nln", "slow", "slow_dilated", "slowfast_8x8", "slowfast_4x16", "slowfast_r101_16x8",
            "slowfast_nln"]


def oracle_logits(model, cfg, pixel_values):
    x = pixel_values.permute(0, 2, 1, 3, 4)
    if cfg["MODEL"]["ARCH"] == "slowfast":
        t, alpha = x.shape[2], cfg["SLOWFAST"].get("ALPHA", 8)
        slow = torch.index_select(x, 2, torch.linspace(0, t - 1, t // alpha).long())
        inputs = [slow, x]
    else:
        inputs = x
    with torch.no_grad():
        return model(inputs)


# -- this file's own renamings (pytorchvideo -> PySlowFast -> Caffe2) ----------------------------------

_BRANCH = {"branch1_conv": "branch1", "branch1_norm": "branch1_bn", "branch2.conv_a": "branch2.a",
           "branch2.norm_a": "branch2.a_bn", "branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn",
           "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn"}


def _block_name(rest: str) -> str:
    for old, new in _BRANCH.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise AssertionError(rest)


def to_pyslowfast(state, slowfast: bool):
    """pytorchvideo state dict -> PySlowFast's names (the layout of its ``model_state``)."""
    out = {}
    stage_blocks = sorted({int(k.split(".")[1]) for k in state if ".res_blocks." in k})
    stage_of = {j: i + 2 for i, j in enumerate(stage_blocks)}
    for key, value in state.items():
        parts = key.split(".")
        j = int(parts[1])
        if slowfast and j == 0 and parts[2] == "multipathway_blocks":
            new = f"s1.pathway{parts[3]}_stem.{ {'conv': 'conv', 'norm': 'bn'}[parts[4]]}.{parts[5]}"
        elif slowfast and parts[2] == "multipathway_fusion":
            stage = 1 if j == 0 else stage_of[j]
            new = f"s{stage}_fuse.{ {'conv_fast_to_slow': 'conv_f2s', 'norm': 'bn'}[parts[3]]}.{parts[4]}"
        elif not slowfast and j == 0:
            new = f"s1.pathway0_stem.{ {'conv': 'conv', 'norm': 'bn'}[parts[2]]}.{parts[3]}"
        elif parts[2] == "proj":
            new = f"head.projection.{parts[3]}"
        else:
            if slowfast:
                pathway, rest = parts[3], parts[5:]
            else:
                pathway, rest = "0", parts[3:]
            i, rest = rest[0], ".".join(rest[1:])
            prefix = f"s{stage_of[j]}.pathway{pathway}"
            if rest.startswith("nonlocal_."):
                sub = rest[len("nonlocal_."):].replace("norm.", "bn.")
                new = f"{prefix}_nonlocal{i}.{sub}"
            else:
                rest = rest[len("block."):] if rest.startswith("block.") else rest
                new = f"{prefix}_res{i}.{_block_name(rest)}"
        out[new] = value
    return out


_BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def to_caffe2(name: str, blocks_per_stage) -> str | None:
    """PySlowFast name -> the Caffe2 blob name its rules map from (None: not in Caffe2 files)."""
    if name.endswith("num_batches_tracked"):
        return None
    if m := re.match(r"^s1\.pathway(\d)_stem\.conv\.weight$", name):
        return ("t_" if m.group(1) == "1" else "") + "conv1_w"
    if m := re.match(r"^s1\.pathway(\d)_stem\.bn\.(\w+)$", name):
        return ("t_" if m.group(1) == "1" else "") + f"res_conv1_bn_{_BN[m.group(2)]}"
    if m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch1\.weight$", name):
        return ("t_" if m.group(2) == "1" else "") + f"res{m.group(1)}_{m.group(3)}_branch1_w"
    if m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch1_bn\.(\w+)$", name):
        return ("t_" if m.group(2) == "1" else "") + f"res{m.group(1)}_{m.group(3)}_branch1_bn_{_BN[m.group(4)]}"
    if m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])\.weight$", name):
        return ("t_" if m.group(2) == "1" else "") + f"res{m.group(1)}_{m.group(3)}_branch2{m.group(4)}_w"
    if m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])_bn\.(\w+)$", name):
        t = "t_" if m.group(2) == "1" else ""
        return t + f"res{m.group(1)}_{m.group(3)}_branch2{m.group(4)}_bn_{_BN[m.group(5)]}"
    if name == "s1_fuse.conv_f2s.weight":
        return "t_pool1_subsample_w"
    if m := re.match(r"^s1_fuse\.bn\.(\w+)$", name):
        return f"t_pool1_subsample_bn_{_BN[m.group(1)]}"
    if m := re.match(r"^s(\d)_fuse\.conv_f2s\.weight$", name):
        stage = int(m.group(1))
        return f"t_res{stage}_{blocks_per_stage[stage - 2] - 1}_branch2c_bn_subsample_w"
    if m := re.match(r"^s(\d)_fuse\.bn\.(\w+)$", name):
        stage = int(m.group(1))
        return f"t_res{stage}_{blocks_per_stage[stage - 2] - 1}_branch2c_bn_subsample_bn_{_BN[m.group(2)]}"
    if m := re.match(r"^s(\d)\.pathway0_nonlocal(\d+)\.conv_(theta|phi|g|out)\.(weight|bias)$", name):
        return f"nonlocal_conv{m.group(1)}_{m.group(2)}_{m.group(3)}_{'w' if m.group(4) == 'weight' else 'b'}"
    if m := re.match(r"^s(\d)\.pathway0_nonlocal(\d+)\.bn\.(\w+)$", name):
        return f"nonlocal_conv{m.group(1)}_{m.group(2)}_bn_{_BN[m.group(3)]}"
    if name.startswith("head.projection."):
        return "pred_w" if name.endswith("weight") else "pred_b"
    raise AssertionError(name)


def write_files(tmp_path, pv_model, cfg):
    """The variant in the three original layouts: (hub .pyth, PySlowFast .pyth, Caffe2 .pkl)."""
    state = pv_model.state_dict()
    slowfast = cfg["MODEL"]["ARCH"] == "slowfast"
    hub = tmp_path / "hub.pyth"
    torch.save({"model_state": state}, hub)
    psf_state = to_pyslowfast(state, slowfast)
    pyth = tmp_path / "checkpoint_epoch_00001.pyth"
    torch.save({"epoch": 1, "model_state": psf_state, "optimizer_state": {}, "cfg": yaml.safe_dump(cfg)}, pyth)
    blocks = sf.STAGE_DEPTH[cfg["RESNET"]["DEPTH"]]
    blobs = {}
    for name, value in psf_state.items():
        c2 = to_caffe2(name, blocks)
        if c2 is not None:
            blobs[c2] = value.numpy().copy()
            blobs[c2 + "_momentum"] = np.zeros_like(blobs[c2])
    blobs["lr"] = np.array([0.1], dtype=np.float32)
    blobs["model_iter"] = np.array([1000], dtype=np.int64)
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as handle:
        pickle.dump({"blobs": blobs}, handle, protocol=2)
    return hub, pyth, pkl, psf_state


def _write(folder, layout: str = "pyslowfast", variant: str = "slowfast_8x8", name: str | None = None,
           frames: int | None = None, size: int | None = None):
    """(path, oracle): a tiny checkpoint of ``variant`` in ``layout`` (``pyslowfast``,
    ``pytorchvideo`` or ``caffe2``), as the original code writes it; ``frames`` / ``size`` set the
    cfg's DATA.NUM_FRAMES and crop sizes (so commands run on small clips)."""
    model, cfg, _, _ = build(pytorchvideo(), variant)
    if frames is not None:
        cfg["DATA"]["NUM_FRAMES"] = frames
    if size is not None:
        cfg["DATA"].update(TRAIN_CROP_SIZE=size, TEST_CROP_SIZE=size)
    folder.mkdir(parents=True, exist_ok=True)
    hub, pyth, pkl, _ = write_files(folder, model, cfg)
    path = {"pyslowfast": pyth, "pytorchvideo": hub, "caffe2": pkl}[layout]
    if name is not None:
        path = path.rename(folder / name)
    return path, model


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


PARITY: dict[str, float] = {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_pytorchvideo_in_every_layout(pv, tmp_path, variant):
    model, cfg, frames, flags = build(pv, variant)
    hub, pyth, pkl, _ = write_files(tmp_path, model, cfg)
    x = torch.randn(2, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ref = oracle_logits(model, cfg, x)
    assert ref.shape == (2, NUM_CLASSES)
    loads = {"pyslowfast": (pyth, {}), "caffe2": (pkl, {"cfg": yaml.safe_dump(cfg)} if flags["c2_cfg"] else {})}
    if flags["hub"]:
        loads["pytorchvideo"] = (hub, {})
    for layout, (path, options) in loads.items():
        assert detect(path)[0].name == "pyslowfast", layout
        ours = load_model(path, **options)
        assert isinstance(ours, PySlowFastForVideoClassification) and not ours.training
        assert ours.family == "pyslowfast"
        with torch.no_grad():
            out = ours(x)
        rel = _relative(out.logits, ref)
        PARITY[f"{variant}/{layout}"] = rel
        assert rel < 1e-4, f"{variant} {layout}: max relative difference {rel:.2e}"
        assert out.embeddings.shape == (2, ours.config.hidden_size)
        assert ours.config.num_labels == NUM_CLASSES


def test_inferred_architecture_of_files_without_cfg(pv, tmp_path):
    """What a Caffe2 / hub file without cfg gives (the zoo's conventions for what weights do not hold)."""
    model, cfg, _, _ = build(pv, "slowfast_4x16")
    hub, _, pkl, _ = write_files(tmp_path, model, cfg)
    for path in (hub, pkl):
        c = load_model(path).config
        assert (c.arch, c.depth, c.alpha, c.beta_inv, c.fusion_kernel_size, c.width_per_group) == \
               ("slowfast", 50, 8, 8, 5, 16)
        assert c.num_frames == 32 and c.sampling.frame_stride == 2 and c.sampling.fps == 30.0
        assert c.temporal_kernel_basis == (((1,), (5,)), ((1,), (3,)), ((1,), (3,)), ((3,), (3,)), ((3,), (3,)))
        assert c.image_size == 256 and c.image_mean == (0.45,) * 3 and c.image_std == (0.225,) * 3
    model, cfg, frames, _ = build(pv, "i3d_nln")
    _, pyth, pkl, psf_state = write_files(tmp_path, model, cfg)
    c = load_model(pkl).config
    assert (c.arch, c.pool1, c.nonlocal_instantiation) == ("i3d", ((2, 1, 1),), "softmax")
    assert c.nonlocal_location == (((),), ((1, 3),), ((1, 3, 5),), ((),))
    assert c.num_block_temp_kernel == ((3,), (4,), (6,), (3,))
    assert c.temporal_kernel_basis == TEMPORAL_I3D
    # a DDP-saved state ("module." keys) and an older PySlowFast's non-local "norm" read the same
    x = torch.randn(1, frames, 3, SIZE, SIZE)
    ref = oracle_logits(model, cfg, x)
    variant = {"module." + re.sub(r"(_nonlocal\d+)\.bn\.", r"\1.norm.", k): v for k, v in psf_state.items()}
    torch.save({"model_state": variant, "cfg": yaml.safe_dump(cfg)}, tmp_path / "ddp.pyth")
    with torch.no_grad():
        assert _relative(load_model(tmp_path / "ddp.pyth")(x).logits, ref) < 1e-4
    model, cfg, frames, _ = build(pv, "c2d")
    hub, _, pkl, _ = write_files(tmp_path, model, cfg)
    assert load_model(hub).config.pool1 == ((2, 1, 1),)  # the hub layout shows the pool block
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict reads as the hub file does
    x = torch.randn(1, frames, 3, SIZE, SIZE)
    with torch.no_grad():
        assert _relative(load_model(tmp_path / "bare.pth")(x).logits, oracle_logits(model, cfg, x)) < 1e-4
    assert load_model(pkl).config.pool1 == ((1, 1, 1),)  # Caffe2's C2D is C2D_NOPOOL
    model, cfg, _, _ = build(pv, "slowfast_r101_16x8")
    hub, _, _, _ = write_files(tmp_path, model, cfg)
    c = load_model(hub).config
    assert (c.depth, c.alpha, c.num_frames, c.num_block_temp_kernel[2]) == (101, 4, 64, (6, 6))


TEMPORAL_I3D = (((5,),), ((3,),), ((3, 1),), ((3, 1),), ((1, 3),))


def test_cfg_gives_the_config(pv, tmp_path):
    model, cfg, _, _ = build(pv, "slowfast_8x8")
    cfg["DATA"].update(MEAN=[0.4, 0.41, 0.42], STD=[0.2, 0.21, 0.22], TARGET_FPS=25)
    cfg["MODEL"]["HEAD_ACT"] = "sigmoid"
    _, pyth, _, _ = write_files(tmp_path, model, cfg)
    c = load_model(pyth).config
    assert c.model_type == "falv_pyslowfast"
    assert (c.arch, c.alpha, c.fusion_kernel_size, c.num_frames, c.image_size, c.train_crop_size) == \
           ("slowfast", 4, 7, 32, 256, 224)
    assert c.sampling.mode == "dense" and c.sampling.frame_stride == 2 and c.sampling.fps == 25.0
    assert "NUM_FRAMES 32" in c.sampling.source
    assert c.image_mean == (0.4, 0.41, 0.42) and c.image_std == (0.2, 0.21, 0.22)
    assert c.problem_type == "multi_label_classification" and c.head_dropout_prob == 0.5
    assert c.zero_init_final_bn is True


def test_missing_cfg_keys_take_pyslowfast_defaults():
    fields = sf.config_from_cfg({"MODEL": {"ARCH": "i3d", "NUM_CLASSES": 7}})
    c = PySlowFastConfig(**{k: v for k, v in fields.items() if not k.startswith("_")})
    assert (c.depth, c.width_per_group, c.num_frames, c.sampling.frame_stride, c.nonlocal_instantiation) == \
           (50, 64, 8, 8, "dot_product")
    assert c.pool1 == ((2, 1, 1),) and c.num_labels == 7 and c.nonlocal_pool[0] == ((1, 2, 2),)
    for bad in ({"MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D"}}, {"MODEL": {"ARCH": "mvit", "MODEL_NAME": "MViT"}},
                {"MODEL": {"ARCH": "slowfast"}, "DETECTION": {"ENABLE": True}}):
        with pytest.raises(CheckpointError):
            sf.config_from_cfg(bad)


def test_reverse_input_channel_is_folded_into_the_stem(pv, tmp_path):
    """A model trained on BGR (DATA.REVERSE_INPUT_CHANNEL) gives, on falv's RGB input, what it
    gives PySlowFast on the channel-reversed clip."""
    model, cfg, frames, _ = build(pv, "slow")
    cfg["DATA"]["REVERSE_INPUT_CHANNEL"] = True
    _, pyth, _, _ = write_files(tmp_path, model, cfg)
    x = torch.randn(1, frames, 3, SIZE, SIZE)
    ref = oracle_logits(model, cfg, x.flip(2))
    with torch.no_grad():
        assert _relative(load_model(pyth)(x).logits, ref) < 1e-4


def test_nonlocal_block_equals_pytorchvideo(pv):
    from pytorchvideo.layers.nonlocal_net import create_nonlocal

    for instantiation in ("softmax", "dot_product"):
        theirs = create_nonlocal(dim_in=16, dim_inner=8, pool_size=(1, 2, 2), instantiation=instantiation)
        ours = sf.Nonlocal(16, 8, (1, 2, 2), instantiation, PySlowFastConfig(arch="i3d"))
        randomize_batch_norm(theirs, seed=2)
        state = {k.replace("norm.", "bn."): v for k, v in theirs.state_dict().items()}
        ours.load_state_dict(state)
        x = torch.randn(2, 16, 4, 6, 6)
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)


def test_slow_pathway_frames_are_pyslowfasts():
    assert sf.slow_pathway_indices(32, 4).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert sf.slow_pathway_indices(32, 8).tolist() == [0, 10, 20, 31]
    assert sf.slow_pathway_indices(64, 4).tolist() == torch.linspace(0, 63, 16).long().tolist()


# -- strict key maps ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slowfast_files(pv, tmp_path_factory):
    model, cfg, _, _ = build(pv, "slowfast_8x8")
    return write_files(tmp_path_factory.mktemp("sf"), model, cfg), cfg


def _mutate(path, layout, how, tmp_path):
    if layout == "caffe2":
        blobs = pickle.load(open(path, "rb"))["blobs"]  # noqa: S301 - the test's own file
        key, extra = "res3_1_branch2b_bn_riv", "bogus_extra_w"
        if how == "drop":
            del blobs[key]
        elif how == "add":
            blobs[extra] = np.zeros(3, dtype=np.float32)
        else:
            blobs[key] = np.ones(blobs[key].shape[0] + 1, dtype=np.float32)
        out = tmp_path / "mutated.pkl"
        with open(out, "wb") as handle:
            pickle.dump({"blobs": blobs}, handle, protocol=2)
        named = {"drop": "s3.pathway0_res1.branch2.b_bn.running_var", "add": "bogus_extra_w",
                 "reshape": "s3.pathway0_res1.branch2.b_bn.running_var"}[how]
        return out, named
    data = torch.load(path, weights_only=True)
    state = data["model_state"]
    key = ("s3.pathway0_res1.branch2.b_bn.running_var" if layout == "pyslowfast"
           else "blocks.2.multipathway_blocks.0.res_blocks.1.branch2.norm_b.running_var")
    extra = "s9.bogus.weight" if layout == "pyslowfast" else "blocks.9.bogus.weight"
    if how == "drop":
        del state[key]
    elif how == "add":
        state[extra] = torch.zeros(3)
    else:
        state[key] = torch.ones(state[key].shape[0] + 1)
    out = tmp_path / f"mutated_{layout}.pyth"
    torch.save(data, out)
    named = {"drop": "s3.pathway0_res1.branch2.b_bn.running_var", "add": extra,
             "reshape": "s3.pathway0_res1.branch2.b_bn.running_var"}[how]
    return out, named


@pytest.mark.parametrize("layout", ["pyslowfast", "pytorchvideo", "caffe2"])
@pytest.mark.parametrize("how", ["drop", "add", "reshape"])
def test_strict_keys_name_the_key(slowfast_files, tmp_path, layout, how):
    (hub, pyth, pkl, _), _ = slowfast_files
    path = {"pyslowfast": pyth, "pytorchvideo": hub, "caffe2": pkl}[layout]
    mutated, named = _mutate(path, layout, how, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model(mutated)
    message = str(info.value)
    assert named in message
    assert {"drop": "missing", "add": "unexpected", "reshape": "shape mismatch"}[how] in message


def test_cfg_that_disagrees_with_the_weights_is_refused(slowfast_files):
    (_, pyth, _, _), cfg = slowfast_files
    other = {**cfg, "RESNET": {**cfg["RESNET"], "DEPTH": 101}}
    with pytest.raises(CheckpointError, match=r"missing \[s4\.pathway0_res6\.branch2"):
        load_model(pyth, cfg=yaml.safe_dump(other))


def test_other_files_are_refused(pv, tmp_path):
    junk = tmp_path / "junk.pyth"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError):
        load_model(junk)
    other = tmp_path / "other.pyth"
    torch.save({"model_state": {"encoder.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(CheckpointError, match="no known family"):
        load_model(other)
    pkl = tmp_path / "other.pkl"
    with open(pkl, "wb") as handle:
        pickle.dump({"blobs": {"fc_w": np.zeros((2, 2), dtype=np.float32)}}, handle, protocol=2)
    with pytest.raises(CheckpointError):
        load_model(pkl)
    with pytest.raises(CheckpointError, match="not a PySlowFast ResNet"):
        sf.load_pyslowfast_checkpoint(read_checkpoint(other))


def _meta_state(builder):
    with torch.device("meta"):
        return builder().state_dict()


def test_sniff_says_no_to_other_families(pv, tmp_path):
    import importlib

    sniff = family("pyslowfast").sniff
    x3d, r2plus1d = (importlib.import_module(f"pytorchvideo.models.{m}") for m in ("x3d", "r2plus1d"))
    others = {
        # pytorchvideo's X3D, CSN and R(2+1)D hub models (X3D and TSM have their own families)
        "x3d": lambda: x3d.create_x3d(input_clip_length=4, input_crop_size=64),
        "csn": lambda: pv.create_csn(model_depth=50),
        "r2plus1d": lambda: r2plus1d.create_r2plus1d(),
    }
    for name, builder in others.items():
        assert not sniff(Checkpoint({"model_state": _meta_state(builder)}, "torch", tmp_path / name)), name
    x3d_pyslowfast = {"s1.pathway0_stem.conv_xy.weight": torch.zeros(24, 3, 1, 3, 3),
                      "s1.pathway0_stem.conv.weight": torch.zeros(24, 1, 5, 1, 1),
                      "s2.pathway0_res0.branch2.b.weight": torch.zeros(54, 1, 3, 3, 3),
                      "head.conv_5.weight": torch.zeros(432, 192, 1, 1, 1)}
    assert not sniff(Checkpoint({"model_state": x3d_pyslowfast, "cfg": "MODEL:\n  ARCH: x3d\n"}, "torch", tmp_path))
    timesformer = {"cls_token": torch.zeros(1, 1, 8), "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
                   "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
    assert not sniff(Checkpoint({"model_state": timesformer}, "torch", tmp_path))
    tsm = {"module.base_model.conv1.weight": torch.zeros(64, 3, 7, 7),
           "module.base_model.layer1.0.conv1.net.weight": torch.zeros(64, 64, 1, 1)}
    assert not sniff(Checkpoint(tsm, "torch", tmp_path))
    assert not sniff(Checkpoint({"blobs": {"conv1_w": np.zeros((4, 3, 7, 7))}}, "caffe2", tmp_path))


# -- falv directory, labels, interface ------------------------------------------------------------------


def test_save_pretrained_round_trip_and_new_labels(slowfast_files, tmp_path):
    (_, pyth, _, _), _ = slowfast_files
    model = load_model(pyth)
    x = torch.randn(1, 16, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).logits
    model.save_pretrained(tmp_path / "dir")
    assert {p.name for p in (tmp_path / "dir").iterdir()} >= {"config.json", "model.safetensors",
                                                                "preprocessor_config.json"}
    again = load_model(tmp_path / "dir")
    assert again.family == "pyslowfast" and again.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, ref, rtol=0, atol=0)
    for source in (pyth, tmp_path / "dir"):
        relabelled = load_model(source, labels=["a", "b", "c"])
        assert relabelled.config.labels == ["a", "b", "c"]
        assert relabelled.head.projection.weight.shape == (3, model.config.hidden_size)
        torch.testing.assert_close(relabelled.s5.pathway0_res2.branch2.c.weight,
                                   model.s5.pathway0_res2.branch2.c.weight)
    with pytest.raises(CheckpointError, match="cfg="):
        load_model(tmp_path / "dir", cfg="MODEL: {}")


def test_interface_autocast_batch_of_one_and_loss():
    config = pyslowfast_preset("slowfast_r50_8x8", width_per_group=8, num_frames=8, image_size=32,
                               id2label={0: "a", 1: "b"})
    model = PySlowFastForVideoClassification(config).eval()
    x = torch.randn(1, 8, 3, 32, 32)
    out = model(x, labels=torch.tensor([1]))
    assert out.logits.shape == (1, 2) and out.embeddings.shape == (1, config.hidden_size) == (1, 256 + 32)
    assert out.loss is not None and torch.isfinite(out.loss)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        low = model(x).logits
    assert torch.isfinite(low.float()).all()
    nln = PySlowFastForVideoClassification(pyslowfast_preset("i3d_nln_r50_8x8", width_per_group=8, num_frames=4,
                                                             num_labels=3)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.isfinite(nln(torch.randn(1, 4, 3, 32, 32)).logits.float()).all()
    model.train()
    loss = model(torch.randn(2, 8, 3, 32, 32), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert model.head.projection.weight.grad is not None
    with pytest.raises(ValueError, match="alpha"):
        model(torch.randn(1, 2, 3, 32, 32))


# -- config, presets -----------------------------------------------------------------------------------


def test_config_json_round_trip_and_errors(tmp_path):
    config = pyslowfast_preset("i3d_nln_r50_8x8", id2label={0: "x", 1: "y"})
    config.save_pretrained(tmp_path)
    again = PySlowFastConfig.from_json_file(tmp_path / "config.json")
    assert again == config and again.sampling.frame_stride == 8
    assert again.block_temporal_kernels(1, 0) == [3, 1, 3, 1] and again.block_temporal_kernels(3, 0) == [1, 3, 1]
    for bad in (dict(arch="x3d"), dict(depth=34), dict(trans_func="basic_transform"),
                dict(arch="i3d", num_block_temp_kernel=((9,), (4,), (6,), (3,))),
                dict(arch="i3d", nonlocal_location=(((7,),), ((),), ((),), ((),))),
                dict(arch="slowfast", alpha=4, num_frames=2), dict(head_dropout_prob=1.5),
                dict(arch="slowfast", spatial_strides=((0, 0),) * 4), dict(model_type="other")):
        with pytest.raises(ConfigError):
            PySlowFastConfig(**bad)


# pytorchvideo's model zoo table (docs/source/model_zoo.md, "Params (M)"), and its GFLOPs at the
# 256-pixel test crop for the two where its counter and torch's agree to the digit.
ZOO_PARAMS_M = {"c2d_r50_8x8": 24.33, "i3d_r50_8x8": 28.04, "slow_r50_4x16": 32.45, "slow_r50_8x8": 32.45,
                "slowfast_r50_4x16": 34.48, "slowfast_r50_8x8": 34.57, "slowfast_r101_8x8": 62.83,
                "slowfast_r101_16x8": 53.77}
ZOO_GMACS = {"slow_r50_8x8": 54.52, "slowfast_r50_8x8": 65.71}


def test_presets_match_the_zoo(pv):
    for name in PYSLOWFAST_PRESETS:
        config = pyslowfast_preset(name)
        assert config.num_labels == 400 and config.sampling.mode == "dense" and "PySlowFast" in config.sampling.source
        if name in ZOO_PARAMS_M:
            assert round(count_parameters(config) / 1e6, 2) == ZOO_PARAMS_M[name], name
    for name, gmacs in ZOO_GMACS.items():
        assert abs(count_flops(pyslowfast_preset(name)) / 2e9 - gmacs) < 0.01
    from pytorchvideo.models.hub import resnet as hub_resnet
    from pytorchvideo.models.hub import slowfast as hub_slowfast

    pairs = {"slow_r50_8x8": hub_resnet.slow_r50, "i3d_r50_8x8": hub_resnet.i3d_r50, "c2d_r50_8x8": hub_resnet.c2d_r50,
             "slowfast_r50_8x8": hub_slowfast.slowfast_r50, "slowfast_r101_8x8": hub_slowfast.slowfast_r101,
             "slowfast_r101_16x8": hub_slowfast.slowfast_16x8_r101_50_50}
    for name, builder in pairs.items():
        theirs = _meta_state(builder)
        ours = sf.pytorchvideo_to_pyslowfast(theirs)[0]
        with torch.device("meta"):
            expected = PySlowFastForVideoClassification(pyslowfast_preset(name)).state_dict()
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in expected.items()}, name


def test_family_is_registered():
    fam = family("pyslowfast")
    assert "falv_pyslowfast" in fam.model_types and fam.load_checkpoint is not None
    assert set(fam.options) == {"labels", "cfg"}


def test_report_parity():
    """Prints the measured parity (run with -s); the assertions are in the parity test."""
    if PARITY:
        worst = max(PARITY.values())
        print(f"\nPySlowFast parity: {len(PARITY)} loads, worst relative logit difference {worst:.2e}")


@pytest.mark.parametrize("variant", ["slow", "slowfast_8x8"])
def test_test_crop_larger_than_the_training_crop_pools_as_pyslowfasts_head(pv, tmp_path, variant):
    """At a test crop above the training crop, PySlowFast's head average-pools 7x7 (here 2x2: a
    64-pixel training crop) windows at stride 1 and averages the per-position outputs; pytorchvideo's
    head does the same with AvgPool3d and a global average after the projection."""
    model, cfg, frames, _ = build(pv, variant)
    cfg["DATA"]["TRAIN_CROP_SIZE"], cfg["DATA"]["TEST_CROP_SIZE"] = 64, 96  # a 3x3 final map, 2x2 windows
    slowfast = cfg["MODEL"]["ARCH"] == "slowfast"
    alpha = cfg.get("SLOWFAST", {}).get("ALPHA", 1)
    head = model.blocks[-1]
    kernels = [(frames // alpha, 2, 2), (frames, 2, 2)] if slowfast else [(frames, 2, 2)]
    pools = [nn.AvgPool3d(k, stride=1) for k in kernels]
    if slowfast:  # pytorchvideo pools the pathways in the block before the head
        model.blocks[-2] = pv.slowfast.PoolConcatPathway(retain_list=False, pool=nn.ModuleList(pools))
    else:
        head.pool = pools[0]
    head.output_pool = nn.AdaptiveAvgPool3d(1)  # the mean over the projected positions
    path = write_files(tmp_path, model, cfg)[1]
    x = torch.randn(2, frames, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    ref = oracle_logits(model, cfg, x)
    ours = load_model(path)
    assert ours.config.train_crop_size == 64 and ours.config.image_size == 96
    with torch.no_grad():
        got = ours(x).logits
    assert _relative(got, ref) < 1e-4
    with torch.no_grad():  # and it is not the plain global average
        global_mean = ours.forward_head(torch.cat([y.mean(dim=(2, 3, 4)) for y in _res5(ours, x)], dim=1))
    assert _relative(global_mean, ref) > 1e-3


def _res5(model, x):
    xs = model.s1(model.pathway_inputs(x))
    for stage in range(2, 6):
        if model.config.arch == "slowfast":
            xs = getattr(model, f"s{stage - 1}_fuse")(xs)
        if stage == 3:
            xs = [getattr(model, f"pathway{p}_pool")(y) for p, y in enumerate(xs)]
        xs = getattr(model, f"s{stage}")(xs)
    return xs
