"""TSM (Lin, Gan and Han, "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019;
mit-han-lab/temporal-shift-module) with the interface of :class:`falv.FALForVideoClassification`.

Architecture (TSM's ``ops/models.py`` ``TSN`` with ``is_shift=True``, ``ops/temporal_shift.py``):

* a 2D ResNet-50 / ResNet-101 (torchvision's layout: ``conv1`` 7x7/2, ``bn1``, ReLU, 3x3/2 max-pool,
  ``layer1`` ... ``layer4`` of bottlenecks ``conv1`` 1x1, ``conv2`` 3x3 (strided), ``conv3`` 1x1,
  each with BatchNorm, ``downsample`` = 1x1 conv + BatchNorm when the shape changes; global average
  pool) runs on every frame of the clip: ``(B, T, C, H, W)`` -> ``B*T`` images;
* the temporal shift sits in the residual branch (place ``blockres``): before a bottleneck's
  ``conv1``, of the ``C`` channels, the first ``C // shift_div`` (``shift_div`` 8) take the next
  frame's values, the next ``C // shift_div`` the previous frame's, zeros at the clip's ends; the
  shortcut sees the unshifted input. Every block is shifted, or every other block (the 1st, 3rd, ...)
  of every stage when ``layer3`` has 23 blocks or more (ResNet-101: TSM's ``n_round = 2``);
* TSN consensus ``avg`` over the ``T`` segments of the per-frame logits of ``new_fc`` (dropout
  before it, identity in eval). falv's ``embeddings`` are the mean over frames of the pooled 2048-d
  frame features, and its logits ``head(embeddings)``; as the head is affine, that equals TSM's
  average of the per-frame logits (up to float rounding; the tests check 1e-4 relative).

The shift counts the frames of the clip it is given, so clips of other lengths than ``num_frames``
(TSM's ``n_segment``) run too (TSM itself would need its ``n_segment`` changed).

Original format read (strict key map, one :class:`~falv.errors.CheckpointError` naming every missing,
unexpected and mis-shaped key; ``num_batches_tracked`` buffers optional): TSM's ``main.py``
checkpoints ``{"epoch", "arch", "state_dict", "optimizer", "best_prec1"}`` whose ``state_dict`` is a
``DataParallel`` TSN's: ``module.base_model.<torchvision ResNet names>`` with ``conv1.net`` for the
shifted convolutions (``TemporalShift`` wraps the conv as ``.net``), ``module.new_fc.weight / bias``
(or ``module.base_model.fc`` when TSM trained with dropout 0). The ``module.`` prefix is optional.
falv's own names: ``backbone.<torchvision ResNet names>`` (``conv1`` for shifted ones too: the shift
has no parameters) and ``head``. The depth and widths come from the weights' shapes; the number of
segments (``num_frames``), ``shift_div`` and the sampling from TSM's file name
(``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth``: ``shift8`` -> ``shift_div`` 8,
``segment8`` -> 8 frames, ``_dense`` -> I3D-style dense sampling of 8 frames 64 // 8 = 8 apart,
else TSN's uniform sampling of segments over the whole video), defaulting to 8 and 8 when the name
does not say. TSN checkpoints (no shift: plain ``conv1`` keys, ``TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth``)
load as ``temporal_shift=False``. Input: ImageNet mean / std, 224 px (TSM resizes the short side
to 256 and center-crops 224).

Not supported (refused with a clear error): non-local TSM (``_nl``), temporal pooling (``tpool``),
shift place ``block``, the MobileNetV2 and BN-Inception backbones, Flow / RGBDiff inputs, and
consensus types other than ``avg``.
"""

from __future__ import annotations

import json
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
from falv.model.classifier import FamilyClassifier, FamilyConfig, strict_keys

TSM_MODEL_TYPE = "falv_tsm"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHIFT_PLACES = ("blockres",)
_NUM_STAGES = 4


@accepts_num_labels
@dataclass
class TSMConfig(FamilyConfig):
    """Configuration of :class:`TSMForVideoClassification`.

    ``num_frames`` is TSM's ``n_segment``; ``widths`` are the bottlenecks' inner (3x3) widths per
    stage, their outputs ``expansion`` times wider; ``stem_width`` the 7x7 stem's. The defaults are
    TSM's ResNet-50 on Kinetics (8 segments, shift_div 8, blockres). ``temporal_shift=False`` is TSN.
    ``shift_round``: shift every n-th block of a stage (None: TSM's rule, 2 when ``layer3`` has 23
    blocks or more, else 1). Label and preprocessing fields mean what they mean in
    :class:`falv.FALConfig`.
    """

    ARCHITECTURE: ClassVar[str] = "TSMForVideoClassification"

    num_frames: int = 8
    image_size: int = 224
    # TSM's test transform: the short side scaled to 256 (input_size * 256 // 224), then the centre
    # 224 x 224; falv's preprocessing reads it (FALImageProcessor.from_config)
    resize_size: int | None = 256
    num_channels: int = 3
    stem_width: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    expansion: int = 4
    temporal_shift: bool = True
    shift_div: int = 8
    shift_place: str = "blockres"
    shift_round: int | None = None
    head_dropout_prob: float = 0.5
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    model_type: str = TSM_MODEL_TYPE

    _TUPLES = ("widths", "depths")

    def __post_init__(self) -> None:
        self._normalise_labels()
        for name in self._TUPLES:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list of {_NUM_STAGES} integers, got {value!r}")
            setattr(self, name, tuple(int(x) for x in value))
        self.validate()

    def validate(self) -> None:
        if self.model_type != TSM_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {TSM_MODEL_TYPE!r}")
        for name in ("num_frames", "image_size", "num_channels", "stem_width", "expansion", "shift_div"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.resize_size is not None and (isinstance(self.resize_size, bool) or not isinstance(self.resize_size, int)
                                             or self.resize_size < self.image_size):
            raise ConfigError(f"resize_size (the short side before the centre crop) must be an integer >= "
                              f"image_size ({self.image_size}), got {self.resize_size!r}")
        for name in self._TUPLES:
            values = getattr(self, name)
            if len(values) != _NUM_STAGES:
                raise ConfigError(f"{name} needs {_NUM_STAGES} entries (layer1..layer4), got {values}")
            if any(v <= 0 for v in values):
                raise ConfigError(f"{name} must be positive, got {values}")
        if self.shift_place not in SHIFT_PLACES:
            raise ConfigError(f"shift_place {self.shift_place!r} is not supported; valid: {', '.join(SHIFT_PLACES)}")
        if self.shift_round is not None and (isinstance(self.shift_round, bool) or not isinstance(self.shift_round, int)
                                             or self.shift_round < 1):
            raise ConfigError(f"shift_round must be a positive integer or null, got {self.shift_round!r}")
        if not 0.0 <= self.head_dropout_prob < 1.0:
            raise ConfigError(f"head_dropout_prob must be in [0, 1), got {self.head_dropout_prob}")
        self._validate_labels()

    @property
    def hidden_size(self) -> int:
        """Size of the clip embedding (the pooled frame features, averaged over frames)."""
        return self.widths[-1] * self.expansion

    @property
    def shift_every(self) -> int:
        """TSM's ``n_round``: the shift is in blocks 0, n, 2n, ... of every stage."""
        if self.shift_round is not None:
            return self.shift_round
        return 2 if self.depths[2] >= 23 else 1

    def shifted(self, stage: int, block: int) -> bool:
        """Whether block ``block`` of stage ``stage`` (0-based: ``layer{stage+1}``) shifts its input."""
        return self.temporal_shift and block % self.shift_every == 0


#: TSM's published ResNet backbones (the README's Kinetics / Something-Something models).
TSM_PRESETS: dict[str, dict[str, Any]] = {
    "tsm_r50": dict(depths=(3, 4, 6, 3)),
    "tsm_r101": dict(depths=(3, 4, 23, 3)),
}


def tsm_preset(name: str, **overrides: Any) -> TSMConfig:
    """A :class:`TSMConfig` for a named backbone; keyword arguments override fields."""
    if name not in TSM_PRESETS:
        raise ConfigError(f"unknown TSM preset {name!r}; valid presets: {', '.join(TSM_PRESETS)}")
    return TSMConfig(**{**TSM_PRESETS[name], **overrides})


# -- modules ------------------------------------------------------------------------------------------


def temporal_shift(x: torch.Tensor, frames: int, shift_div: int) -> torch.Tensor:
    """TSM's shift of ``x`` (B*T, C, H, W): channels ``[0, C/div)`` from the next frame, ``[C/div,
    2C/div)`` from the previous one, zeros past the clip's ends, the rest unchanged."""
    nt, c, h, w = x.shape
    x = x.reshape(nt // frames, frames, c, h, w)
    fold = c // shift_div
    left = F.pad(x[:, 1:, :fold], (0, 0, 0, 0, 0, 0, 0, 1))            # frame t <- t + 1
    right = F.pad(x[:, :-1, fold:2 * fold], (0, 0, 0, 0, 0, 0, 1, 0))  # frame t <- t - 1
    return torch.cat([left, right, x[:, :, 2 * fold:]], dim=2).reshape(nt, c, h, w)


class Bottleneck(nn.Module):
    """torchvision's bottleneck (stride on the 3x3), with TSM's shift before ``conv1`` when ``shift``."""

    def __init__(self, dim_in: int, width: int, stride: int, shift: bool, config: TSMConfig) -> None:
        super().__init__()
        dim_out = width * config.expansion
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.shift = shift
        self.shift_div = config.shift_div
        self.conv1 = nn.Conv2d(dim_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, **bn)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, **bn)
        self.conv3 = nn.Conv2d(width, dim_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(dim_out, **bn)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or dim_in != dim_out:
            self.downsample = nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(dim_out, **bn))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = temporal_shift(x, frames, self.shift_div) if self.shift else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class TSMResNet(nn.Module):
    """The 2D ResNet trunk, torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``)."""

    def __init__(self, config: TSMConfig) -> None:
        super().__init__()
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.conv1 = nn.Conv2d(config.num_channels, config.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width, **bn)
        dim_in = config.stem_width
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths)):
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Bottleneck(dim_in, width, stride, config.shifted(stage, i), config))
                dim_in = width * config.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(B*T, C, H, W) -> (B*T, D) pooled frame features."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, frames)
        return x.mean(dim=(2, 3))


class TSMForVideoClassification(FamilyClassifier):
    """TSM (ResNet + temporal shift + TSN average consensus) with the interface of
    :class:`falv.FALForVideoClassification`."""

    config_class = TSMConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TSMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = TSMResNet(config)
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.initialise()

    def init_weights(self) -> None:
        """torchvision's ResNet init (Kaiming-normal fan-out convolutions, unit BatchNorm) and TSM's
        ``new_fc`` init (N(0, 0.001), zero bias)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.init_head()

    def init_head(self) -> None:
        """A fresh head (TSM's ``new_fc`` init): a new label set on loaded weights."""
        nn.init.normal_(self.head.weight, 0.0, 0.001)
        nn.init.zeros_(self.head.bias)

    # -- forward --------------------------------------------------------------------------------
    def conv_bn_pairs(self):
        """``(module, convolution, BatchNorm)`` attribute names where the BatchNorm reads that
        convolution's output and nothing else: what :func:`falv.inference.fold_batch_norms` folds."""
        yield self.backbone, "conv1", "bn1"
        for m in self.backbone.modules():
            if isinstance(m, Bottleneck):
                yield from ((m, f"conv{i}", f"bn{i}") for i in (1, 2, 3))
                if m.downsample is not None:
                    yield m.downsample, "0", "1"

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding (B, D): the pooled frame features averaged over the frames."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        b, t = pixel_values.shape[:2]
        frames = self.backbone(pixel_values.reshape(b * t, *pixel_values.shape[2:]), t)
        return frames.view(b, t, -1).mean(dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (``new_fc`` of the dropped-out features), before any softmax."""
        return self.head(self.dropout(features))

    # -- save / load ------------------------------------------------------------------------------
def count_flops(config: TSMConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1) -> int:
    """FLOPs of one forward pass (torch's counter on the meta device; a multiply-add = 2 FLOPs;
    the shift costs none)."""
    return flops.count_flops(config, num_frames, image_size, batch_size, model_class=TSMForVideoClassification)


def count_parameters(config: TSMConfig) -> int:
    return flops.count_parameters(config, model_class=TSMForVideoClassification)


# -- TSM checkpoints ----------------------------------------------------------------------------------


def _strip_module(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}, "module."
    return state, ""


def _sniff(checkpoint: Checkpoint) -> bool:
    """A TSM / TSN checkpoint: every key under ``base_model.`` or ``new_fc.`` (after ``module.``)."""
    if checkpoint.format != "torch":
        return False
    state, _ = _strip_module(checkpoint.state())
    return (isinstance(state, dict) and any(k.startswith("base_model.") for k in state)
            and all(k.startswith(("base_model.", "new_fc.")) for k in state))


def _refuse_unsupported(state: dict[str, Any], path: Path, arch: Any = None) -> None:
    keys = list(state)
    if isinstance(arch, str) and arch and not arch.lower().startswith("resnet"):
        raise CheckpointError(f"{path}: TSM with a {arch} backbone is not supported (falv reads ResNet TSM)")
    if any(".nl." in k or ".nl_block." in k for k in keys):
        raise CheckpointError(f"{path}: non-local TSM models are not supported (falv reads the plain ResNet TSM)")
    if any(k.startswith("base_model.layer2.net.") for k in keys):
        raise CheckpointError(f"{path}: TSM with temporal pooling (tpool) is not supported")
    if any(re.match(r"base_model\.layer\d\.\d+\.net\.", k) for k in keys):
        raise CheckpointError(f"{path}: TSM's shift place 'block' is not supported (falv reads 'blockres')")
    if "base_model.conv1.weight" not in state or "base_model.layer1.0.conv3.weight" not in state:
        backbone = ("MobileNetV2" if any(k.startswith("base_model.features.") for k in keys) else
                    "BN-Inception" if any("7x7" in k or "inception" in k for k in keys) else "non-ResNet")
        raise CheckpointError(f"{path}: TSM with a {backbone} backbone is not supported (falv reads ResNet TSM)")
    channels = state["base_model.conv1.weight"].shape[1]
    if channels != 3:
        raise CheckpointError(f"{path}: its first convolution takes {channels} channels: Flow / RGBDiff TSM models "
                              "are not supported (falv reads RGB)")


def _file_settings(path: Path) -> dict[str, Any]:
    """Segments, shift_div and sampling from TSM's checkpoint naming (defaults 8, 8, uniform)."""
    name = path.name
    segments = re.search(r"segment(\d+)", name)
    frames = int(segments[1]) if segments else 8
    div = re.search(r"shift(\d+)", name)
    if re.search(r"(^|_)dense(_|\.|$)", name):
        sampling = ClipSampling(mode="dense", frame_stride=max(1, 64 // frames), fps=30.0,
                                source=f"TSM dense_sample: {frames} frames {64 // frames} apart (Kinetics frames "
                                       "extracted at the video's rate, ~30 fps)")
    else:
        sampling = ClipSampling(mode="uniform", clip_seconds=None,
                                source=f"TSM / TSN uniform sampling: {frames} segments over the whole video")
    return dict(num_frames=frames, shift_div=int(div[1]) if div else 8, sampling=sampling)


def _infer(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    def conv1(stage: int) -> torch.Tensor:
        key = f"base_model.layer{stage}.0.conv1"
        value = state.get(f"{key}.net.weight", state.get(f"{key}.weight"))
        if value is None:
            raise CheckpointError(f"{path}: no {key}.weight / {key}.net.weight: not a ResNet TSM")
        return value

    depths = []
    for stage in range(1, _NUM_STAGES + 1):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"base_model\.layer{stage}\.(\d+)\.", k))}
        if not blocks:
            raise CheckpointError(f"{path}: no base_model.layer{stage}: not a ResNet TSM")
        depths.append(max(blocks) + 1)
    widths = tuple(conv1(s).shape[0] for s in range(1, _NUM_STAGES + 1))
    head = state.get("new_fc.weight", state.get("base_model.fc.weight"))
    if head is None:
        raise CheckpointError(f"{path}: no new_fc.weight (nor base_model.fc.weight): no TSN head")
    return dict(stem_width=state["base_model.conv1.weight"].shape[0], widths=widths, depths=tuple(depths),
                expansion=state["base_model.layer1.0.conv3.weight"].shape[0] // widths[0],
                temporal_shift=any(k.endswith(".conv1.net.weight") for k in state),
                num_labels=head.shape[0])


def to_tsm_key(name: str, config: TSMConfig, fc: str = "new_fc.") -> str:
    """TSM's (DataParallel-less) name of a falv TSM state-dict key."""
    if name.startswith("head."):
        return fc + name[len("head."):]
    name = "base_model." + name[len("backbone."):]
    m = re.match(r"base_model\.layer(\d)\.(\d+)\.conv1\.", name)
    if m and config.shifted(int(m[1]) - 1, int(m[2])):
        name = name.replace(".conv1.", ".conv1.net.", 1)
    return name


def load_tsm_checkpoint(checkpoint: Checkpoint, path: Path, labels: list[str] | None = None) -> TSMForVideoClassification:
    """A :class:`TSMForVideoClassification` from a TSM ``main.py`` checkpoint (module docstring)."""
    raw = checkpoint.state()
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: its weights are not all tensors")
    state, prefix = _strip_module(raw)
    _refuse_unsupported(state, path, checkpoint.data.get("arch"))
    fields = {**_infer(state, path), **_file_settings(path)}
    num_labels = fields.pop("num_labels")
    try:
        config = TSMConfig(**fields, num_labels=num_labels)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    if labels is not None:
        config = config.with_labels(list(labels))
    model = TSMForVideoClassification(config)
    fc = "base_model.fc." if "new_fc.weight" not in state and "base_model.fc.weight" in state else "new_fc."
    names = {k: prefix + to_tsm_key(k, config, fc) for k in model.state_dict()}
    new_head = labels is not None
    expected = {names[k]: v for k, v in model.state_dict().items() if not (new_head and k.startswith("head."))}
    state = {prefix + k: v for k, v in state.items() if not (new_head and k.startswith(fc))}
    strict_keys(state, expected, path, "the TSM its shapes and name describe")
    to_falv = {v: k for k, v in names.items()}
    model.load_state_dict({to_falv[k]: v for k, v in state.items()}, strict=False)
    model.eval()
    return model


def _load_dir(path: Path, config: dict[str, Any], labels: list[str] | None = None) -> TSMForVideoClassification:
    return TSMForVideoClassification.from_pretrained(path, labels=labels)


FAMILIES = [Family(
    name="tsm",
    description="TSM / TSN ResNet-50/101 (mit-han-lab/temporal-shift-module .pth checkpoints; falv directories)",
    model_types=(TSM_MODEL_TYPE,),
    load_dir=_load_dir,
    sniff=_sniff,
    load_checkpoint=load_tsm_checkpoint,
    architectures=("TSMForVideoClassification",),
    presets=TSM_PRESETS,
    config_class=TSMConfig,
    model_class=TSMForVideoClassification,
)]

__all__ = ["TSM_PRESETS", "TSMConfig", "TSMForVideoClassification", "count_flops", "count_parameters",
           "load_tsm_checkpoint", "temporal_shift", "to_tsm_key", "tsm_preset"]
