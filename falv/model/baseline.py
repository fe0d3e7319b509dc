"""A 3D-convolutional baseline: an R(2+1)D-style video classifier.

The README compares FAL against a CNN of similar FLOPs (issue 6, experiment 3);
this is that CNN, written in falv with the same interface as
:class:`falv.FALForVideoClassification`, so the same training and labeling code
runs either: ``forward(pixel_values (B, T, C, H, W), labels=None)`` returns a
:class:`~falv.model.transformer.VideoClassifierOutput` (``logits``, ``loss``,
``embeddings``), and ``forward_features`` / ``forward_head`` split it.

Architecture (Tran et al., "A Closer Look at Spatiotemporal Convolutions for
Action Recognition", CVPR 2018, R(2+1)D; layout of torchvision's ``r2plus1d_18``):

* every 3D convolution ``t x d x d`` is factorised into a spatial ``1 x d x d``
  convolution to ``M`` channels, BatchNorm, ReLU, then a temporal ``t x 1 x 1``
  convolution, with ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` so the
  pair has the parameters of the full 3D kernel (Tran et al., Sec. 3.5);
* a (2+1)D stem, then residual stages of basic blocks (two (2+1)D convolutions,
  each followed by BatchNorm, ReLU after the sum; a 1x1x1 convolution + BatchNorm
  on the shortcut when the shape changes), downsampling at the first block of a
  stage by the configured spatial and temporal strides;
* global average pooling over (T, H, W): the clip embedding; dropout; linear head.

FLOPs are counted like FAL's (:func:`count_flops`: torch's FLOP counter on the
meta device, a multiply-add = 2 FLOPs, BatchNorm/ReLU/pooling not counted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from falv.config import LabelFields, accepts_num_labels
from falv.errors import ConfigError
from falv.hub.families import Family
from falv.model import flops
from falv.model.classifier import FamilyClassifier, FamilyConfig
from falv.model.transformer import VideoClassifierOutput

BASELINE_MODEL_TYPE = "falv_r2plus1d"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@accepts_num_labels
@dataclass
class R2Plus1DConfig(FamilyConfig):
    """Configuration of :class:`R2Plus1DForVideoClassification`.

    ``widths[i]`` channels and ``depths[i]`` residual blocks in stage ``i``; the
    first block of stage ``i`` strides by ``spatial_strides[i]`` in H and W and by
    ``temporal_strides[i]`` in T. The defaults are the ``tiny`` setting
    (:data:`BASELINE_PRESETS`): 0.33 GFLOP per 8x64x64 clip, 4% less than FAL's
    ``tiny`` preset (0.35 GFLOP), with 2.0 M parameters (FAL tiny: 1.4 M). Label and preprocessing fields mean what
    they mean in :class:`falv.FALConfig`.
    """

    ARCHITECTURE: ClassVar[str] = "R2Plus1DForVideoClassification"

    num_frames: int = 8
    image_size: int = 64
    num_channels: int = 3
    stem_width: int = 24
    stem_kernel: int = 5  # spatial kernel of the stem (torchvision's R(2+1)D-18: 7 at 112 px)
    stem_spatial_stride: int = 4  # as ResNet's 7x7/2 conv + 2x2 max-pool
    widths: tuple[int, ...] = (24, 48, 96, 192)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 2, 2)
    spatial_kernel: int = 3
    temporal_kernel: int = 3
    head_dropout_prob: float = 0.0
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    model_type: str = BASELINE_MODEL_TYPE

    def __post_init__(self) -> None:
        self._normalise_labels()
        for name in ("widths", "depths", "spatial_strides", "temporal_strides"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
            setattr(self, name, tuple(int(x) for x in value))
        self.validate()

    def validate(self) -> None:
        if self.model_type != BASELINE_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {BASELINE_MODEL_TYPE!r}")
        for name in ("num_frames", "image_size", "num_channels", "stem_width", "stem_kernel",
                     "stem_spatial_stride", "spatial_kernel", "temporal_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        stages = len(self.widths)
        if stages == 0:
            raise ConfigError("widths must name at least one stage")
        for name in ("depths", "spatial_strides", "temporal_strides"):
            values = getattr(self, name)
            if len(values) != stages:
                raise ConfigError(f"{name} has {len(values)} entries for {stages} stages (widths)")
            if any(v <= 0 for v in values):
                raise ConfigError(f"{name} must be positive, got {values}")
        if any(w <= 0 for w in self.widths):
            raise ConfigError(f"widths must be positive, got {self.widths}")
        self._validate_labels()
        if not 0.0 <= self.head_dropout_prob < 1.0:
            raise ConfigError(f"head_dropout_prob must be in [0, 1), got {self.head_dropout_prob}")

    # -- derived (labels: LabelFields, the names FALConfig uses) ---------------------------------
    @property
    def hidden_size(self) -> int:
        """Size of the clip embedding (the pooled features of the last stage)."""
        return self.widths[-1]


#: Named settings. ``tiny``: 0.33 GFLOP per 8x64x64 clip, -4% against FAL ``tiny`` (the test checks
#: +-30%). ``r2plus1d_18``: the layout of torchvision's R(2+1)D-18 (16 x 112 x 112 clips; 84 GFLOP,
#: 33.4 M parameters with 400 classes; torchvision's has 31.5 M because it sizes the middle
#: channels of both (2+1)D pairs of a block from the block's input width, and hard-codes 45 in
#: the stem, where falv applies the Sec. 3.5 rule to every pair).
BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "r2plus1d_18": dict(num_frames=16, image_size=112, stem_width=64, stem_kernel=7, stem_spatial_stride=2,
                        widths=(64, 128, 256, 512),
                        depths=(2, 2, 2, 2), spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 2, 2, 2)),
}


def baseline_preset(name: str, **overrides: Any) -> R2Plus1DConfig:
    """An :class:`R2Plus1DConfig` for a named setting; keyword arguments override fields."""
    if name not in BASELINE_PRESETS:
        raise ConfigError(f"unknown baseline preset {name!r}; valid presets: {', '.join(BASELINE_PRESETS)}")
    return R2Plus1DConfig(**{**BASELINE_PRESETS[name], **overrides})


# -- modules --------------------------------------------------------------------------------------


def midplanes(in_channels: int, out_channels: int, spatial_kernel: int, temporal_kernel: int) -> int:
    """Channels between the spatial and the temporal convolution of a (2+1)D pair: the pair
    then has the parameters of one full t x d x d convolution (Tran et al. 2018, Sec. 3.5)."""
    d2, t = spatial_kernel**2, temporal_kernel
    return max(1, (t * d2 * in_channels * out_channels) // (d2 * in_channels + t * out_channels))


class Conv2Plus1D(nn.Sequential):
    """(1 x d x d) spatial conv -> BatchNorm -> ReLU -> (t x 1 x 1) temporal conv (R(2+1)D).

    The BatchNorm + ReLU after the temporal conv belong to the caller (block or stem)."""

    def __init__(self, in_channels: int, out_channels: int, *, spatial_kernel: int, temporal_kernel: int,
                 spatial_stride: int = 1, temporal_stride: int = 1, eps: float = 1e-5, momentum: float = 0.1) -> None:
        mid = midplanes(in_channels, out_channels, spatial_kernel, temporal_kernel)
        super().__init__(
            nn.Conv3d(in_channels, mid, (1, spatial_kernel, spatial_kernel), stride=(1, spatial_stride, spatial_stride),
                      padding=(0, spatial_kernel // 2, spatial_kernel // 2), bias=False),
            nn.BatchNorm3d(mid, eps=eps, momentum=momentum),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, (temporal_kernel, 1, 1), stride=(temporal_stride, 1, 1),
                      padding=(temporal_kernel // 2, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    """Residual block: (2+1)D conv, BN, ReLU, (2+1)D conv, BN, + shortcut, ReLU (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, spatial_stride: int, temporal_stride: int,
                 config: R2Plus1DConfig) -> None:
        super().__init__()
        kw = dict(spatial_kernel=config.spatial_kernel, temporal_kernel=config.temporal_kernel,
                  eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.conv1 = Conv2Plus1D(in_channels, out_channels, spatial_stride=spatial_stride,
                                 temporal_stride=temporal_stride, **kw)
        self.bn1 = nn.BatchNorm3d(out_channels, **bn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = Conv2Plus1D(out_channels, out_channels, **kw)
        self.bn2 = nn.BatchNorm3d(out_channels, **bn)
        self.downsample: nn.Module | None = None
        if spatial_stride != 1 or temporal_stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(temporal_stride, spatial_stride, spatial_stride),
                          bias=False),
                nn.BatchNorm3d(out_channels, **bn),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C_in, T, H, W) -> (B, C_out, T / st, H / ss, W / ss)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class R2Plus1DForVideoClassification(FamilyClassifier):
    """R(2+1)D-style 3D CNN with the interface of :class:`falv.FALForVideoClassification`."""

    config_class = R2Plus1DConfig
    main_input_name = "pixel_values"

    def __init__(self, config: R2Plus1DConfig) -> None:
        super().__init__()
        self.config = config
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.stem = nn.Sequential(
            Conv2Plus1D(config.num_channels, config.stem_width, spatial_kernel=config.stem_kernel,
                        temporal_kernel=config.temporal_kernel, spatial_stride=config.stem_spatial_stride, **bn),
            nn.BatchNorm3d(config.stem_width, **bn),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_channels = config.stem_width
        for width, depth, ss, ts in zip(config.widths, config.depths, config.spatial_strides, config.temporal_strides):
            blocks = [BasicBlock(in_channels, width, ss, ts, config)]
            blocks += [BasicBlock(width, width, 1, 1, config) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.head = nn.Linear(in_channels, config.num_labels)
        self.initialise()

    def init_weights(self) -> None:
        """torchvision's VideoResNet init: Kaiming-normal convs (fan_out, ReLU), unit BatchNorm,
        N(0, 0.01) head, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    # -- forward --------------------------------------------------------------------------------
    def conv_bn_pairs(self):
        """``(conv's parent, conv, BatchNorm's parent, BatchNorm)`` attribute names where the
        BatchNorm reads that convolution's output and nothing else (folded at inference by
        :func:`falv.inference.fold_batch_norms`)."""
        for m in self.modules():
            if isinstance(m, Conv2Plus1D):
                yield m, "0", m, "1"  # spatial conv -> its BatchNorm
            elif isinstance(m, BasicBlock):
                yield m.conv1, "3", m, "bn1"  # temporal conv of the (2+1)D pair -> the block's BatchNorm
                yield m.conv2, "3", m, "bn2"
                if m.downsample is not None:
                    yield m.downsample, "0", m.downsample, "1"
        yield self.stem[0], "3", self.stem, "1"

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding: globally average-pooled last-stage features, (B, widths[-1])."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) -> (B, C, T, H, W), Conv3d's layout
        x = self.stages(self.stem(x))
        return self.pool(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    # -- properties -----------------------------------------------------------------------------
    # -- save / load ------------------------------------------------------------------------------
def count_flops(config: R2Plus1DConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1) -> int:
    """FLOPs of one forward pass, counted as FAL's are (:func:`falv.model.flops.count_flops`:
    torch's FLOP counter on the meta device, a multiply-add = 2 FLOPs, convolutions and
    matmuls only)."""
    return flops.count_flops(config, num_frames, image_size, batch_size, model_class=R2Plus1DForVideoClassification)


def count_parameters(config: R2Plus1DConfig) -> int:
    return flops.count_parameters(config, model_class=R2Plus1DForVideoClassification)


def _load_dir(path: Path, config: dict[str, Any], labels: list[str] | None = None) -> R2Plus1DForVideoClassification:
    return R2Plus1DForVideoClassification.from_pretrained(path, labels=labels)


FAMILIES = [Family(name="r2plus1d", description="falv's R(2+1)D CNN baseline (falv directories)",
                   model_types=(BASELINE_MODEL_TYPE,), load_dir=_load_dir,
                   architectures=("R2Plus1DForVideoClassification",), model_class=R2Plus1DForVideoClassification,
                   config_class=R2Plus1DConfig, presets=BASELINE_PRESETS)]
