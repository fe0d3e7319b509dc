"""The PySlowFast ResNet family: C2D, I3D, I3D/C2D with non-local blocks, Slow and SlowFast.

One model, :class:`PySlowFastForVideoClassification`, builds every ResNet-style video network
of PySlowFast's ``slowfast/models/video_model_builder.py`` (the ``ResNet`` and ``SlowFast``
builders, Feichtenhofer et al., "SlowFast Networks for Video Recognition", ICCV 2019; Wang et
al., "Non-local Neural Networks", CVPR 2018), with falv's interface:
``forward(pixel_values (B, T, C, H, W), labels=None)`` returns ``logits`` (the output of
PySlowFast's ``head.projection``, BEFORE the softmax its head applies in eval mode),
``embeddings`` (the pooled features) and ``loss``.

Architecture (names as in PySlowFast, so its state dicts load without renaming)
------------------------------------------------------------------------------
* ``s1``: one stem per pathway (``s1.pathway{p}_stem``): a ``t x 7 x 7`` convolution (stride
  1x2x2, ``conv``), BatchNorm (``bn``), ReLU, a 1x3x3 max-pool of stride 1x2x2.
* ``s2`` ... ``s5``: residual stages of bottleneck blocks ``s{k}.pathway{p}_res{i}``:
  ``branch2.a`` (``t x 1 x 1``), ``a_bn``, ReLU, ``branch2.b`` (1x3x3, grouped, dilated, strided
  unless ``stride_1x1``), ``b_bn``, ReLU, ``branch2.c`` (1x1x1), ``c_bn``; a projection shortcut
  ``branch1`` + ``branch1_bn`` where the shape changes; ReLU after the sum. ``t`` per block
  follows PySlowFast's ``_TEMPORAL_KERNEL_BASIS[arch]`` repeated over the stage's blocks for the
  first ``NUM_BLOCK_TEMP_KERNEL`` blocks, 1 after (:attr:`PySlowFastConfig.temporal_kernel_basis`,
  :attr:`~PySlowFastConfig.num_block_temp_kernel`).
* non-local blocks ``s{k}.pathway{p}_nonlocal{i}`` after block ``i`` where
  ``nonlocal_location`` says: ``conv_theta``/``conv_phi``/``conv_g`` (1x1x1 to half the
  channels, with bias), max-pool of ``nonlocal_pool`` before phi and g,
  ``softmax(theta^T phi / sqrt(C'))`` (instantiation ``softmax``) or ``theta^T phi / N``
  (``dot_product``), times g, ``conv_out``, BatchNorm ``bn``, plus the input; ``nonlocal_group``
  > 1 folds time into the batch first (video-nonlocal-net's groups).
* ``pathway{p}_pool``: after ``s2``, the temporal max-pool ``pool1`` (PySlowFast ``_POOL1``:
  2x1x1 for C2D and I3D, 1x1x1 (none) for Slow, SlowFast and ``*_nopool``).
* SlowFast: the fast pathway sees every frame with ``1/beta_inv`` of the channels; after the
  stem and each of ``s2``-``s4`` a fusion ``s{k}_fuse`` (``conv_f2s``: ``fusion_kernel_size x 1 x 1``
  convolution of temporal stride ``alpha`` to ``fusion_conv_channel_ratio`` times the fast
  channels, ``bn``, ReLU) is concatenated to the slow pathway. falv takes the FAST pathway's
  frames and derives the slow pathway as PySlowFast's data loader does
  (``index_select(frames, T, torch.linspace(0, T - 1, T // alpha).long())``).
* ``head``: each pathway average-pooled as PySlowFast's test-time head does (the kernel the
  TRAINING crop gives, ``TRAIN_CROP_SIZE // 32`` = 7, at stride 1, then the mean over the
  positions: at the 256-pixel test crop, ``image_size``, four overlapping 7x7 windows of the 8x8
  map), concatenation, dropout, ``head.projection`` (Linear). PySlowFast projects every position,
  applies the softmax and averages the probabilities; falv returns the mean of the per-position
  projections (the logits; the projection is affine, so that is the projection of the pooled
  features). At the training crop (one position) the two are the same; at the test crop
  ``softmax(logits)`` differs slightly from PySlowFast's averaged probabilities, as for X3D.

Original layouts read (single files, recognised by content, not extension)
-------------------------------------------------------------------------
* PySlowFast ``.pyth`` (``torch.save`` of ``{"epoch", "model_state", "optimizer_state", "cfg"}``;
  ``cfg`` the run's YAML): keys exactly as above (``s1.pathway0_stem.conv.weight``,
  ``s2.pathway0_res0.branch1.weight``, ``s2.pathway0_res0.branch2.a_bn.running_mean``,
  ``s1_fuse.conv_f2s.weight``, ``s3.pathway0_nonlocal1.conv_theta.weight``,
  ``head.projection.weight``); a ``module.`` prefix (DDP) is dropped. The architecture and the
  clip sampling come from ``cfg`` (``yaml.safe_load``; missing keys take PySlowFast's
  ``config/defaults.py`` values): ``MODEL.ARCH``, ``MODEL.MODEL_NAME``, ``MODEL.NUM_CLASSES``,
  ``MODEL.DROPOUT_RATE``, ``MODEL.HEAD_ACT`` (sigmoid: multi-label), ``MODEL.FC_INIT_STD``,
  ``RESNET.*`` (``DEPTH``, ``NUM_GROUPS``, ``WIDTH_PER_GROUP``, ``TRANS_FUNC``, ``STRIDE_1X1``,
  ``ZERO_INIT_FINAL_BN``, ``NUM_BLOCK_TEMP_KERNEL``, ``SPATIAL_STRIDES``, ``SPATIAL_DILATIONS``),
  ``NONLOCAL.*`` (``LOCATION``, ``GROUP``, ``POOL``, ``INSTANTIATION``), ``SLOWFAST.*``
  (``ALPHA``, ``BETA_INV``, ``FUSION_CONV_CHANNEL_RATIO``, ``FUSION_KERNEL_SZ``), ``DATA.*``
  (``NUM_FRAMES``, ``SAMPLING_RATE``, ``TARGET_FPS``, ``TRAIN_CROP_SIZE``, ``TEST_CROP_SIZE``,
  ``MEAN``, ``STD``, ``INPUT_CHANNEL_NUM``, ``MULTI_LABEL``, ``REVERSE_INPUT_CHANNEL``: a BGR
  model gets its stem's input channels flipped so falv's RGB input gives the same result).
* Caffe2 ``.pkl`` (a Python pickle of ``{"blobs": {name: numpy array}}``, read with an
  unpickler that only builds arrays): blob names renamed by the regular expressions of
  PySlowFast's ``slowfast/utils/c2_model_loading.py`` (``conv1_w`` -> ``s1.pathway0_stem.conv.weight``,
  ``res3_1_branch2b_bn_riv`` -> ``s3.pathway0_res1.branch2.b_bn.running_var``, ``t_`` prefix ->
  pathway 1, ``t_pool1_subsample*`` / ``t_res{k}_*_branch2c_bn_subsample*`` -> ``s{k}_fuse``,
  ``nonlocal_conv{k}_{i}_*`` -> ``s{k}.pathway0_nonlocal{i}``, ``pred_*`` ->
  ``head.projection``); blobs with ``momentum``, ``lr`` or ``model_iter`` in their name that
  name no weight are dropped, as PySlowFast drops them. A zoo ``.pkl`` that is in fact a
  PyTorch file is read as one.
* pytorchvideo hub ``.pyth`` (``{"model_state": ...}`` of ``create_resnet`` /
  ``create_slowfast``; keys ``blocks.0.conv.weight``, ``blocks.1.res_blocks.0.branch1_conv.weight``,
  ``...branch2.conv_a.weight`` / ``norm_a``, ``blocks.0.multipathway_blocks.0.conv.weight``,
  ``blocks.0.multipathway_fusion.conv_fast_to_slow.weight``, the head ``blocks.{last}.proj``),
  mapped to the names above; a parameterless block between the first two stages is C2D/I3D's
  ``pool1``.

A file without ``cfg`` (Caffe2 blobs, hub files, bare state dicts) has its architecture
inferred from the weights: the pathway count, the depth (blocks per stage: 50 or 101), the width
and groups, ``beta_inv`` and the fusion's channel ratio and kernel, every block's temporal kernel
(hence C2D / I3D / Slow and ``temporal_kernel_basis`` / ``num_block_temp_kernel``), the non-local
blocks' places, the number of classes. What weights do not hold follows the zoo's configs
(:func:`zoo_conventions`): ``alpha`` 8 for an R50 SlowFast with 5-frame fusion kernels and no
non-local blocks (SLOWFAST_4x16_R50), else 4; the clip (8x8, SlowFast 32x2, the R101 whose res4
has 6 temporal blocks 64x2); ``pool1`` (PyTorch C2D/I3D: 2x1x1; a Caffe2 C2D is the zoo's
C2D_NOPOOL); non-local instantiation softmax (C2D/I3D) or dot_product (SlowFast), pool 1x2x2,
group 1; spatial strides 1,2,2,2, no dilation; crops 224/256; mean 0.45, std 0.225. Pass
``cfg=`` (a PySlowFast YAML: path, text or dict) to :func:`falv.load_model` to state them.
Every load is strict: one :class:`~falv.errors.CheckpointError` names every missing, unexpected
and mis-shaped key (``num_batches_tracked`` may be absent).

Not supported: X3D and MViT (other families), ``basic_transform`` (ResNet-18/34) blocks, depths
other than 50 and 101, detection (``DETECTION.ENABLE``, AVA RoI heads), multigrid's Sub-BN
training state (saved checkpoints hold normal BN and load), CSN and R(2+1)D hub models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from falv.config import accepts_num_labels, check_choice
from falv.errors import CheckpointError, ConfigError
from falv.hub.families import Checkpoint, Family
from falv.model import flops
from falv.model.classifier import FamilyClassifier, FamilyConfig, falv_directory_loader, read_pyslowfast_cfg

PYSLOWFAST_MODEL_TYPE = "falv_pyslowfast"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ARCHS = ("c2d", "i3d", "slow", "slowfast")
NONLOCAL_INSTANTIATIONS = ("dot_product", "softmax")
#: Blocks per stage (res2..res5) for each depth (PySlowFast ``_MODEL_STAGE_DEPTH``).
STAGE_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: PySlowFast ``_TEMPORAL_KERNEL_BASIS``: per stage (conv1, res2..res5), per pathway, the basis
#: of temporal kernel sizes repeated over a stage's blocks.
TEMPORAL_KERNEL_BASIS: dict[str, tuple[tuple[tuple[int, ...], ...], ...]] = {
    "c2d": (((1,),), ((1,),), ((1,),), ((1,),), ((1,),)),
    "i3d": (((5,),), ((3,),), ((3, 1),), ((3, 1),), ((1, 3),)),
    "slow": (((1,),), ((1,),), ((1,),), ((3,),), ((3,),)),
    "slowfast": (((1,), (5,)), ((1,), (3,)), ((1,), (3,)), ((3,), (3,)), ((3,), (3,))),
}
#: PySlowFast ``_POOL1``: the temporal max-pool after res2 (kernel = stride), per pathway.
POOL1 = {"c2d": ((2, 1, 1),), "i3d": ((2, 1, 1),), "slow": ((1, 1, 1),), "slowfast": ((1, 1, 1), (1, 1, 1))}
#: PySlowFast ``MODEL.ARCH`` values -> (falv arch, pool1).
_CFG_ARCHS = {
    "2d": ("c2d", ((1, 1, 1),)),
    "c2d": ("c2d", ((2, 1, 1),)),
    "c2d_nopool": ("c2d", ((1, 1, 1),)),
    "i3d": ("i3d", ((2, 1, 1),)),
    "i3d_nopool": ("i3d", ((1, 1, 1),)),
    "slow": ("slow", ((1, 1, 1),)),
    "slowfast": ("slowfast", ((1, 1, 1), (1, 1, 1))),
}
_KINETICS_MEAN = (0.45, 0.45, 0.45)
_KINETICS_STD = (0.225, 0.225, 0.225)


def num_pathways(arch: str) -> int:
    return 2 if arch == "slowfast" else 1


# -- config -----------------------------------------------------------------------------------------


def _ints(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and int(v) == v for v in value):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


def _per_pathway(value: Any, pathways: int, name: str, leaf: str) -> tuple:
    """One entry per pathway (a single entry is repeated); ``leaf`` ``"int"`` or ``"ints"``."""
    if leaf == "int" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if leaf == "ints" and isinstance(value, (list, tuple)) and (
            len(value) == 0 or isinstance(value[0], (int, float))):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ConfigError(f"{name} must give one entry per pathway, got {value!r}")
    value = list(value)
    if len(value) == 1 and pathways > 1:
        value = value * pathways
    if len(value) < pathways:
        raise ConfigError(f"{name} has {len(value)} entries for {pathways} pathways: {value!r}")
    value = value[:pathways]  # PySlowFast indexes by pathway; extra entries are never read
    if leaf == "int":
        out = []
        for v in value:
            ints = _ints(v, name)
            if len(ints) != 1:
                raise ConfigError(f"{name} must give one integer per pathway, got {v!r}")
            out.append(ints[0])
        return tuple(out)
    return tuple(_ints(v, name) for v in value)


def _per_stage(value: Any, stages: int, pathways: int, name: str, leaf: str) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != stages:
        raise ConfigError(f"{name} must have {stages} entries (one per stage), got {value!r}")
    return tuple(_per_pathway(v, pathways, f"{name}[{i}]", leaf) for i, v in enumerate(value))


@accepts_num_labels
@dataclass
class PySlowFastConfig(FamilyConfig):
    """Configuration of :class:`PySlowFastForVideoClassification`: PySlowFast's architecture
    fields under falv names. Defaults are PySlowFast's ``config/defaults.py`` (an R50 SlowFast,
    alpha 8); fields left None take the arch's PySlowFast values (``temporal_kernel_basis`` from
    ``_TEMPORAL_KERNEL_BASIS``, ``pool1`` from ``_POOL1``, ...). Named settings of the zoo's
    configs: :data:`PYSLOWFAST_PRESETS`.

    Per-stage fields (``num_block_temp_kernel``, ``spatial_strides``, ``spatial_dilations``,
    ``nonlocal_*``) have one entry per res stage (res2..res5), each with one entry per pathway
    (slow, fast), as in PySlowFast's YAML. ``num_frames`` is the clip the model takes: for SlowFast
    the FAST pathway's frames (PySlowFast ``DATA.NUM_FRAMES``); ``image_size`` is the test crop
    (``DATA.TEST_CROP_SIZE``), ``train_crop_size`` the training crop (logits equal PySlowFast's
    at that size, see the module docstring).
    """

    ARCHITECTURE: ClassVar[str] = "PySlowFastForVideoClassification"

    arch: str = "slowfast"
    depth: int = 50
    num_groups: int = 1
    width_per_group: int = 64
    trans_func: str = "bottleneck_transform"
    stride_1x1: bool = False
    zero_init_final_bn: bool = False
    temporal_kernel_basis: tuple | None = None
    num_block_temp_kernel: tuple | None = None
    spatial_strides: tuple | None = None
    spatial_dilations: tuple | None = None
    pool1: tuple | None = None
    nonlocal_location: tuple | None = None
    nonlocal_group: tuple | None = None
    nonlocal_pool: tuple | None = None
    nonlocal_instantiation: str = "dot_product"
    alpha: int = 8
    beta_inv: int = 8
    fusion_conv_channel_ratio: int = 2
    fusion_kernel_size: int = 5
    num_frames: int = 8
    image_size: int = 256
    train_crop_size: int = 224
    num_channels: int = 3
    head_dropout_prob: float = 0.5
    fc_init_std: float = 0.01
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    id2label: dict[int, str] = field(default_factory=lambda: {i: f"LABEL_{i}" for i in range(400)})
    image_mean: tuple[float, ...] = _KINETICS_MEAN
    image_std: tuple[float, ...] = _KINETICS_STD
    model_type: str = PYSLOWFAST_MODEL_TYPE

    def __post_init__(self) -> None:
        self._normalise_labels()
        check_choice("arch", self.arch, ARCHS)
        if self.depth not in STAGE_DEPTH:
            raise ConfigError(f"depth must be one of {', '.join(map(str, STAGE_DEPTH))}, got {self.depth!r}")
        p = self.pathways
        blocks = STAGE_DEPTH[self.depth]
        if self.temporal_kernel_basis is None:
            self.temporal_kernel_basis = TEMPORAL_KERNEL_BASIS[self.arch]
        self.temporal_kernel_basis = _per_stage(self.temporal_kernel_basis, 5, p, "temporal_kernel_basis", "ints")
        defaults = {
            "num_block_temp_kernel": [[b] for b in blocks],  # PySlowFast default [[3],[4],[6],[3]] for R50
            "spatial_strides": [[1], [2], [2], [2]],
            "spatial_dilations": [[1], [1], [1], [1]],
            "nonlocal_location": [[[]], [[]], [[]], [[]]],
            "nonlocal_group": [[1], [1], [1], [1]],
            "nonlocal_pool": [[[1, 2, 2]]] * 4,
        }
        leaves = {"num_block_temp_kernel": "int", "spatial_strides": "int", "spatial_dilations": "int",
                  "nonlocal_location": "ints", "nonlocal_group": "int", "nonlocal_pool": "ints"}
        for name, leaf in leaves.items():
            value = getattr(self, name)
            setattr(self, name, _per_stage(defaults[name] if value is None else value, 4, p, name, leaf))
        self.pool1 = _per_pathway(POOL1[self.arch] if self.pool1 is None else self.pool1, p, "pool1", "ints")
        self.validate()

    @property
    def pathways(self) -> int:
        return num_pathways(self.arch)

    def validate(self) -> None:
        if self.model_type != PYSLOWFAST_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {PYSLOWFAST_MODEL_TYPE!r}")
        check_choice("arch", self.arch, ARCHS)
        if self.trans_func != "bottleneck_transform":
            raise ConfigError(f"trans_func {self.trans_func!r} is not supported (only bottleneck_transform: "
                              "ResNet-50/101)")
        check_choice("nonlocal_instantiation", self.nonlocal_instantiation, NONLOCAL_INSTANTIATIONS)
        for name in ("stride_1x1", "zero_init_final_bn"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("num_groups", "width_per_group", "num_frames", "image_size", "train_crop_size", "num_channels",
                     "alpha", "beta_inv", "fusion_conv_channel_ratio", "fusion_kernel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        blocks = STAGE_DEPTH[self.depth]
        p = self.pathways
        if len(self.temporal_kernel_basis) != 5:
            raise ConfigError("temporal_kernel_basis needs 5 entries (conv1, res2..res5)")
        for stage in self.temporal_kernel_basis:
            for basis in stage:
                if not basis or any(k <= 0 for k in basis):
                    raise ConfigError(f"temporal_kernel_basis entries must be positive kernel sizes, got {basis!r}")
        for s in range(4):
            for q in range(p):
                n = self.num_block_temp_kernel[s][q]
                if not 0 <= n <= blocks[s]:
                    raise ConfigError(f"num_block_temp_kernel[{s}][{q}] = {n} is not in 0..{blocks[s]} "
                                      f"(res{s + 2} has {blocks[s]} blocks)")
                if self.spatial_strides[s][q] <= 0 or self.spatial_dilations[s][q] <= 0:
                    raise ConfigError("spatial_strides and spatial_dilations must be positive")
                if any(not 0 <= i < blocks[s] for i in self.nonlocal_location[s][q]):
                    raise ConfigError(f"nonlocal_location[{s}][{q}] = {self.nonlocal_location[s][q]} names a block "
                                      f"outside res{s + 2}'s {blocks[s]}")
                if self.nonlocal_group[s][q] <= 0:
                    raise ConfigError("nonlocal_group must be positive")
                if len(self.nonlocal_pool[s][q]) != 3 or any(k <= 0 for k in self.nonlocal_pool[s][q]):
                    raise ConfigError(f"nonlocal_pool entries must be 3 positive sizes, got {self.nonlocal_pool[s][q]}")
        for pool in self.pool1:
            if len(pool) != 3 or any(k <= 0 for k in pool):
                raise ConfigError(f"pool1 entries must be 3 positive sizes (T, H, W), got {pool!r}")
        if self.arch == "slowfast":
            if self.width_per_group % self.beta_inv:
                raise ConfigError(f"width_per_group {self.width_per_group} is not divisible by "
                                  f"beta_inv {self.beta_inv}")
            ratio = self.beta_inv // self.fusion_conv_channel_ratio
            for mult in (1, 4, 8, 16):
                w = self.width_per_group * mult
                if ratio <= 0 or (w // self.beta_inv) * self.fusion_conv_channel_ratio != w // ratio:
                    raise ConfigError(f"beta_inv {self.beta_inv} and fusion_conv_channel_ratio "
                                      f"{self.fusion_conv_channel_ratio} do not give whole fused channels")
            if self.num_frames < self.alpha:
                raise ConfigError(f"a SlowFast clip needs at least alpha={self.alpha} frames, got {self.num_frames}")
        if not 0.0 <= self.head_dropout_prob < 1.0:
            raise ConfigError(f"head_dropout_prob must be in [0, 1), got {self.head_dropout_prob}")
        if self.fc_init_std <= 0:
            raise ConfigError(f"fc_init_std must be > 0, got {self.fc_init_std}")
        self._validate_labels()

    # -- derived --------------------------------------------------------------------------------------
    def block_temporal_kernels(self, stage: int, pathway: int) -> list[int]:
        """Temporal kernel of ``branch2.a`` in each block of res``stage + 2`` (PySlowFast ResStage)."""
        n = STAGE_DEPTH[self.depth][stage]
        basis = list(self.temporal_kernel_basis[stage + 1][pathway])
        k = self.num_block_temp_kernel[stage][pathway]
        return (basis * n)[:k] + [1] * (n - k)

    def stage_dims(self, pathway: int) -> list[tuple[int, int, int]]:
        """(dim_in, dim_inner, dim_out) of res2..res5 in ``pathway`` (PySlowFast's builders)."""
        w, d = self.width_per_group, self.num_groups * self.width_per_group
        out = []
        for s, mult in enumerate((1, 2, 4, 8)):
            dim_in = w if s == 0 else w * 2 * mult
            dim_out, inner = w * 4 * mult, d * mult
            if self.arch == "slowfast":
                if pathway == 0:
                    dim_in = dim_in + dim_in // (self.beta_inv // self.fusion_conv_channel_ratio)
                else:
                    dim_in, inner, dim_out = dim_in // self.beta_inv, inner // self.beta_inv, dim_out // self.beta_inv
            out.append((dim_in, inner, dim_out))
        return out

    @property
    def hidden_size(self) -> int:
        """Size of the clip embedding: the concatenated pooled res5 features of every pathway."""
        out = self.width_per_group * 32
        return out + out // self.beta_inv if self.arch == "slowfast" else out

def _dense(frames: int, stride: int, source: str, fps: float = 30.0) -> dict[str, Any]:
    return dict(num_frames=frames, sampling=dict(mode="dense", frame_stride=stride, fps=fps, source=source))


def _zoo(name: str) -> str:
    return f"PySlowFast configs/Kinetics/{name}.yaml"


_NLN_RES34 = ((((),), ((1, 3),), ((1, 3, 5),), ((),)))
#: Named settings, each the PySlowFast config named in its ``sampling.source`` (Kinetics-400,
#: 400 classes, 256-pixel test crop). Parameter counts (tests/model/test_slowfast.py checks
#: them): C2D R50 24.33 M, I3D R50 28.04 M, Slow R50 32.45 M, SlowFast R50 4x16 34.48 M and
#: 8x8 34.57 M, SlowFast R101 8x8 62.83 M, 16x8 R101_50_50 53.77 M: pytorchvideo's model zoo
#: table for the same architectures.
PYSLOWFAST_PRESETS: dict[str, dict[str, Any]] = {
    "c2d_r50_8x8": dict(arch="c2d", zero_init_final_bn=True, nonlocal_instantiation="softmax",
                        **_dense(8, 8, _zoo("C2D_8x8_R50"))),
    "c2d_nln_r50_8x8": dict(arch="c2d", zero_init_final_bn=True, nonlocal_instantiation="softmax",
                            nonlocal_location=_NLN_RES34, **_dense(8, 8, _zoo("C2D_NLN_8x8_R50"))),
    "i3d_r50_8x8": dict(arch="i3d", zero_init_final_bn=True, nonlocal_instantiation="softmax",
                        **_dense(8, 8, _zoo("I3D_8x8_R50"))),
    "i3d_nln_r50_8x8": dict(arch="i3d", zero_init_final_bn=True, nonlocal_instantiation="softmax",
                            nonlocal_location=_NLN_RES34, **_dense(8, 8, _zoo("I3D_NLN_8x8_R50"))),
    "i3d_r101_8x8": dict(arch="i3d", depth=101, zero_init_final_bn=True, nonlocal_instantiation="softmax",
                         num_block_temp_kernel=((3,), (4,), (23,), (3,)), **_dense(8, 8, _zoo("I3D_8x8_R101"))),
    "i3d_nln_r101_8x8": dict(arch="i3d", depth=101, zero_init_final_bn=True, nonlocal_instantiation="softmax",
                             num_block_temp_kernel=((3,), (4,), (23,), (3,)), nonlocal_location=_NLN_RES34,
                             **_dense(8, 8, _zoo("I3D_NLN_8x8_R101"))),
    "slow_r50_4x16": dict(arch="slow", zero_init_final_bn=True, **_dense(4, 16, _zoo("SLOW_4x16_R50"))),
    "slow_r50_8x8": dict(arch="slow", zero_init_final_bn=True, **_dense(8, 8, _zoo("SLOW_8x8_R50"))),
    "slowfast_r50_4x16": dict(arch="slowfast", alpha=8, fusion_kernel_size=5, zero_init_final_bn=True,
                              **_dense(32, 2, _zoo("SLOWFAST_4x16_R50"))),
    "slowfast_r50_8x8": dict(arch="slowfast", alpha=4, fusion_kernel_size=7, zero_init_final_bn=True,
                             **_dense(32, 2, _zoo("SLOWFAST_8x8_R50"))),
    "slowfast_nln_r50_8x8": dict(arch="slowfast", alpha=4, fusion_kernel_size=5, zero_init_final_bn=True,
                                 nonlocal_location=((((), ()), ((1, 3), ()), ((1, 3, 5), ()), ((), ()))),
                                 **_dense(32, 2, _zoo("SLOWFAST_NLN_8x8_R50"))),
    "slowfast_r101_8x8": dict(arch="slowfast", depth=101, alpha=4, fusion_kernel_size=5, zero_init_final_bn=True,
                              num_block_temp_kernel=((3, 3), (4, 4), (23, 23), (3, 3)),
                              **_dense(32, 2, _zoo("c2/SLOWFAST_8x8_R101_101_101"))),
    "slowfast_r101_16x8": dict(arch="slowfast", depth=101, alpha=4, fusion_kernel_size=5, zero_init_final_bn=True,
                               num_block_temp_kernel=((3, 3), (4, 4), (6, 6), (3, 3)),
                               **_dense(64, 2, _zoo("c2/SLOWFAST_16x8_R101_50_50"))),
}


def pyslowfast_preset(name: str, **overrides: Any) -> PySlowFastConfig:
    """A :class:`PySlowFastConfig` for a named setting; keyword arguments override fields."""
    if name not in PYSLOWFAST_PRESETS:
        raise ConfigError(f"unknown PySlowFast preset {name!r}; valid presets: {', '.join(PYSLOWFAST_PRESETS)}")
    return PySlowFastConfig(**{**PYSLOWFAST_PRESETS[name], **overrides})


# -- modules (attribute names = PySlowFast's, so its state dicts load as they are) ------------------


class _BatchNorm(nn.BatchNorm3d):
    """BatchNorm3d; ``transform_final_bn`` marks the ones zero-initialised with ZERO_INIT_FINAL_BN."""

    transform_final_bn = False


def _bn(dim: int, config: PySlowFastConfig, final: bool = False) -> _BatchNorm:
    norm = _BatchNorm(dim, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
    norm.transform_final_bn = final
    return norm


class Stem(nn.Module):
    """``t x 7 x 7`` conv (stride 1x2x2), BN, ReLU, 1x3x3 max-pool (stride 1x2x2): ResNetBasicStem."""

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int, config: PySlowFastConfig) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, (temporal_kernel, 7, 7), stride=(1, 2, 2),
                              padding=(temporal_kernel // 2, 3, 3), bias=False)
        self.bn = _bn(dim_out, config)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class VideoModelStem(nn.Module):
    """One :class:`Stem` per pathway, ``pathway{p}_stem``."""

    def __init__(self, config: PySlowFastConfig) -> None:
        super().__init__()
        self.pathways = config.pathways
        for p in range(self.pathways):
            dim_out = config.width_per_group if p == 0 else config.width_per_group // config.beta_inv
            self.add_module(f"pathway{p}_stem",
                            Stem(config.num_channels, dim_out, config.temporal_kernel_basis[0][p][0], config))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [getattr(self, f"pathway{p}_stem")(x) for p, x in enumerate(xs)]


class FuseFastToSlow(nn.Module):
    """``conv_f2s`` (fusion_kernel x 1 x 1, temporal stride alpha), BN, ReLU on the fast
    pathway, concatenated to the slow pathway's channels."""

    def __init__(self, dim_in: int, config: PySlowFastConfig) -> None:
        super().__init__()
        k = config.fusion_kernel_size
        dim_out = dim_in * config.fusion_conv_channel_ratio
        self.conv_f2s = nn.Conv3d(dim_in, dim_out, (k, 1, 1), stride=(config.alpha, 1, 1), padding=(k // 2, 0, 0),
                                  bias=False)
        self.bn = _bn(dim_out, config)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        slow, fast = xs
        fuse = self.relu(self.bn(self.conv_f2s(fast)))
        return [torch.cat([slow, fuse.to(slow.dtype)], 1), fast]


class BottleneckTransform(nn.Module):
    """``a`` (t x 1 x 1), ``a_bn``, ReLU, ``b`` (1x3x3), ``b_bn``, ReLU, ``c`` (1x1x1), ``c_bn``."""

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int, stride: int, dim_inner: int,
                 dilation: int, config: PySlowFastConfig) -> None:
        super().__init__()
        s1x1, s3x3 = (stride, 1) if config.stride_1x1 else (1, stride)
        self.a = nn.Conv3d(dim_in, dim_inner, (temporal_kernel, 1, 1), stride=(1, s1x1, s1x1),
                           padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = _bn(dim_inner, config)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, s3x3, s3x3), padding=(0, dilation, dilation),
                           groups=config.num_groups, dilation=(1, dilation, dilation), bias=False)
        self.b_bn = _bn(dim_inner, config)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn(dim_out, config, final=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    """``branch2`` plus the input (``branch1`` + ``branch1_bn`` when the shape changes), ReLU."""

    def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int, stride: int, dim_inner: int,
                 dilation: int, config: PySlowFastConfig) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = _bn(dim_out, config)
        self.branch2 = BottleneckTransform(dim_in, dim_out, temporal_kernel, stride, dim_inner, dilation, config)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "branch1"):
            out = self.branch1_bn(self.branch1(x)) + self.branch2(x)
        else:
            out = x + self.branch2(x)
        return self.relu(out)


class Nonlocal(nn.Module):
    """Non-local block (Wang et al. 2018) as PySlowFast's ``nonlocal_helper.Nonlocal``."""

    def __init__(self, dim: int, dim_inner: int, pool_size: tuple[int, ...], instantiation: str,
                 config: PySlowFastConfig) -> None:
        super().__init__()
        self.dim_inner = dim_inner
        self.instantiation = instantiation
        self.conv_theta = nn.Conv3d(dim, dim_inner, 1)
        self.conv_phi = nn.Conv3d(dim, dim_inner, 1)
        self.conv_g = nn.Conv3d(dim, dim_inner, 1)
        self.conv_out = nn.Conv3d(dim_inner, dim, 1)
        self.bn = _bn(dim, config, final=True)
        self.pool = nn.MaxPool3d(pool_size, stride=pool_size) if any(k > 1 for k in pool_size) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        theta = self.conv_theta(x)
        pooled = self.pool(x) if self.pool is not None else x
        phi, g = self.conv_phi(pooled), self.conv_g(pooled)
        theta, phi, g = (y.reshape(n, self.dim_inner, -1) for y in (theta, phi, g))
        affinity = torch.einsum("nct,ncp->ntp", theta, phi)
        if self.instantiation == "softmax":
            affinity = torch.softmax(affinity * self.dim_inner ** -0.5, dim=2)
        else:  # dot_product: normalised by the number of positions
            affinity = affinity / affinity.shape[2]
        out = torch.einsum("ntg,ncg->nct", affinity.to(g.dtype), g).reshape(n, self.dim_inner, t, h, w)
        return x + self.bn(self.conv_out(out))


class ResStage(nn.Module):
    """Blocks ``pathway{p}_res{i}`` and non-local blocks ``pathway{p}_nonlocal{i}`` of one stage."""

    def __init__(self, stage: int, config: PySlowFastConfig) -> None:
        super().__init__()
        self.pathways = config.pathways
        self.num_blocks = STAGE_DEPTH[config.depth][stage]
        self.nonlocal_group = [config.nonlocal_group[stage][p] for p in range(self.pathways)]
        for p in range(self.pathways):
            dim_in, dim_inner, dim_out = config.stage_dims(p)[stage]
            kernels = config.block_temporal_kernels(stage, p)
            stride, dilation = config.spatial_strides[stage][p], config.spatial_dilations[stage][p]
            for i in range(self.num_blocks):
                self.add_module(f"pathway{p}_res{i}", ResBlock(
                    dim_in if i == 0 else dim_out, dim_out, kernels[i], stride if i == 0 else 1, dim_inner, dilation,
                    config))
                if i in config.nonlocal_location[stage][p]:
                    self.add_module(f"pathway{p}_nonlocal{i}", Nonlocal(
                        dim_out, dim_out // 2, config.nonlocal_pool[stage][p], config.nonlocal_instantiation, config))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for p, x in enumerate(xs):
            for i in range(self.num_blocks):
                x = getattr(self, f"pathway{p}_res{i}")(x)
                block = getattr(self, f"pathway{p}_nonlocal{i}", None)
                if block is not None:
                    x = self._nonlocal(block, x, self.nonlocal_group[p])
            out.append(x)
        return out

    @staticmethod
    def _nonlocal(block: Nonlocal, x: torch.Tensor, group: int) -> torch.Tensor:
        if group == 1:
            return block(x)
        b, c, t, h, w = x.shape  # fold time into the batch: `group` clips of t / group frames
        y = x.permute(0, 2, 1, 3, 4).reshape(b * group, t // group, c, h, w).permute(0, 2, 1, 3, 4)
        y = block(y)
        return y.permute(0, 2, 1, 3, 4).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


class ResNetBasicHead(nn.Module):
    """Dropout and ``projection`` (Linear) on the pooled, concatenated pathway features."""

    def __init__(self, config: PySlowFastConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.projection = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(features))


def slow_pathway_indices(num_frames: int, alpha: int) -> torch.Tensor:
    """Frames of the slow pathway, as PySlowFast's ``pack_pathway_output``:
    ``torch.linspace(0, T - 1, T // alpha).long()``."""
    return torch.linspace(0, num_frames - 1, num_frames // alpha, dtype=torch.float32, device="cpu").long()


class PySlowFastForVideoClassification(FamilyClassifier):
    """A PySlowFast ResNet (C2D, I3D, NLN, Slow, SlowFast) with the interface of
    :class:`falv.FALForVideoClassification`; state-dict keys are PySlowFast's."""

    config_class = PySlowFastConfig
    main_input_name = "pixel_values"

    def __init__(self, config: PySlowFastConfig) -> None:
        super().__init__()
        self.config = config
        self.s1 = VideoModelStem(config)
        slowfast = config.arch == "slowfast"
        fast_dims = config.stage_dims(1) if slowfast else None
        for stage in range(4):
            if slowfast:  # s1_fuse .. s4_fuse: after the stem and res2..res4
                dim = config.width_per_group // config.beta_inv if stage == 0 else fast_dims[stage - 1][2]
                self.add_module(f"s{stage + 1}_fuse", FuseFastToSlow(dim, config))
            self.add_module(f"s{stage + 2}", ResStage(stage, config))
            if stage == 0:
                for p, pool in enumerate(config.pool1):
                    self.add_module(f"pathway{p}_pool", nn.MaxPool3d(pool, stride=pool))
        self.head = ResNetBasicHead(config)
        self.initialise()

    def init_weights(self) -> None:
        """PySlowFast's ``init_weights``: MSRA-fill convolutions (Kaiming normal, fan_out, ReLU),
        unit BatchNorm (zero gamma in each block's final BN and the non-local BN when
        ``zero_init_final_bn``), projection N(0, fc_init_std), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                zero = getattr(module, "transform_final_bn", False) and self.config.zero_init_final_bn
                nn.init.constant_(module.weight, 0.0 if zero else 1.0)
                nn.init.zeros_(module.bias)
        self.init_head()

    def init_head(self) -> None:
        """A fresh projection: N(0, fc_init_std) weights, zero bias (PySlowFast's FC init)."""
        nn.init.normal_(self.head.projection.weight, 0.0, self.config.fc_init_std)
        nn.init.zeros_(self.head.projection.bias)

    # -- forward --------------------------------------------------------------------------------
    def pathway_inputs(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, C, H, W) -> the pathways' (B, C, T', H, W) inputs (slow, fast for SlowFast)."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.permute(0, 2, 1, 3, 4)
        if self.config.arch != "slowfast":
            return [x]
        frames = x.shape[2]
        if frames < self.config.alpha:
            raise ValueError(f"a SlowFast clip needs at least alpha={self.config.alpha} frames, got {frames}")
        index = slow_pathway_indices(frames, self.config.alpha).to(x.device)
        return [x.index_select(2, index), x]

    def conv_bn_pairs(self):
        """``(module, convolution, BatchNorm)`` attribute names where the BatchNorm reads that
        convolution's output and nothing else: what :func:`falv.inference.fold_batch_norms` folds."""
        for m in self.modules():
            if isinstance(m, Stem):
                yield m, "conv", "bn"
            elif isinstance(m, FuseFastToSlow):
                yield m, "conv_f2s", "bn"
            elif isinstance(m, BottleneckTransform):
                yield from ((m, name, f"{name}_bn") for name in ("a", "b", "c"))
            elif isinstance(m, ResBlock) and hasattr(m, "branch1"):
                yield m, "branch1", "branch1_bn"
            elif isinstance(m, Nonlocal):
                yield m, "conv_out", "bn"

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding: each pathway's res5 output averaged over (T, H, W), concatenated."""
        xs = self.pathway_inputs(pixel_values)
        slowfast = self.config.arch == "slowfast"
        xs = self.s1(xs)
        for stage in range(2, 6):  # PySlowFast: s1, s1_fuse, s2, s2_fuse, pool1, s3, s3_fuse, s4, s4_fuse, s5
            if slowfast:
                xs = getattr(self, f"s{stage - 1}_fuse")(xs)
            if stage == 3:
                xs = [getattr(self, f"pathway{p}_pool")(x) for p, x in enumerate(xs)]
            xs = getattr(self, f"s{stage}")(xs)
        return torch.cat([self._pool(x) for x in xs], dim=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C): PySlowFast's test-time head pool. Its average pool has the
        kernel the training crop gives (``train_crop_size // 32``) at stride 1; on a larger test crop
        it runs at several positions, each projected, and the results are averaged. The projection
        being affine, the mean of the per-position logits is the projection of the mean of the
        windows' averages, which is what this returns (a clip no larger than the kernel: the plain
        average)."""
        k = self.config.train_crop_size // 32
        if x.shape[-1] > k or x.shape[-2] > k:
            x = F.avg_pool3d(x.float(), (1, min(k, x.shape[-2]), min(k, x.shape[-1])), stride=1).to(x.dtype)
        return x.mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits: PySlowFast's ``head.projection`` output (no softmax)."""
        return self.head(features)

    # -- save / load ----------------------------------------------------------------------------
def count_flops(config: PySlowFastConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1) -> int:
    """FLOPs of one forward pass (torch's counter on the meta device, a multiply-add = 2 FLOPs)."""
    return flops.count_flops(config, num_frames, image_size, batch_size,  # type: ignore[arg-type]
                             model_class=PySlowFastForVideoClassification)


def count_parameters(config: PySlowFastConfig) -> int:
    return flops.count_parameters(config, model_class=PySlowFastForVideoClassification)  # type: ignore[arg-type]


# -- original layouts -> PySlowFast names ----------------------------------------------------------

#: PySlowFast ``c2_model_loading.get_name_convert_func``: applied in order with ``re.sub``.
_C2_RULES = [
    (r"^nonlocal_conv([0-9]+)_([0-9]+)_(.*)", r"s\1.pathway0_nonlocal\2_\3"),
    (r"^(.*)_nonlocal([0-9]+)_(theta)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(g)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(phi)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(out)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(bn)_(.*)", r"\1_nonlocal\2.\3.\4"),
    (r"^t_pool1_subsample_bn_(.*)", r"s1_fuse.bn.\1"),
    (r"^t_pool1_subsample_(.*)", r"s1_fuse.conv_f2s.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_bn_(.*)", r"s\1_fuse.bn.\3"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_(.*)", r"s\1_fuse.conv_f2s.\3"),
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^res_conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway1_res\2.branch\3.\4_\5"),
    (r"^t_res_conv1_bn_(.*)", r"s1.pathway1_stem.bn.\1"),
    (r"^t_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway1_res\2.branch\3_\4"),
    (r"^t_res_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"pred_(.*)", r"head.projection.\1"),
    (r"(.*)bn.b\Z", r"\1bn.bias"),
    (r"(.*)bn.s\Z", r"\1bn.weight"),
    (r"(.*)bn.rm\Z", r"\1bn.running_mean"),
    (r"(.*)bn.riv\Z", r"\1bn.running_var"),
    (r"(.*)[\._]b\Z", r"\1.bias"),
    (r"(.*)[\._]w\Z", r"\1.weight"),
]
_C2_RULES_COMPILED = [(re.compile(a), b) for a, b in _C2_RULES]
#: Blobs PySlowFast leaves unconverted without a warning (solver state).
_C2_SOLVER_BLOBS = ("momentum", "lr", "model_iter")


def caffe2_name_to_pyslowfast(name: str) -> str:
    """A Caffe2 blob name as PySlowFast renames it (``c2_model_loading.py``)."""
    for pattern, replacement in _C2_RULES_COMPILED:
        name = pattern.sub(replacement, name)
    return name


_PV_BRANCH = {"branch1_conv": "branch1", "branch1_norm": "branch1_bn",
              "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
              "branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn",
              "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn"}
_PV_BLOCK = re.compile(r"^(branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])\.(.+)$")


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop a ``module.`` (DDP) or ``model.`` (PySlowFast's pytorchvideo wrappers) prefix every key has."""
    for prefix in ("module.", "model."):
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _stage_blocks(state: dict[str, Any], slowfast: bool) -> list[int]:
    """Indices ``j`` of ``blocks.j`` that are res stages, in order."""
    pattern = re.compile(r"^blocks\.(\d+)\.multipathway_blocks\.\d+\.res_blocks\." if slowfast
                         else r"^blocks\.(\d+)\.res_blocks\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def pytorchvideo_to_pyslowfast(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """pytorchvideo ``create_resnet`` / ``create_slowfast`` keys -> PySlowFast's, and hints
    (``pool1``: whether a parameterless block sits between res2 and res3). Keys that map to
    nothing keep their names (the strict check then names them)."""
    slowfast = any(k.startswith("blocks.0.multipathway_blocks.") for k in state)
    stages = _stage_blocks(state, slowfast)
    stage_of = {j: i + 2 for i, j in enumerate(stages)}
    heads = sorted({int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.proj\.", k))})
    head = heads[-1] if heads else None
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = None
        if slowfast:
            if m := re.match(r"^blocks\.0\.multipathway_blocks\.(\d+)\.(conv|norm)\.(.+)$", key):
                new = f"s1.pathway{m.group(1)}_stem.{'conv' if m.group(2) == 'conv' else 'bn'}.{m.group(3)}"
            elif m := re.match(r"^blocks\.(\d+)\.multipathway_fusion\.(conv_fast_to_slow|norm)\.(.+)$", key):
                j = int(m.group(1))
                stage = 1 if j == 0 else stage_of.get(j)
                if stage is not None:
                    new = f"s{stage}_fuse.{'conv_f2s' if m.group(2) == 'conv_fast_to_slow' else 'bn'}.{m.group(3)}"
            elif m := re.match(r"^blocks\.(\d+)\.multipathway_blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)$", key):
                b = _PV_BLOCK.match(m.group(4))
                if b and int(m.group(1)) in stage_of:
                    stage = stage_of[int(m.group(1))]
                    new = f"s{stage}.pathway{m.group(2)}_res{m.group(3)}.{_PV_BRANCH[b.group(1)]}.{b.group(2)}"
        else:
            if m := re.match(r"^blocks\.0\.(conv|norm)\.(.+)$", key):
                new = f"s1.pathway0_stem.{'conv' if m.group(1) == 'conv' else 'bn'}.{m.group(2)}"
            elif m := re.match(r"^blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)$", key):
                b = _PV_BLOCK.match(m.group(3))
                if b and int(m.group(1)) in stage_of:
                    new = f"s{stage_of[int(m.group(1))]}.pathway0_res{m.group(2)}.{_PV_BRANCH[b.group(1)]}.{b.group(2)}"
        if new is None and head is not None and (m := re.match(rf"^blocks\.{head}\.proj\.(.+)$", key)):
            new = f"head.projection.{m.group(1)}"
        out[new or key] = value
    hints = {"pool1": (not slowfast and len(stages) >= 2 and stages[1] - stages[0] > 1)}
    return out, hints


def _caffe2_to_pyslowfast(blobs: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Blobs renamed as PySlowFast renames them, as tensors, and each new name's blob name."""
    import numpy as np

    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for name, array in blobs.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: blob name {name!r} is not a string")
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            if any(s in name for s in _C2_SOLVER_BLOBS):
                continue
            raise CheckpointError(f"{path}: blob {name!r} is not a numeric array ({type(array).__name__})")
        new = caffe2_name_to_pyslowfast(name)
        if new in names:
            raise CheckpointError(f"{path}: blobs {names[new]!r} and {name!r} both rename to {new}")
        out[new] = torch.from_numpy(np.array(array, copy=True))
        names[new] = name
    return out, names


def _layout(checkpoint: Checkpoint) -> tuple[str, dict[str, Any]] | None:
    """(``"pyslowfast"`` | ``"pytorchvideo"`` | ``"caffe2"``, the weights with prefixes stripped)
    when the checkpoint is a PySlowFast-family ResNet, else None. By content only."""
    if checkpoint.format == "caffe2":
        blobs = checkpoint.data.get("blobs")
        if not isinstance(blobs, dict):
            return None
        conv1, b = blobs.get("conv1_w"), blobs.get("res2_0_branch2b_w")
        if getattr(conv1, "ndim", 0) == 5 and getattr(b, "ndim", 0) == 5 and tuple(b.shape[-3:]) == (1, 3, 3) \
                and tuple(conv1.shape[-2:]) == (7, 7) and "res2_0_branch2a_w" in blobs:
            return "caffe2", blobs
        return None
    state = checkpoint.state()
    if not isinstance(state, dict):
        return None
    state = _strip_prefix(state)

    def shape(key: str) -> tuple[int, ...] | None:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    stem, b = shape("s1.pathway0_stem.conv.weight"), shape("s2.pathway0_res0.branch2.b.weight")
    if stem is not None or b is not None:
        if stem and b and len(stem) == 5 and stem[-2:] == (7, 7) and len(b) == 5 and b[-3:] == (1, 3, 3) \
                and not any("conv_xy" in k for k in state):
            cfg = read_pyslowfast_cfg(checkpoint.data.get("cfg"), checkpoint.path, quiet=True)
            arch = str(((cfg or {}).get("MODEL") or {}).get("ARCH", "")).lower()
            if not arch or arch in _CFG_ARCHS:
                return "pyslowfast", state
        return None
    slowfast = "blocks.0.multipathway_blocks.0.conv.weight" in state
    stem = shape("blocks.0.multipathway_blocks.0.conv.weight" if slowfast else "blocks.0.conv.weight")
    if stem is None or len(stem) != 5 or stem[-2:] != (7, 7):
        return None
    stages = _stage_blocks(state, slowfast)
    if len(stages) != 4:
        return None
    first = f"blocks.{stages[0]}." + ("multipathway_blocks.0." if slowfast else "") + "res_blocks.0.branch2."
    a, b = shape(first + "conv_a.weight"), shape(first + "conv_b.weight")
    if a is None or b is None or len(a) != 5 or a[-2:] != (1, 1) or b[-3:] != (1, 3, 3):
        return None
    return "pytorchvideo", state


# -- PySlowFast cfg --------------------------------------------------------------------------------


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    value = cfg.get(name)
    return value if isinstance(value, dict) else {}


def config_from_cfg(cfg: dict[str, Any], source: str = "PySlowFast cfg") -> dict[str, Any]:
    """:class:`PySlowFastConfig` fields from a PySlowFast config (missing keys: PySlowFast's
    ``config/defaults.py``)."""
    model, resnet = _section(cfg, "MODEL"), _section(cfg, "RESNET")
    nonlocal_, slowfast, data = _section(cfg, "NONLOCAL"), _section(cfg, "SLOWFAST"), _section(cfg, "DATA")
    if _section(cfg, "DETECTION").get("ENABLE"):
        raise CheckpointError(f"{source}: a detection model (DETECTION.ENABLE, a RoI head); falv reads classifiers")
    cfg_arch = str(model.get("ARCH", "slowfast")).lower()
    name = str(model.get("MODEL_NAME", "SlowFast"))
    if cfg_arch not in _CFG_ARCHS or name not in ("SlowFast", "ResNet", "PTVResNet", "PTVSlowFast"):
        raise CheckpointError(f"{source}: MODEL.ARCH {cfg_arch!r} / MODEL_NAME {name!r} is not a PySlowFast ResNet "
                              f"(falv's pyslowfast family reads {', '.join(_CFG_ARCHS)}; X3D and MViT are other "
                              "families)")
    arch, pool1 = _CFG_ARCHS[cfg_arch]
    try:
        channels = set(_ints(data.get("INPUT_CHANNEL_NUM", [3, 3]), "DATA.INPUT_CHANNEL_NUM")[:num_pathways(arch)])
        if len(channels) != 1:
            raise CheckpointError(f"{source}: pathways with different input channels {sorted(channels)}")
        multilabel = bool(data.get("MULTI_LABEL", False)) or str(model.get("HEAD_ACT", "softmax")) == "sigmoid"
        frames, rate = int(data.get("NUM_FRAMES", 8)), int(data.get("SAMPLING_RATE", 8))
        fps = float(data.get("TARGET_FPS", 30) or 30)
        out: dict[str, Any] = dict(
            arch=arch, pool1=pool1,
            depth=int(resnet.get("DEPTH", 50)),
            num_groups=int(resnet.get("NUM_GROUPS", 1)),
            width_per_group=int(resnet.get("WIDTH_PER_GROUP", 64)),
            trans_func=str(resnet.get("TRANS_FUNC", "bottleneck_transform")),
            stride_1x1=bool(resnet.get("STRIDE_1X1", False)),
            zero_init_final_bn=bool(resnet.get("ZERO_INIT_FINAL_BN", False)),
            temporal_kernel_basis=TEMPORAL_KERNEL_BASIS[arch],
            num_block_temp_kernel=resnet.get("NUM_BLOCK_TEMP_KERNEL", [[3], [4], [6], [3]]),
            spatial_strides=resnet.get("SPATIAL_STRIDES", [[1], [2], [2], [2]]),
            spatial_dilations=resnet.get("SPATIAL_DILATIONS", [[1], [1], [1], [1]]),
            nonlocal_location=nonlocal_.get("LOCATION", [[[]], [[]], [[]], [[]]]),
            nonlocal_group=nonlocal_.get("GROUP", [[1], [1], [1], [1]]),
            nonlocal_pool=nonlocal_.get("POOL", [[[1, 2, 2], [1, 2, 2]]] * 4),
            nonlocal_instantiation=str(nonlocal_.get("INSTANTIATION", "dot_product")),
            alpha=int(slowfast.get("ALPHA", 8)),
            beta_inv=int(slowfast.get("BETA_INV", 8)),
            fusion_conv_channel_ratio=int(slowfast.get("FUSION_CONV_CHANNEL_RATIO", 2)),
            fusion_kernel_size=int(slowfast.get("FUSION_KERNEL_SZ", 5)),
            num_frames=frames,
            image_size=int(data.get("TEST_CROP_SIZE", 256)),
            train_crop_size=int(data.get("TRAIN_CROP_SIZE", 224)),
            num_channels=channels.pop(),
            image_mean=tuple(float(x) for x in data.get("MEAN", _KINETICS_MEAN)),
            image_std=tuple(float(x) for x in data.get("STD", _KINETICS_STD)),
            head_dropout_prob=float(model.get("DROPOUT_RATE", 0.5)),
            fc_init_std=float(model.get("FC_INIT_STD", 0.01)),
            num_labels=int(model.get("NUM_CLASSES", 400)),
            problem_type="multi_label_classification" if multilabel else "single_label_classification",
            sampling=dict(mode="dense", frame_stride=rate, fps=fps,
                          source=f"{source} (DATA.NUM_FRAMES {frames} x SAMPLING_RATE {rate})"),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{source}: unreadable PySlowFast config value ({exc})") from exc
    out["_reverse_input_channel"] = bool(data.get("REVERSE_INPUT_CHANNEL", False))
    return out


# -- inference from weights -------------------------------------------------------------------------


def _fit_basis(kernels: list[int], preferred: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """(basis, num_block_temp_kernel) that give ``kernels`` by PySlowFast's rule, the arch's
    own basis first, with the largest block count that fits."""
    n = len(kernels)
    candidates = [tuple(preferred)] + [tuple(kernels[:length]) for length in range(1, n + 1)]
    for basis in candidates:
        for count in range(n, -1, -1):
            if (list(basis) * n)[:count] + [1] * (n - count) == kernels:
                return basis, count
    return tuple(kernels), n  # unreachable: the whole list always fits


def zoo_conventions(arch: str, depth: int, layout: str, *, fusion_kernel: int = 5, res4_temporal_blocks: int = 6,
                    has_nonlocal: bool = False, pool1_hint: bool | None = None) -> dict[str, Any]:
    """What the weights of a checkpoint without cfg do not say, as the zoo's configs set it
    (see the module docstring)."""
    out: dict[str, Any] = dict(image_size=256, train_crop_size=224, image_mean=_KINETICS_MEAN, image_std=_KINETICS_STD,
                               head_dropout_prob=0.5, zero_init_final_bn=True,
                               nonlocal_instantiation="dot_product" if arch == "slowfast" else "softmax")
    source = "zoo convention (no cfg in the checkpoint)"
    if arch == "slowfast":
        alpha = 8 if depth == 50 and fusion_kernel == 5 and not has_nonlocal else 4
        frames = 64 if depth == 101 and res4_temporal_blocks == 6 else 32
        out.update(alpha=alpha, **_dense(frames, 2, source))
        return out
    out.update(_dense(8, 8, source))
    if arch in ("c2d", "i3d"):
        if pool1_hint is not None:
            pooled = pool1_hint
        else:  # the Caffe2 zoo's only C2D is C2D_NOPOOL; PyTorch C2D and every I3D pool
            pooled = not (arch == "c2d" and layout == "caffe2")
        out["pool1"] = ((2, 1, 1),) if pooled else ((1, 1, 1),)
    return out


def infer_config(state: dict[str, Any], layout: str, hints: dict[str, Any] | None = None,
                 path: Path | None = None) -> dict[str, Any]:
    """:class:`PySlowFastConfig` fields from PySlowFast-named weights (see the module docstring
    for what is inferred and what follows the zoo's conventions)."""
    def need(key: str) -> torch.Tensor:
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"cannot infer the architecture of {path}: it has no {key}; pass cfg= "
                                  "(the PySlowFast YAML the model was trained with)")
        return value

    pathways = 2 if "s1.pathway1_stem.conv.weight" in state else 1
    stem = need("s1.pathway0_stem.conv.weight")
    width, channels = int(stem.shape[0]), int(stem.shape[1])
    counts = []
    for stage in range(2, 6):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"^s{stage}\.pathway0_res(\d+)\.", k))}
        counts.append(max(blocks) + 1 if blocks else 0)
    depth = next((d for d, c in STAGE_DEPTH.items() if tuple(counts) == c), None)
    if depth is None:
        raise CheckpointError(f"{path}: blocks per stage {tuple(counts)} are not a ResNet-50 (3, 4, 6, 3) or "
                              "ResNet-101 (3, 4, 23, 3)")
    b = need("s2.pathway0_res0.branch2.b.weight")
    groups = max(1, int(b.shape[0]) // max(1, int(b.shape[1])))
    if int(b.shape[0]) != groups * width:
        groups = 1  # not PySlowFast's width rule: the strict check will name the shapes
    kernels = [[[int(need(f"s{s + 2}.pathway{p}_res{i}.branch2.a.weight").shape[2]) for i in range(counts[s])]
                for p in range(pathways)] for s in range(4)]
    stem_kernels = [int(need(f"s1.pathway{p}_stem.conv.weight").shape[2]) for p in range(pathways)]
    if pathways == 2:
        arch = "slowfast"
    elif stem_kernels[0] > 1:
        arch = "i3d"
    elif all(k == 1 for stage in kernels for k in stage[0]):
        arch = "c2d"
    else:
        arch = "slow"
    table = TEMPORAL_KERNEL_BASIS[arch]
    basis: list[Any] = [tuple((k,) for k in stem_kernels)]
    nbtk = []
    for s in range(4):
        fits = [_fit_basis(kernels[s][p], table[s + 1][p]) for p in range(pathways)]
        basis.append(tuple(f[0] for f in fits))
        nbtk.append(tuple(f[1] for f in fits))
    location = tuple(tuple(tuple(sorted({int(m.group(1)) for k in state
                                         if (m := re.match(rf"^s{s + 2}\.pathway{p}_nonlocal(\d+)\.", k))}))
                           for p in range(pathways)) for s in range(4))
    out: dict[str, Any] = dict(arch=arch, depth=depth, num_groups=groups, width_per_group=width, num_channels=channels,
                               temporal_kernel_basis=tuple(basis), num_block_temp_kernel=tuple(nbtk),
                               nonlocal_location=location)
    head = state.get("head.projection.weight")
    if isinstance(head, torch.Tensor) and head.ndim >= 1:
        out["num_labels"] = int(head.shape[0])
    fusion_kernel = 5
    if arch == "slowfast":
        fast = need("s1.pathway1_stem.conv.weight")
        fuse = need("s1_fuse.conv_f2s.weight")
        out.update(beta_inv=max(1, width // max(1, int(fast.shape[0]))),
                   fusion_conv_channel_ratio=max(1, int(fuse.shape[0]) // max(1, int(fuse.shape[1]))),
                   fusion_kernel_size=int(fuse.shape[2]))
        fusion_kernel = int(fuse.shape[2])
    out.update(zoo_conventions(arch, depth, layout, fusion_kernel=fusion_kernel, res4_temporal_blocks=nbtk[2][0],
                               has_nonlocal=any(loc for stage in location for loc in stage),
                               pool1_hint=(hints or {}).get("pool1") if layout == "pytorchvideo" else None))
    return out


# -- loading original checkpoints -------------------------------------------------------------------


def _natural(key: str) -> list[Any]:
    """Sort key that puts ``res6`` before ``res10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _check_keys(state: dict[str, Any], expected: dict[str, torch.Tensor], where: str,
                names: dict[str, str] | None = None) -> None:
    """One CheckpointError naming every missing, unexpected and mis-shaped key (``num_batches_tracked``
    may be missing: Caffe2 and old PyTorch files lack it)."""
    names = names or {}

    def shown(key: str) -> str:
        return f"{key} (blob {names[key]})" if key in names else key

    def listed(items: list[str]) -> str:
        return "[" + ", ".join(items[:40]) + (f", ... {len(items)} in all" if len(items) > 40 else "") + "]"

    missing = sorted((k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked")),
                     key=_natural)
    unexpected = sorted((shown(k) for k in set(state) - set(expected)), key=_natural)
    wrong = [f"{shown(k)} {tuple(getattr(v, 'shape', ()))} != {tuple(expected[k].shape)}"
             for k, v in sorted(state.items(), key=lambda item: _natural(item[0])) if k in expected
             and (not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(expected[k].shape))]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {listed(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch {listed(wrong)}")
        raise CheckpointError(f"{where} does not match the model its architecture describes: " + "; ".join(parts))


def load_pyslowfast_checkpoint(checkpoint: Checkpoint, path: Path | None = None, labels: list[str] | None = None,
                               cfg: Any = None) -> PySlowFastForVideoClassification:
    """A model from a PySlowFast ``.pyth``, a Caffe2 ``.pkl`` or a pytorchvideo hub file
    (in eval mode). ``cfg`` (a PySlowFast YAML path, text or dict) states the architecture and
    clip where the file holds none (or overrides its own); ``labels`` gives a fresh head."""
    path = Path(path or checkpoint.path)
    found = _layout(checkpoint)
    if found is None:
        raise CheckpointError(f"{path} is not a PySlowFast ResNet checkpoint (PySlowFast .pyth, Caffe2 .pkl or "
                              "pytorchvideo hub file of C2D, I3D, Slow or SlowFast)")
    layout, raw = found
    hints: dict[str, Any] = {}
    names: dict[str, str] = {}
    if layout == "caffe2":
        state, names = _caffe2_to_pyslowfast(raw, path)
    elif layout == "pytorchvideo":
        state, hints = pytorchvideo_to_pyslowfast(raw)
    else:
        state = {re.sub(r"(_nonlocal\d+)\.norm\.", r"\1.bn.", k): v for k, v in raw.items()}
    cfg_dict = read_pyslowfast_cfg(cfg, path) if cfg is not None else (
        read_pyslowfast_cfg(checkpoint.data.get("cfg"), path) if checkpoint.format == "torch" else None)
    if cfg_dict is not None:
        fields = config_from_cfg(cfg_dict, source=f"{path.name} cfg" if cfg is None else "cfg")
    else:
        fields = infer_config(state, layout, hints, path)
    reverse = fields.pop("_reverse_input_channel", False)
    if labels is not None:
        fields.pop("num_labels", None)
        fields["id2label"] = dict(enumerate(labels))
    try:
        config = PySlowFastConfig(**fields)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model = PySlowFastForVideoClassification(config)
    expected = model.state_dict()
    if layout == "caffe2":  # solver blobs PySlowFast skips: only where they name no weight
        state = {k: v for k, v in state.items()
                 if k in expected or not any(s in names.get(k, k) for s in _C2_SOLVER_BLOBS)}
    if labels is not None:
        state = {k: v for k, v in state.items() if not k.startswith("head.projection.")}
        expected = {k: v for k, v in expected.items() if not k.startswith("head.projection.")}
    if reverse:  # a BGR-trained model: flip its stem's input channels so RGB input gives its result
        for key in [k for k, v in state.items()
                    if re.match(r"^s1\.pathway\d+_stem\.conv\.weight$", k) and isinstance(v, torch.Tensor)]:
            state[key] = state[key].flip(1)
    _check_keys(state, expected, f"{path} ({layout} layout)", names)
    model.load_state_dict(state, strict=False)
    model.eval()
    return model


def _sniff(checkpoint: Checkpoint) -> bool:
    try:
        return _layout(checkpoint) is not None
    except Exception:  # noqa: BLE001 - a sniffer never raises: another family may read the file
        return False


def _load_checkpoint(checkpoint: Checkpoint, path: Path, labels: list[str] | None = None,
                     cfg: Any = None) -> PySlowFastForVideoClassification:
    return load_pyslowfast_checkpoint(checkpoint, path, labels=labels, cfg=cfg)


_load_dir = falv_directory_loader(PySlowFastForVideoClassification, "PySlowFast / Caffe2 / pytorchvideo")


FAMILIES = [Family(
    name="pyslowfast",
    description="PySlowFast ResNets: C2D, I3D, non-local, Slow, SlowFast (PySlowFast .pyth, Caffe2 .pkl, "
                "pytorchvideo hub files; falv directories)",
    model_types=(PYSLOWFAST_MODEL_TYPE,),
    load_dir=_load_dir,
    sniff=_sniff,
    load_checkpoint=_load_checkpoint,
    options=("labels", "cfg"),
    architectures=("PySlowFastForVideoClassification",),
    presets=PYSLOWFAST_PRESETS,
    config_class=PySlowFastConfig,
    model_class=PySlowFastForVideoClassification,
)]

__all__ = ["PYSLOWFAST_PRESETS", "PySlowFastConfig", "PySlowFastForVideoClassification", "caffe2_name_to_pyslowfast",
           "config_from_cfg", "count_flops", "count_parameters", "infer_config", "load_pyslowfast_checkpoint",
           "pytorchvideo_to_pyslowfast", "pyslowfast_preset", "slow_pathway_indices", "zoo_conventions"]
