"""X3D (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020),
as PySlowFast builds it, with the interface of :class:`falv.FALForVideoClassification`.

Architecture (PySlowFast ``slowfast/models/video_model_builder.py`` class ``X3D``, ``resnet_helper.py``
``X3DTransform`` / ``ResBlock``, ``stem_helper.py`` ``X3DStem``, ``head_helper.py`` ``X3DHead``,
``operators.py`` ``SE``):

* stem ``s1.pathway0_stem``: a spatial ``1x3x3`` convolution stride 2 (``conv_xy``), a depthwise
  temporal ``5x1x1`` convolution (``conv``), BatchNorm (``bn``), ReLU;
* four residual stages ``s2`` ... ``s5`` of ``pathway0_res{i}`` blocks, the first of each stage
  striding by 2 in space (never in time): ``branch2`` = ``a`` (1x1x1) + ``a_bn`` + ReLU, ``b``
  (3x3x3, channelwise when ``CHANNELWISE_3x3x3``) + ``b_bn``, squeeze-excitation ``se`` (``fc1``,
  ReLU, ``fc2``, sigmoid; width ``round(0.0625 * inner)`` to a multiple of 8) on every other block
  (the 1st, 3rd, ...) of a stage, Swish, ``c`` (1x1x1) + ``c_bn``; a projection shortcut
  ``branch1`` + ``branch1_bn`` when the width or resolution changes; ReLU after the sum;
* head ``head``: ``conv_5`` (1x1x1 to the last bottleneck width) + ``conv_5_bn`` + ReLU, an average
  pool of kernel ``(NUM_FRAMES, ceil(TRAIN_CROP_SIZE / 32), ...)`` stride 1, ``lin_5`` (1x1x1 to
  ``DIM_C5`` = 2048, no bias, BatchNorm ``lin_5_bn`` only with ``BN_LIN5``) + ReLU, dropout,
  ``projection`` (Linear with bias). Widths and depths follow the expansion factors: stem
  ``round(DIM_C1 * WIDTH_FACTOR)``, stage bases 12/24/48/96, stage depths ``ceil(DEPTH_FACTOR *
  (1, 2, 5, 3))``, bottleneck widths ``int(BOTTLENECK_FACTOR * width)`` (:func:`x3d_dims`).

falv's module names are PySlowFast's, so PySlowFast's ``model_state`` loads as it is.
``logits`` are ``head.projection``'s output, before the softmax PySlowFast's head applies in eval
mode. Where the clip is larger than the head's pool (PySlowFast's multi-crop test at
``TEST_CROP_SIZE`` > ``TRAIN_CROP_SIZE``: X3D-S is trained at 160 and tested at 182), the head runs
fully convolutionally: the pool, ``lin_5`` and the projection are applied at every position and
PySlowFast averages the per-position softmaxes; falv's ``embeddings`` are the mean over positions of
the ``lin_5`` outputs and its logits their projection, i.e. exactly the mean of the per-position
logits (the projection is affine); so ``softmax(logits)`` differs slightly from PySlowFast's
probabilities only in that case (at the train crop there is one position and they are equal).
A clip smaller than the pool (fewer frames, a smaller crop) is pooled globally instead of failing.

Original formats read (strict key maps: one :class:`~falv.errors.CheckpointError` names every
missing, unexpected and mis-shaped key; ``num_batches_tracked`` buffers are optional):

* PySlowFast ``.pyth`` (``{"epoch", "model_state", "optimizer_state", "cfg"}``, ``cfg`` the YAML
  of the run): the architecture from ``X3D.WIDTH_FACTOR``, ``DEPTH_FACTOR``, ``BOTTLENECK_FACTOR``,
  ``DIM_C1``, ``DIM_C5``, ``SCALE_RES2``, ``BN_LIN5``, ``CHANNELWISE_3x3x3`` (PySlowFast's defaults
  where a key is absent), the clip from ``DATA.NUM_FRAMES`` x ``SAMPLING_RATE`` at 30 fps,
  ``TEST_CROP_SIZE`` (``image_size``), ``TRAIN_CROP_SIZE`` (the head pool), ``MEAN`` / ``STD``,
  ``MODEL.NUM_CLASSES``, ``DROPOUT_RATE``. ``MODEL_NAME: PTVX3D`` runs (PySlowFast training
  pytorchvideo's X3D) hold pytorchvideo's key names under ``model.``; they load too.
* pytorchvideo hub ``.pyth`` (``X3D_XS.pyth`` ... ``X3D_L.pyth``: ``{"model_state": ...}`` of
  ``pytorchvideo.models.x3d.create_x3d``): ``blocks.0.conv.conv_t`` (which, in pytorchvideo's naming,
  holds the *spatial* 1x3x3 kernel) -> ``s1.pathway0_stem.conv_xy``, ``blocks.0.conv.conv_xy`` (the
  temporal one) -> ``conv``, ``blocks.0.norm`` -> ``bn``, ``blocks.{s}.res_blocks.{i}`` ->
  ``s{s+1}.pathway0_res{i}`` with ``branch1_conv`` / ``branch1_norm`` -> ``branch1`` /
  ``branch1_bn``, ``branch2.conv_a`` / ``norm_a`` / ``conv_b`` / ``norm_b.0`` / ``norm_b.1.block.0``
  / ``norm_b.1.block.2`` / ``conv_c`` / ``norm_c`` -> ``a`` / ``a_bn`` / ``b`` / ``b_bn`` /
  ``se.fc1`` / ``se.fc2`` / ``c`` / ``c_bn``, ``blocks.5.pool.pre_conv`` / ``pre_norm`` /
  ``post_conv`` / ``post_norm`` -> ``head.conv_5`` / ``conv_5_bn`` / ``lin_5`` / ``lin_5_bn``,
  ``blocks.5.proj`` -> ``head.projection``. pytorchvideo's builder differs from PySlowFast's in one
  place: a projection shortcut that keeps the width (``res2``'s first block: 24 -> 24 channels,
  stride 2) has no BatchNorm (``shortcut_norm_same_width=False``, set for these files). Hub files
  hold no cfg: the architecture is read from the weights' shapes, the clip settings are the X3D
  preset the file name names (``x3d_xs`` / ``x3d_s`` / ``x3d_m`` / ``x3d_l``, any case), else the
  preset whose shapes the weights have (X3D-XS, S and M share theirs: then X3D-M's), else 16 frames
  of 224 with a global head pool; ``load_model(path, cfg="X3D_S.yaml")`` (a PySlowFast config file,
  YAML text or dict) gives the run's settings instead, for any X3D file.

Not supported: Caffe2 ``.pkl`` X3D weights (X3D was released in PyTorch only; PySlowFast's
``c2_model_loading`` renaming covers the Caffe2 ResNet / SlowFast blobs, which the ``pyslowfast``
family reads; its zoo has no X3D ``.pkl``), X3D detection heads, drop-connect, non-BatchNorm norms (sub/sync BN are saved as
plain BatchNorm by PySlowFast), and X3D-XL (no published PySlowFast config; it builds with
:func:`x3d_dims` if wanted).

FLOPs are counted as FAL's are (:func:`falv.model.flops.count_flops`: a multiply-add = 2 FLOPs);
PySlowFast's model zoo counts with fvcore (a multiply-add = 1), so falv's numbers are about twice
the zoo's GFLOPs (:data:`X3D_PRESETS`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from falv.config import ClipSampling, accepts_num_labels
from falv.errors import CheckpointError, ConfigError
from falv.hub.families import Checkpoint, Family
from falv.model import flops
from falv.model.classifier import (FamilyClassifier, FamilyConfig, falv_directory_loader, model_from_original,
                                   read_pyslowfast_cfg)

X3D_MODEL_TYPE = "falv_x3d"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: PySlowFast's Kinetics normalisation (DATA.MEAN / DATA.STD defaults).
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
#: Blocks per stage before the depth factor (PySlowFast ``X3D.block_basis``).
_BASE_DEPTHS = (1, 2, 5, 3)
_NUM_STAGES = 4


def _round_width(width: float, multiplier: float, min_width: int, divisor: int) -> int:
    """PySlowFast's / pytorchvideo's ``round_width``: ``width * multiplier`` to a multiple of
    ``divisor`` (at least ``min_width``), rounded up when rounding lost more than 10%."""
    if not multiplier:
        return int(width)
    width = width * multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


def x3d_dims(width_factor: float = 2.0, depth_factor: float = 2.2, bottleneck_factor: float = 2.25,
             dim_c1: int = 12, scale_res2: bool = False, width_divisor: int = 1) -> dict[str, Any]:
    """``stem_width``, ``widths``, ``depths`` and ``bottleneck_widths`` of an X3D with these
    expansion factors, as PySlowFast's ``X3D`` computes them (``width_divisor=1``: its
    ``round_width`` since 2021; 8: pytorchvideo's ``create_x3d`` and PySlowFast before; the two agree
    for the published factors)."""
    d = width_divisor
    stem = _round_width(dim_c1, width_factor, d, d)
    base = _round_width(dim_c1, 2.0, d, 8) if scale_res2 else dim_c1
    bases = [base]
    for _ in range(_NUM_STAGES - 1):
        bases.append(_round_width(bases[-1], 2.0, d, 8))
    widths = tuple(_round_width(b, width_factor, d, d) for b in bases)
    depths = tuple(int(math.ceil(depth_factor * n)) if depth_factor else n for n in _BASE_DEPTHS)
    inner = tuple(int(bottleneck_factor * w) for w in widths)
    return dict(stem_width=stem, widths=widths, depths=depths, bottleneck_widths=inner)


def se_width(channels: int, ratio: float) -> int:
    """Squeeze-excitation width: PySlowFast's ``SE._round_width(channels, ratio)`` (multiple of 8, >= 8)."""
    return _round_width(channels, ratio, 8, 8)


@accepts_num_labels
@dataclass
class X3DConfig(FamilyConfig):
    """Configuration of :class:`X3DForVideoClassification`.

    The architecture is explicit (``stem_width``, per-stage ``widths``, ``depths`` and
    ``bottleneck_widths``); :func:`x3d_dims` computes them from PySlowFast's expansion factors and
    :data:`X3D_PRESETS` names the published models. The defaults are X3D-S (13 frames, tested at
    182 px, head pool from its 160 px training crop). ``head_pool_size`` is the head's average-pool
    kernel ``(T, H, W)`` (stride 1), PySlowFast's ``(NUM_FRAMES, ceil(TRAIN_CROP_SIZE / 32), ...)``;
    None pools globally. ``shortcut_norm_same_width``: a BatchNorm on a projection shortcut that
    keeps the width (PySlowFast: yes; pytorchvideo: no). Label and preprocessing fields mean what
    they mean in :class:`falv.FALConfig`; ``image_mean`` / ``image_std`` default to PySlowFast's
    Kinetics values.
    """

    ARCHITECTURE: ClassVar[str] = "X3DForVideoClassification"

    num_frames: int = 13
    image_size: int = 182
    num_channels: int = 3
    stem_width: int = 24
    stem_temporal_kernel: int = 5
    widths: tuple[int, ...] = (24, 48, 96, 192)
    depths: tuple[int, ...] = (3, 5, 11, 7)
    bottleneck_widths: tuple[int, ...] = (54, 108, 216, 432)
    temporal_kernel: int = 3
    channelwise_3x3x3: bool = True
    se_ratio: float = 0.0625
    dim_c5: int = 2048
    bn_lin5: bool = False
    shortcut_norm_same_width: bool = True
    head_pool_size: tuple[int, ...] | None = (13, 5, 5)
    head_dropout_prob: float = 0.5
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    image_mean: tuple[float, ...] = KINETICS_MEAN
    image_std: tuple[float, ...] = KINETICS_STD
    model_type: str = X3D_MODEL_TYPE

    _TUPLES = ("widths", "depths", "bottleneck_widths")

    def __post_init__(self) -> None:
        self._normalise_labels()
        for name in self._TUPLES:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list of {_NUM_STAGES} integers, got {value!r}")
            setattr(self, name, tuple(int(x) for x in value))
        if self.head_pool_size is not None:
            if not isinstance(self.head_pool_size, (list, tuple)) or len(self.head_pool_size) != 3:
                raise ConfigError(f"head_pool_size must be (T, H, W) or null, got {self.head_pool_size!r}")
            self.head_pool_size = tuple(int(x) for x in self.head_pool_size)
        self.validate()

    def validate(self) -> None:
        if self.model_type != X3D_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {X3D_MODEL_TYPE!r}")
        for name in ("num_frames", "image_size", "num_channels", "stem_width", "stem_temporal_kernel",
                     "temporal_kernel", "dim_c5"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in self._TUPLES:
            values = getattr(self, name)
            if len(values) != _NUM_STAGES:
                raise ConfigError(f"{name} needs {_NUM_STAGES} entries (stages res2..res5), got {values}")
            if any(v <= 0 for v in values):
                raise ConfigError(f"{name} must be positive, got {values}")
        if self.head_pool_size is not None and any(v <= 0 for v in self.head_pool_size):
            raise ConfigError(f"head_pool_size must be positive, got {self.head_pool_size}")
        if not 0.0 <= self.se_ratio < 1.0:
            raise ConfigError(f"se_ratio must be in [0, 1), got {self.se_ratio}")
        if not 0.0 <= self.head_dropout_prob < 1.0:
            raise ConfigError(f"head_dropout_prob must be in [0, 1), got {self.head_dropout_prob}")
        self._validate_labels()

    @property
    def hidden_size(self) -> int:
        """Size of the clip embedding (``lin_5``'s output, DIM_C5)."""
        return self.dim_c5

def _preset(width_factor: float, depth_factor: float, num_frames: int, train_crop: int, test_crop: int) -> dict:
    spatial = int(math.ceil(train_crop / 32.0))
    return dict(**x3d_dims(width_factor, depth_factor), num_frames=num_frames, image_size=test_crop,
                head_pool_size=(num_frames, spatial, spatial))


#: The published X3D models (PySlowFast ``configs/Kinetics/X3D_*.yaml``): architecture, clip length,
#: test crop (``image_size``) and the head pool of the training crop. Sampling (frames x stride at
#: 30 fps): XS 4x12, S 13x6, M 16x5, L 16x5 (:data:`X3D_SAMPLING`). With 400 classes, measured
#: (falv / PySlowFast MODEL_ZOO): parameters XS, S, M 3.79 M / 3.76 M, L 6.15 M / 6.08 M (pytorchvideo's
#: create_x3d: 3.79 M and 6.15 M too); GFLOPs per view at the training crop, falv's count (2 per
#: multiply-add) / 2 vs the zoo's (fvcore, 1 per multiply-add): S 1.963 / 1.96, M 4.732 / 4.73,
#: L 18.37 / 18.37, XS 0.605 (X3D paper: 0.60).
X3D_PRESETS: dict[str, dict[str, Any]] = {
    "x3d_xs": _preset(2.0, 2.2, 4, 160, 182),
    "x3d_s": _preset(2.0, 2.2, 13, 160, 182),
    "x3d_m": _preset(2.0, 2.2, 16, 224, 256),
    "x3d_l": _preset(2.0, 5.0, 16, 312, 356),
}
#: ``(NUM_FRAMES, SAMPLING_RATE, TRAIN_CROP_SIZE)`` of each preset's PySlowFast config.
X3D_SAMPLING: dict[str, tuple[int, int, int]] = {
    "x3d_xs": (4, 12, 160), "x3d_s": (13, 6, 160), "x3d_m": (16, 5, 224), "x3d_l": (16, 5, 312),
}


def x3d_preset(name: str, **overrides: Any) -> X3DConfig:
    """An :class:`X3DConfig` for a published X3D; keyword arguments override fields (a new
    ``num_frames`` also sets the head pool's temporal size unless ``head_pool_size`` is given)."""
    if name not in X3D_PRESETS:
        raise ConfigError(f"unknown X3D preset {name!r}; valid presets: {', '.join(X3D_PRESETS)}")
    values = dict(X3D_PRESETS[name])
    if "num_frames" in overrides and "head_pool_size" not in overrides and values["head_pool_size"]:
        values["head_pool_size"] = (overrides["num_frames"],) + tuple(values["head_pool_size"][1:])
    values.update(overrides)
    return X3DConfig(**values)


# -- modules (named as PySlowFast's, so its state dict loads as it is) -----------------------------


def _bn(channels: int, config: X3DConfig) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)


class X3DStem(nn.Module):
    """Spatial 1x3x3 conv (stride 2), depthwise temporal Tx1x1 conv, BatchNorm, ReLU."""

    def __init__(self, config: X3DConfig) -> None:
        super().__init__()
        w, kt = config.stem_width, config.stem_temporal_kernel
        self.conv_xy = nn.Conv3d(config.num_channels, w, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv = nn.Conv3d(w, w, (kt, 1, 1), padding=(kt // 2, 0, 0), groups=w, bias=False)
        self.bn = _bn(w, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(self.conv_xy(x))))


class SqueezeExcitation(nn.Module):
    """PySlowFast ``SE``: global average, 1x1x1 conv (``fc1``), ReLU, 1x1x1 conv (``fc2``), sigmoid gate."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        reduced = se_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, reduced, 1, bias=True)
        self.fc2 = nn.Conv3d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))


class X3DTransform(nn.Module):
    """1x1x1 (``a``), Tx3x3 channelwise (``b``, strided), [SE], Swish, 1x1x1 (``c``), each with BatchNorm."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, stride: int, use_se: bool,
                 config: X3DConfig) -> None:
        super().__init__()
        kt = config.temporal_kernel
        groups = dim_inner if config.channelwise_3x3x3 else 1
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = _bn(dim_inner, config)
        self.b = nn.Conv3d(dim_inner, dim_inner, (kt, 3, 3), stride=(1, stride, stride), padding=(kt // 2, 1, 1),
                           groups=groups, bias=False)
        self.b_bn = _bn(dim_inner, config)
        self.se = SqueezeExcitation(dim_inner, config.se_ratio) if use_se else None
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn(dim_out, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        x = self.b_bn(self.b(x))
        if self.se is not None:
            x = self.se(x)
        x = F.silu(x)  # Swish: x * sigmoid(x)
        return self.c_bn(self.c(x))


class X3DBlock(nn.Module):
    """Residual block: ``branch2`` + (projection ``branch1`` + ``branch1_bn``, or identity), ReLU."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, stride: int, use_se: bool,
                 config: X3DConfig) -> None:
        super().__init__()
        self.branch1: nn.Conv3d | None = None
        self.branch1_bn: nn.BatchNorm3d | None = None
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            if dim_in != dim_out or config.shortcut_norm_same_width:
                self.branch1_bn = _bn(dim_out, config)
        self.branch2 = X3DTransform(dim_in, dim_out, dim_inner, stride, use_se, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.branch1 is not None:
            shortcut = self.branch1(x)
            if self.branch1_bn is not None:
                shortcut = self.branch1_bn(shortcut)
        return F.relu(shortcut + self.branch2(x))


class X3DPathway(nn.Module):
    """A PySlowFast single-pathway container: ``pathway0_stem`` or ``pathway0_res{i}`` children."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class X3DHead(nn.Module):
    """``conv_5`` + BN + ReLU, average pool (stride 1), ``lin_5`` [+ BN] + ReLU, dropout, ``projection``."""

    def __init__(self, dim_in: int, dim_inner: int, config: X3DConfig) -> None:
        super().__init__()
        self.pool_size = config.head_pool_size
        self.conv_5 = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.conv_5_bn = _bn(dim_inner, config)
        self.lin_5 = nn.Conv3d(dim_inner, config.dim_c5, 1, bias=False)
        self.lin_5_bn = _bn(config.dim_c5, config) if config.bn_lin5 else None
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.projection = nn.Linear(config.dim_c5, config.num_labels, bias=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, DIM_C5): ``lin_5``'s ReLU output averaged over the pooled positions."""
        x = F.relu(self.conv_5_bn(self.conv_5(x)))
        if self.pool_size is None:
            x = F.adaptive_avg_pool3d(x, 1)
        else:  # PySlowFast's AvgPool3d(pool_size, stride=1), clamped to clips smaller than the pool
            kernel = tuple(min(k, s) for k, s in zip(self.pool_size, x.shape[2:]))
            x = F.avg_pool3d(x.float(), kernel, stride=1).to(x.dtype)  # no bf16 CPU kernel for avg_pool3d
        x = self.lin_5(x)
        if self.lin_5_bn is not None:
            x = self.lin_5_bn(x)
        return F.relu(x).mean(dim=(2, 3, 4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(features))


class X3DForVideoClassification(FamilyClassifier):
    """X3D with the interface of :class:`falv.FALForVideoClassification`; PySlowFast's module names."""

    head_prefix = "head.projection."
    config_class = X3DConfig
    main_input_name = "pixel_values"

    def __init__(self, config: X3DConfig) -> None:
        super().__init__()
        self.config = config
        self.s1 = X3DPathway()
        self.s1.add_module("pathway0_stem", X3DStem(config))
        dim_in = config.stem_width
        for stage, (width, depth, inner) in enumerate(zip(config.widths, config.depths, config.bottleneck_widths)):
            pathway = X3DPathway()
            for i in range(depth):
                block = X3DBlock(dim_in if i == 0 else width, width, inner, 2 if i == 0 else 1,
                                 use_se=config.se_ratio > 0 and (i + 1) % 2 == 1, config=config)
                pathway.add_module(f"pathway0_res{i}", block)
            self.add_module(f"s{stage + 2}", pathway)
            dim_in = width
        self.head = X3DHead(dim_in, config.bottleneck_widths[-1], config)
        self.initialise()

    def init_weights(self) -> None:
        """PySlowFast's ``init_weights``: MSRA-fill convolutions (fan-out, ReLU), unit BatchNorm but a
        zero ``c_bn`` scale in every block (ZERO_INIT_FINAL_BN), N(0, 0.01) projection, zero biases."""
        final = {id(m.branch2.c_bn) for m in self.modules() if isinstance(m, X3DBlock)}
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.constant_(module.weight, 0.0 if id(module) in final else 1.0)
                nn.init.zeros_(module.bias)
        self.init_head()

    def init_head(self) -> None:
        """A fresh ``head.projection`` (N(0, 0.01) weights, zero bias): a new label set on loaded weights."""
        nn.init.normal_(self.head.projection.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.projection.bias)

    # -- forward --------------------------------------------------------------------------------
    def conv_bn_pairs(self):
        """``(module, convolution, BatchNorm)`` attribute names where the BatchNorm reads that
        convolution's output and nothing else: what :func:`falv.inference.fold_batch_norms` folds."""
        for m in self.modules():
            if isinstance(m, X3DStem):
                yield m, "conv", "bn"
            elif isinstance(m, X3DTransform):
                yield from ((m, name, f"{name}_bn") for name in ("a", "b", "c"))
            elif isinstance(m, X3DBlock) and m.branch1_bn is not None:
                yield m, "branch1", "branch1_bn"
            elif isinstance(m, X3DHead):
                yield m, "conv_5", "conv_5_bn"
                if m.lin_5_bn is not None:
                    yield m, "lin_5", "lin_5_bn"

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding (B, DIM_C5): the head's pooled ``lin_5`` features, before dropout and projection."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) -> (B, C, T, H, W), PySlowFast's layout
        for stage in (self.s1, self.s2, self.s3, self.s4, self.s5):
            x = stage(x)
        return self.head.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits: ``head.projection`` of the (dropped-out) features, before any softmax."""
        return self.head(features)

    # -- save / load ------------------------------------------------------------------------------
_HEAD_PREFIX = "head.projection."


def count_flops(config: X3DConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1) -> int:
    """FLOPs of one forward pass (torch's counter on the meta device; a multiply-add = 2 FLOPs)."""
    return flops.count_flops(config, num_frames, image_size, batch_size, model_class=X3DForVideoClassification)


def count_parameters(config: X3DConfig) -> int:
    return flops.count_parameters(config, model_class=X3DForVideoClassification)


# -- original checkpoints ---------------------------------------------------------------------------

_STEM_KEY = "s1.pathway0_stem.conv_xy.weight"
_PV_STEM_KEY = "blocks.0.conv.conv_t.weight"

#: falv (= PySlowFast) names <-> pytorchvideo's ``create_x3d`` names, for the parts that differ
#: (applied in order; the second column is the pytorchvideo side).
_PYTORCHVIDEO_NAMES = [
    (r"^s1\.pathway0_stem\.conv_xy\.", "blocks.0.conv.conv_t."),  # pytorchvideo's conv_t holds the 1x3x3 kernel
    (r"^s1\.pathway0_stem\.conv\.", "blocks.0.conv.conv_xy."),    # and its conv_xy the temporal 5x1x1 one
    (r"^s1\.pathway0_stem\.bn\.", "blocks.0.norm."),
    (r"\.branch1\.", ".branch1_conv."),
    (r"\.branch1_bn\.", ".branch1_norm."),
    (r"\.branch2\.a\.", ".branch2.conv_a."),
    (r"\.branch2\.a_bn\.", ".branch2.norm_a."),
    (r"\.branch2\.b\.", ".branch2.conv_b."),
    (r"\.branch2\.b_bn\.", ".branch2.norm_b.0."),
    (r"\.branch2\.se\.fc1\.", ".branch2.norm_b.1.block.0."),
    (r"\.branch2\.se\.fc2\.", ".branch2.norm_b.1.block.2."),
    (r"\.branch2\.c\.", ".branch2.conv_c."),
    (r"\.branch2\.c_bn\.", ".branch2.norm_c."),
    (r"^head\.conv_5\.", "blocks.5.pool.pre_conv."),
    (r"^head\.conv_5_bn\.", "blocks.5.pool.pre_norm."),
    (r"^head\.lin_5\.", "blocks.5.pool.post_conv."),
    (r"^head\.lin_5_bn\.", "blocks.5.pool.post_norm."),
    (r"^head\.projection\.", "blocks.5.proj."),
]
_FALV_STAGE = re.compile(r"^s([2-5])\.pathway0_res(\d+)\.")
_PV_STAGE = re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.")


def to_pytorchvideo_key(name: str) -> str:
    """pytorchvideo's ``create_x3d`` name of a falv (PySlowFast) X3D state-dict key."""
    name = _FALV_STAGE.sub(lambda m: f"blocks.{int(m[1]) - 1}.res_blocks.{m[2]}.", name)
    for falv, pv in _PYTORCHVIDEO_NAMES:
        name = re.sub(falv, pv, name)
    return name


def from_pytorchvideo_key(name: str) -> str:
    """falv's (PySlowFast's) name of a pytorchvideo ``create_x3d`` state-dict key (others unchanged)."""
    name = _PV_STAGE.sub(lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.", name)
    for falv, pv in _PYTORCHVIDEO_NAMES:
        plain = falv.lstrip("^").replace("\\", "")
        if falv.startswith("^"):
            if name.startswith(pv):
                return plain + name[len(pv):]
        elif pv in name:
            name = name.replace(pv, plain, 1)
    return name


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Without a ``module.`` (DataParallel) and a ``model.`` (PySlowFast's PTVX3D wrapper) prefix."""
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _layout(state: dict[str, Any]) -> str | None:
    """``"pyslowfast"``, ``"pytorchvideo"`` or None, from the key names."""
    if _STEM_KEY in state:
        return "pyslowfast"
    if _PV_STEM_KEY in state and any(k.startswith("blocks.5.pool.pre_conv.") for k in state):
        return "pytorchvideo"
    return None


def _sniff(checkpoint: Checkpoint) -> bool:
    """An X3D checkpoint of PySlowFast (``s1.pathway0_stem.conv_xy``) or pytorchvideo (a
    ``blocks.0.conv.conv_t`` stem and an X3D ``pool.pre_conv`` head)."""
    if checkpoint.format != "torch":
        return False
    state = checkpoint.state()
    return isinstance(state, dict) and _layout(_strip_prefix(state)) is not None



def _get(cfg: dict[str, Any], section: str, key: str, default: Any) -> Any:
    value = (cfg.get(section) or {}).get(key, default)
    return default if value is None else value


def _infer_architecture(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """The architecture fields of a PySlowFast-named X3D state dict, from its shapes."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"{path}: cannot read the X3D architecture from the weights: no {key!r}")
        return tuple(state[key].shape)

    stem = shape(_STEM_KEY)
    widths, depths, inner = [], [], []
    channelwise = True
    for stage in range(2, 2 + _NUM_STAGES):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"s{stage}\.pathway0_res(\d+)\.", k))}
        if not blocks:
            raise CheckpointError(f"{path}: the weights have no stage s{stage} (an X3D has s2..s5)")
        depths.append(max(blocks) + 1)
        widths.append(shape(f"s{stage}.pathway0_res0.branch2.c.weight")[0])
        inner.append(shape(f"s{stage}.pathway0_res0.branch2.a.weight")[0])
        channelwise = channelwise and shape(f"s{stage}.pathway0_res0.branch2.b.weight")[1] == 1
    lin_5 = shape("head.lin_5.weight")
    return dict(num_channels=stem[1], stem_width=stem[0], stem_temporal_kernel=shape("s1.pathway0_stem.conv.weight")[2],
                widths=tuple(widths), depths=tuple(depths), bottleneck_widths=tuple(inner),
                channelwise_3x3x3=channelwise, dim_c5=lin_5[0], bn_lin5="head.lin_5_bn.weight" in state,
                se_ratio=0.0625 if "s2.pathway0_res0.branch2.se.fc1.weight" in state else 0.0,
                num_labels=shape("head.projection.weight")[0])


def _from_cfg(cfg: dict[str, Any], path: Path, width_divisor: int = 1) -> dict[str, Any]:
    """Architecture and data fields of a PySlowFast cfg (its defaults where a key is absent);
    ``width_divisor`` 8 rounds widths as pytorchvideo's builder does (PTVX3D runs, hub files)."""
    try:
        x3d = {k: _get(cfg, "X3D", k, d) for k, d in (("WIDTH_FACTOR", 1.0), ("DEPTH_FACTOR", 1.0),
               ("BOTTLENECK_FACTOR", 1.0), ("DIM_C1", 12), ("DIM_C5", 2048), ("SCALE_RES2", False),
               ("BN_LIN5", False), ("CHANNELWISE_3x3x3", True))}
        frames = int(_get(cfg, "DATA", "NUM_FRAMES", 8))
        rate = int(_get(cfg, "DATA", "SAMPLING_RATE", 8))
        train_crop = int(_get(cfg, "DATA", "TRAIN_CROP_SIZE", 224))
        test_crop = int(_get(cfg, "DATA", "TEST_CROP_SIZE", 256))
        mean = tuple(float(v) for v in _get(cfg, "DATA", "MEAN", list(KINETICS_MEAN)))
        std = tuple(float(v) for v in _get(cfg, "DATA", "STD", list(KINETICS_STD)))
        channels = int((_get(cfg, "DATA", "INPUT_CHANNEL_NUM", [3]) or [3])[0])
        dims = x3d_dims(float(x3d["WIDTH_FACTOR"]), float(x3d["DEPTH_FACTOR"]), float(x3d["BOTTLENECK_FACTOR"]),
                        int(x3d["DIM_C1"]), bool(x3d["SCALE_RES2"]), width_divisor)
        out = dict(**dims, dim_c5=int(x3d["DIM_C5"]), bn_lin5=bool(x3d["BN_LIN5"]),
                   channelwise_3x3x3=bool(x3d["CHANNELWISE_3x3x3"]), num_channels=channels,
                   num_frames=frames, image_size=test_crop,
                   head_pool_size=(frames, int(math.ceil(train_crop / 32.0)), int(math.ceil(train_crop / 32.0))),
                   image_mean=mean, image_std=std, num_labels=int(_get(cfg, "MODEL", "NUM_CLASSES", 400)),
                   head_dropout_prob=float(_get(cfg, "MODEL", "DROPOUT_RATE", 0.5)),
                   sampling=ClipSampling(mode="dense", frame_stride=rate, fps=30.0,
                                         source=f"PySlowFast cfg: DATA.NUM_FRAMES {frames} x SAMPLING_RATE {rate} "
                                                "at 30 fps (Kinetics)"))
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: cannot read the X3D settings of its cfg: {exc}") from exc
    return out


def _data_defaults(path: Path, arch: dict[str, Any]) -> dict[str, Any]:
    """Clip settings of a checkpoint without cfg: the preset its file name names, else the preset
    whose shapes it has (XS/S/M share theirs: M), else 16 frames of 224 pooled globally."""
    stem = path.name.lower()
    name = next((p for p in sorted(X3D_PRESETS, key=len, reverse=True)
                 if re.search(rf"(^|[^a-z0-9]){p}([^a-z0-9]|$)", stem)), None)
    shapes = ("stem_width", "widths", "depths", "bottleneck_widths")
    if name is None:
        for candidate in ("x3d_m", "x3d_l"):
            if all(X3D_PRESETS[candidate][k] == arch[k] for k in shapes) and arch["dim_c5"] == 2048:
                name = candidate
                break
    if name is None:
        return dict(num_frames=16, image_size=224, head_pool_size=None)
    frames, rate, train_crop = X3D_SAMPLING[name]
    preset = X3D_PRESETS[name]
    return dict(num_frames=frames, image_size=preset["image_size"], head_pool_size=preset["head_pool_size"],
                sampling=ClipSampling(mode="dense", frame_stride=rate, fps=30.0,
                                      source=f"PySlowFast configs/Kinetics/{name.upper()}.yaml ({frames} x {rate} at "
                                             "30 fps; the checkpoint holds no cfg)"))


def load_x3d_checkpoint(checkpoint: Checkpoint, path: Path, labels: list[str] | None = None,
                        cfg: Any = None) -> X3DForVideoClassification:
    """An :class:`X3DForVideoClassification` from a PySlowFast or pytorchvideo X3D checkpoint
    (module docstring); ``labels`` replaces the head with a fresh one; ``cfg`` (a PySlowFast config:
    YAML file, YAML text or dict, e.g. ``configs/Kinetics/X3D_S.yaml``) stands for the file's own cfg
    (pytorchvideo hub files have none)."""
    raw = checkpoint.state()
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: its weights are not all tensors")
    state = _strip_prefix(raw)
    layout = _layout(state)
    if layout is None:
        raise CheckpointError(f"{path} is not an X3D checkpoint (no {_STEM_KEY!r} nor pytorchvideo X3D keys)")
    pv = layout == "pytorchvideo"
    file_name = to_pytorchvideo_key if pv else (lambda k: k)
    cfg = read_pyslowfast_cfg(cfg if cfg is not None else checkpoint.data.get("cfg"), path)
    if cfg is not None and isinstance(cfg.get("X3D"), dict):
        fields = _from_cfg(cfg, path, width_divisor=8 if pv else 1)
        what = "the X3D its cfg describes"
    else:  # no cfg (pytorchvideo hub files): the shapes say the architecture
        arch = _infer_architecture({from_pytorchvideo_key(k) if pv else k: v for k, v in state.items()}, path)
        fields = {**arch, **_data_defaults(path, arch)}
        what = "the X3D its shapes describe (it holds no cfg)"
    fields["shortcut_norm_same_width"] = not pv  # pytorchvideo: no BatchNorm on a width-keeping shortcut
    return model_from_original(X3DForVideoClassification, fields, state, path, what, labels, file_name)


_load_dir = falv_directory_loader(X3DForVideoClassification, "PySlowFast / pytorchvideo")


FAMILIES = [Family(
    name="x3d",
    description="X3D XS/S/M/L (PySlowFast .pyth with its cfg, pytorchvideo hub .pyth; falv directories)",
    model_types=(X3D_MODEL_TYPE,),
    load_dir=_load_dir,
    sniff=_sniff,
    load_checkpoint=load_x3d_checkpoint,
    options=("labels", "cfg"),
    architectures=("X3DForVideoClassification",),
    presets=X3D_PRESETS,
    config_class=X3DConfig,
    model_class=X3DForVideoClassification,
)]

__all__ = ["X3D_PRESETS", "X3D_SAMPLING", "X3DConfig", "X3DForVideoClassification", "count_flops", "count_parameters",
           "from_pytorchvideo_key", "load_x3d_checkpoint", "se_width", "to_pytorchvideo_key", "x3d_dims", "x3d_preset"]
