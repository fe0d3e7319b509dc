"""MViT, Multiscale Vision Transformers (Fan et al., "Multiscale Vision Transformers", ICCV 2021;
Li et al., "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection",
CVPR 2022), as PySlowFast builds them, with the interface of :class:`falv.FALForVideoClassification`.

Architecture (PySlowFast ``slowfast/models/video_model_builder.py`` class ``MViT``,
``attention.py`` ``MultiScaleBlock`` / ``MultiScaleAttention`` / ``attention_pool`` /
``cal_rel_pos_spatial`` / ``cal_rel_pos_temporal``, ``stem_helper.py`` ``PatchEmbed``,
``common.py`` ``Mlp``, ``head_helper.py`` ``TransformerBasicHead``):

* ``patch_embed.proj``: a Conv3d (``MVIT.PATCH_KERNEL`` / ``PATCH_STRIDE`` / ``PATCH_PADDING``,
  3x7x7 / 2x4x4 / 1x3x3 in the published models) giving ``T/2 * H/4 * W/4`` tokens (frame-major);
* a ``cls_token`` (``CLS_EMBED_ON``) and absolute position embeddings (``USE_ABS_POS``): one
  ``pos_embed`` table, or (``SEP_POS_EMBED``, MViTv1) ``pos_embed_spatial`` + ``pos_embed_temporal``
  (+ ``pos_embed_class``); an optional LayerNorm ``norm_stem``;
* ``DEPTH`` pre-LN blocks ``blocks.N``: ``norm1``, pooling attention ``attn`` (a fused ``qkv``
  linear, or ``q`` / ``k`` / ``v`` with ``SEPARATE_QKV``; the per-head queries, keys and values
  are pooled by depthwise Conv3d ``pool_q`` / ``pool_k`` / ``pool_v`` (kernel ``POOL_KVQ_KERNEL``,
  strides ``POOL_Q_STRIDE`` / ``POOL_KV_STRIDE`` or ``POOL_KV_STRIDE_ADAPTIVE``; MODE ``avg`` /
  ``max`` pool without weights), each followed by a LayerNorm ``norm_q`` / ``norm_k`` / ``norm_v``
  over the pooled tokens *and* the CLS token; MViTv2 adds decomposed relative position
  biases ``rel_pos_h`` / ``rel_pos_w`` (``REL_POS_SPATIAL``) and ``rel_pos_t`` (``REL_POS_TEMPORAL``)
  and the pooled query added to the attention output (``RESIDUAL_POOLING``), ``proj``); the
  residual is max-pooled (kernel stride+1) where the query is; ``norm2``, ``mlp.fc1`` / ``fc2``
  (GELU); where the width changes (``DIM_MUL``) a linear ``proj`` maps the residual (MViTv1: from
  ``norm2``'s output, the MLP widening; MViTv2 ``DIM_MUL_IN_ATT``: from ``norm1``'s output, the
  attention widening). Widths and heads follow PySlowFast's ``round_width`` loop exactly
  (:func:`mvit_block_settings`);
* ``norm``, then the CLS token (or the token mean, ``USE_MEAN_POOLING``: mean then norm), then
  ``head.projection`` (after dropout). ``logits`` are the projection's output, before the softmax
  PySlowFast's head applies in eval mode; ``embeddings`` the normed pooled token.

Layer norms have eps 1e-6 (PySlowFast's ``norm_layer``), the attention's pooling norms too
(``pool_norm_eps``; pytorchvideo's ``MultiScaleAttention`` builds them with torch's default 1e-5,
so its hub files load with 1e-5). A clip of another size than the config's is run by
interpolating the absolute position table (trilinear, PySlowFast ``_get_pos_embed``) and the
relative tables (linear, ``get_rel_pos``); PySlowFast itself asserts the trained size.

falv's module names are PySlowFast's, so PySlowFast's ``model_state`` loads as it is.
Original formats read (strict key maps: one :class:`~falv.errors.CheckpointError` names every
missing, unexpected and mis-shaped key; weights-only reading, no code from the file runs):

* PySlowFast ``.pyth`` (``{"epoch", "model_state", "optimizer_state", "cfg"}``, ``cfg`` the YAML
  dump of the run, ``MODEL.ARCH: mvit``): the architecture from ``MVIT.*`` (PySlowFast's
  ``defaults.py`` values where a key is absent; list values given as strings such as
  ``"(3, 7, 7)"`` are read with :func:`ast.literal_eval`), the clip from ``DATA.NUM_FRAMES`` x
  ``SAMPLING_RATE`` at 30 fps, ``TEST_CROP_SIZE`` (``image_size``), ``MEAN`` / ``STD``,
  ``MODEL.NUM_CLASSES``, ``MODEL.DROPOUT_RATE``. Whether the attention has a fused ``qkv`` or
  separate ``q`` / ``k`` / ``v`` is read from the keys (``SEPARATE_QKV``; both load).
* pytorchvideo hub ``.pyth`` (``MVIT_B_16x4.pyth``, ``MVIT_B_32x3.pyth``: ``{"model_state": ...}``
  of ``pytorchvideo.models.vision_transformers.create_multiscale_vision_transformers``, MViTv1):
  ``patch_embed.patch_model`` -> ``patch_embed.proj``, ``cls_positional_encoding.{cls_token,
  pos_embed*}`` -> ``{cls_token, pos_embed*}``, ``norm_embed`` -> ``norm``, ``head.proj`` ->
  ``head.projection``; ``blocks.*`` are PySlowFast's names (separate ``q`` / ``k`` / ``v``). These
  files hold no cfg: the architecture is MViTv1-B's (:data:`MVIT_PRESETS` ``mvitv1_b_16x4``) with
  the clip length read from ``pos_embed_temporal`` (16 frames: 16x4, 32 frames: 32x3 sampling);
  ``load_model(path, cfg=...)`` (a PySlowFast config: YAML file, text or dict) gives any other.

Not supported (refused with a clear error): reversible MViT (``MVIT.REV.ENABLE``, out of scope),
``POOL_FIRST``, 2D patches (``PATCH_2D``, image MViT), layer scale (``LAYER_SCALE_INIT_VALUE``),
fixed sin-cos position tables (``USE_FIXED_SINCOS_POS``), ``conv_unshared`` pooling, detection
heads; drop-path and dropout inside the blocks are training regularisers, not built.

FLOPs are counted as FAL's are (:func:`falv.model.flops.count_flops`: a multiply-add = 2 FLOPs);
PySlowFast's MODEL_ZOO counts with fvcore (a multiply-add = 1).
"""

from __future__ import annotations

import ast
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

MVIT_MODEL_TYPE = "falv_mvit"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
_MODES = ("conv", "avg", "max")


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """PySlowFast's ``slowfast.models.utils.round_width``."""
    if not multiplier:
        return int(width)
    width = width * multiplier
    min_width = min_width or divisor
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


def _tuple_of_tuples(value: Any, name: str, width: int | None) -> tuple[tuple, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (list, tuple)) for v in value):
        raise ConfigError(f"{name} must be a list of lists, got {value!r}")
    out = tuple(tuple(v) for v in value)
    if width is not None and any(len(v) != width for v in out):
        raise ConfigError(f"{name} entries must have {width} values each, got {value!r}")
    return out


def _triple(value: Any, name: str, allow_none: bool = False) -> tuple[int, int, int] | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise ConfigError(f"{name} must be 3 non-negative integers (T, H, W), got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


@accepts_num_labels
@dataclass
class MViTConfig(FamilyConfig):
    """Configuration of :class:`MViTForVideoClassification`: PySlowFast's ``MVIT.*`` keys in lower
    case (``dim_mul`` = ``DIM_MUL`` as ``((layer, multiplier), ...)``, ``pool_q_stride`` =
    ``POOL_Q_STRIDE`` as ``((layer, t, h, w), ...)``, ...), the clip (``num_frames``, ``image_size``:
    PySlowFast's train = test crop) and falv's label and preprocessing fields (as in
    :class:`falv.FALConfig`). The defaults are MViTv2-S 16x4 (:data:`MVIT_PRESETS`)."""

    ARCHITECTURE: ClassVar[str] = "MViTForVideoClassification"

    num_frames: int = 16
    image_size: int = 224
    num_channels: int = 3
    patch_kernel: tuple[int, ...] = (3, 7, 7)
    patch_stride: tuple[int, ...] = (2, 4, 4)
    patch_padding: tuple[int, ...] = (1, 3, 3)
    embed_dim: int = 96
    num_heads: int = 1
    depth: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    separate_qkv: bool = False
    dim_mul: tuple[tuple, ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    head_mul: tuple[tuple, ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
    pool_q_stride: tuple[tuple, ...] = tuple((i, 1, 2, 2) if i in (1, 3, 14) else (i, 1, 1, 1) for i in range(16))
    pool_kv_stride: tuple[tuple, ...] = ()
    pool_kv_stride_adaptive: tuple[int, ...] | None = (1, 8, 8)
    pool_kvq_kernel: tuple[int, ...] | None = (3, 3, 3)
    mode: str = "conv"
    cls_embed_on: bool = True
    sep_pos_embed: bool = False
    use_abs_pos: bool = False
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = True
    residual_pooling: bool = True
    dim_mul_in_att: bool = True
    use_mean_pooling: bool = False
    norm_stem: bool = False
    layer_norm_eps: float = 1e-6
    pool_norm_eps: float = 1e-6
    head_dropout_prob: float = 0.5
    image_mean: tuple[float, ...] = KINETICS_MEAN
    image_std: tuple[float, ...] = KINETICS_STD
    model_type: str = MVIT_MODEL_TYPE

    def __post_init__(self) -> None:
        self._normalise_labels()
        self.patch_kernel = _triple(self.patch_kernel, "patch_kernel")
        self.patch_stride = _triple(self.patch_stride, "patch_stride")
        self.patch_padding = _triple(self.patch_padding, "patch_padding")
        self.pool_kv_stride_adaptive = _triple(self.pool_kv_stride_adaptive, "pool_kv_stride_adaptive", True)
        self.pool_kvq_kernel = _triple(self.pool_kvq_kernel, "pool_kvq_kernel", True)
        self.dim_mul = tuple((int(i), float(m)) for i, m in _tuple_of_tuples(self.dim_mul, "dim_mul", 2))
        self.head_mul = tuple((int(i), float(m)) for i, m in _tuple_of_tuples(self.head_mul, "head_mul", 2))
        self.pool_q_stride = tuple(tuple(int(x) for x in v)
                                   for v in _tuple_of_tuples(self.pool_q_stride, "pool_q_stride", 4))
        self.pool_kv_stride = tuple(tuple(int(x) for x in v)
                                    for v in _tuple_of_tuples(self.pool_kv_stride, "pool_kv_stride", 4))
        self.validate()

    def validate(self) -> None:
        if self.model_type != MVIT_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {MVIT_MODEL_TYPE!r}")
        for name in ("num_frames", "image_size", "num_channels", "embed_dim", "num_heads", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if any(s <= 0 for s in self.patch_stride) or any(k <= 0 for k in self.patch_kernel):
            raise ConfigError(f"patch_kernel and patch_stride must be positive, got {self.patch_kernel}, "
                              f"{self.patch_stride}")
        for name in ("dim_mul", "head_mul", "pool_q_stride", "pool_kv_stride"):
            for entry in getattr(self, name):
                if not 0 <= entry[0] <= self.depth:
                    raise ConfigError(f"{name} names layer {entry[0]}, outside 0..{self.depth}")
                if any(v <= 0 for v in entry[1:]):
                    raise ConfigError(f"{name} values must be positive, got {entry}")
        if self.pool_kv_stride_adaptive is not None and self.pool_kv_stride:
            raise ConfigError("give pool_kv_stride or pool_kv_stride_adaptive, not both")
        if self.mode not in _MODES:
            raise ConfigError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if self.rel_pos_spatial and self.image_size // self.patch_stride[1] != self.image_size // self.patch_stride[2]:
            raise ConfigError("rel_pos_spatial needs a square token grid")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.head_dropout_prob < 1.0:
            raise ConfigError(f"head_dropout_prob must be in [0, 1), got {self.head_dropout_prob}")
        mvit_block_settings(self)  # widths divisible by heads, strides within the grid
        self._validate_labels()

    @property
    def patch_dims(self) -> tuple[int, int, int]:
        """Token grid (T, H, W) of a clip of the config's size."""
        size = (self.num_frames, self.image_size, self.image_size)
        return tuple(s // p for s, p in zip(size, self.patch_stride))  # type: ignore[return-value]

    @property
    def hidden_size(self) -> int:
        """Size of the clip embedding (the last block's width)."""
        return mvit_block_settings(self)[-1]["dim_out"]

def mvit_block_settings(config: MViTConfig) -> list[dict[str, Any]]:
    """Per block: ``dim``, ``dim_out``, ``num_heads``, ``kernel_q`` / ``kernel_kv``, ``stride_q`` /
    ``stride_kv`` (empty: no pooling) and ``input_size`` (the token grid the block's relative tables
    are sized for), computed as PySlowFast's ``MViT.__init__`` does."""
    depth = config.depth
    dim_mul, head_mul = [1.0] * (depth + 1), [1.0] * (depth + 1)
    for i, m in config.dim_mul:
        dim_mul[i] = m
    for i, m in config.head_mul:
        head_mul[i] = m
    stride_q: list[list[int]] = [[] for _ in range(depth)]
    stride_kv: list[list[int]] = [[] for _ in range(depth)]
    pool_q: list[list[int]] = [[] for _ in range(depth)]
    pool_kv: list[list[int]] = [[] for _ in range(depth)]
    kernel = list(config.pool_kvq_kernel) if config.pool_kvq_kernel is not None else None
    for entry in config.pool_q_stride:
        if entry[0] >= depth:
            raise ConfigError(f"pool_q_stride names layer {entry[0]}, the model has {depth}")
        stride_q[entry[0]] = list(entry[1:])
        pool_q[entry[0]] = kernel if kernel is not None else [s + 1 if s > 1 else s for s in entry[1:]]
    kv_entries = list(config.pool_kv_stride)
    if config.pool_kv_stride_adaptive is not None:
        current = list(config.pool_kv_stride_adaptive)
        kv_entries = []
        for i in range(depth):
            if stride_q[i]:
                current = [max(current[d] // stride_q[i][d], 1) for d in range(len(current))]
            kv_entries.append((i, *current))
    for entry in kv_entries:
        if entry[0] >= depth:
            raise ConfigError(f"pool_kv_stride names layer {entry[0]}, the model has {depth}")
        stride_kv[entry[0]] = list(entry[1:])
        pool_kv[entry[0]] = kernel if kernel is not None else [s + 1 if s > 1 else s for s in entry[1:]]
    embed_dim, num_heads = config.embed_dim, config.num_heads
    input_size = list(config.patch_dims)
    out = []
    for i in range(depth):
        num_heads = round_width(num_heads, head_mul[i])
        if config.dim_mul_in_att:
            dim_out = round_width(embed_dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i]))
        else:
            dim_out = round_width(embed_dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1]))
        att_dim = dim_out if config.dim_mul_in_att else embed_dim
        if att_dim % num_heads:
            raise ConfigError(f"block {i}: width {att_dim} is not divisible by its {num_heads} heads")
        out.append(dict(dim=embed_dim, dim_out=dim_out, num_heads=num_heads, kernel_q=pool_q[i],
                        kernel_kv=pool_kv[i], stride_q=stride_q[i], stride_kv=stride_kv[i],
                        input_size=list(input_size)))
        if stride_q[i]:
            input_size = [s // st for s, st in zip(input_size, stride_q[i])]
            if min(input_size) < 1:
                raise ConfigError(f"block {i}: the query strides pool the {config.patch_dims} token grid to nothing")
        embed_dim = dim_out
    return out


#: The published models (PySlowFast ``configs/Kinetics/MVITv2_S_16x4.yaml``, ``MVIT_B_16x4_CONV.yaml``).
#: With 400 classes, measured (falv / PySlowFast MODEL_ZOO and the papers): MViTv2-S 34.5 M / 34.5 M
#: parameters, 64.5 / 64 GFLOPs per view (falv's count / 2); MViTv1-B 36.6 M / 36.6 M, 70.8 / 70.5 GFLOPs.
MVIT_PRESETS: dict[str, dict[str, Any]] = {
    "mvitv2_s_16x4": dict(),  # the MViTConfig defaults
    "mvitv1_b_16x4": dict(
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2)), sep_pos_embed=True, use_abs_pos=True,
        rel_pos_spatial=False, rel_pos_temporal=False, residual_pooling=False, dim_mul_in_att=False,
        separate_qkv=True),
}
#: ``(NUM_FRAMES, SAMPLING_RATE)`` of each preset's PySlowFast config (30 fps Kinetics).
MVIT_SAMPLING: dict[str, tuple[int, int]] = {"mvitv2_s_16x4": (16, 4), "mvitv1_b_16x4": (16, 4)}


def _sampling(frames: int, rate: int, source: str) -> ClipSampling:
    return ClipSampling(mode="dense", frame_stride=rate, fps=30.0, source=source)


def mvit_preset(name: str, **overrides: Any) -> MViTConfig:
    """An :class:`MViTConfig` for a published MViT (with its documented clip sampling)."""
    if name not in MVIT_PRESETS:
        raise ConfigError(f"unknown MViT preset {name!r}; valid presets: {', '.join(MVIT_PRESETS)}")
    frames, rate = MVIT_SAMPLING[name]
    values = dict(MVIT_PRESETS[name], num_frames=frames,
                  sampling=_sampling(frames, rate, f"PySlowFast configs/Kinetics ({name}: {frames} x {rate} at 30 fps)"))
    values.update(overrides)
    return MViTConfig(**values)


# -- modules (named as PySlowFast's, so its state dict loads as it is) -----------------------------


class PatchEmbed(nn.Module):
    def __init__(self, config: MViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv3d(config.num_channels, config.embed_dim, config.patch_kernel,
                              stride=config.patch_stride, padding=config.patch_padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), list(x.shape[2:])


def _pool(tensor: torch.Tensor, pool: nn.Module | None, thw: list[int], has_cls: bool,
          norm: nn.Module | None = None) -> tuple[torch.Tensor, list[int]]:
    """PySlowFast's ``attention_pool``: pool (B, heads, L, C) tokens on their (T, H, W) grid, the CLS
    token kept aside and put back in front, then the optional norm (over every token)."""
    if pool is None:
        return tensor, thw
    squeeze = tensor.ndim == 3
    if squeeze:
        tensor = tensor.unsqueeze(1)
    if has_cls:
        cls_tok, tensor = tensor[:, :, :1, :], tensor[:, :, 1:, :]
    b, n, _, c = tensor.shape
    t, h, w = thw
    tensor = tensor.reshape(b * n, t, h, w, c).permute(0, 4, 1, 2, 3)
    tensor = pool(tensor)
    thw = list(tensor.shape[2:])
    tensor = tensor.reshape(b, n, c, -1).transpose(2, 3)
    if has_cls:
        tensor = torch.cat((cls_tok, tensor), dim=2)
    if norm is not None:
        tensor = norm(tensor)
    return (tensor.squeeze(1) if squeeze else tensor), thw


def _rel_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """PySlowFast's ``get_rel_pos``: the table, linearly resized to ``length`` rows if needed."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0)


def _rel_index(q: int, k: int, device: torch.device) -> torch.Tensor:
    """Distance indices of PySlowFast's decomposed relative positions (scaled where q and k differ)."""
    q_ratio, k_ratio = max(k / q, 1.0), max(q / k, 1.0)
    dist = (torch.arange(q, device=device)[:, None] * q_ratio - torch.arange(k, device=device)[None, :] * k_ratio
            + (k - 1) * k_ratio)
    return dist.long()


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, setting: dict[str, Any], config: MViTConfig) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        head_dim = dim_out // num_heads
        self.scale = head_dim ** -0.5
        self.has_cls = config.cls_embed_on
        self.residual_pooling = config.residual_pooling
        if config.separate_qkv:
            self.q = nn.Linear(dim, dim_out, bias=config.qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=config.qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=config.qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim_out * 3, bias=config.qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        kernel_q, kernel_kv = list(setting["kernel_q"]), list(setting["kernel_kv"])
        stride_q, stride_kv = list(setting["stride_q"]), list(setting["stride_kv"])
        if math.prod(kernel_q) == 1 and math.prod(stride_q) == 1:
            kernel_q = []
        if math.prod(kernel_kv) == 1 and math.prod(stride_kv) == 1:
            kernel_kv = []
        for name, kernel, stride in (("q", kernel_q, stride_q), ("k", kernel_kv, stride_kv), ("v", kernel_kv, stride_kv)):
            pool: nn.Module | None = None
            norm: nn.Module | None = None
            if kernel:
                padding = [k // 2 for k in kernel]
                if config.mode == "conv":
                    pool = nn.Conv3d(head_dim, head_dim, kernel, stride=stride, padding=padding, groups=head_dim,
                                     bias=False)
                    norm = nn.LayerNorm(head_dim, eps=config.pool_norm_eps)
                else:
                    op = nn.MaxPool3d if config.mode == "max" else nn.AvgPool3d
                    pool = op(kernel, stride, padding, ceil_mode=False)
            setattr(self, f"pool_{name}", pool)
            setattr(self, f"norm_{name}", norm)
        self.rel_pos_spatial = config.rel_pos_spatial
        self.rel_pos_temporal = config.rel_pos_temporal
        input_size = setting["input_size"]
        if self.rel_pos_spatial:
            size = input_size[1]
            q_size = size // stride_q[1] if stride_q else size
            kv_size = size // stride_kv[1] if stride_kv else size
            length = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(length, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(length, head_dim))
        if self.rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))

    def _rel_bias(self, q: torch.Tensor, q_shape: list[int], k_shape: list[int]) -> torch.Tensor:
        """The decomposed relative position bias (B, heads, qt, qh, qw, kt, kh, kw) of the grid tokens."""
        sp = 1 if self.has_cls else 0
        b, heads, _, dim = q.shape
        qt, qh, qw = q_shape
        kt, kh, kw = k_shape
        r_q = q[:, :, sp:].reshape(b, heads, qt, qh, qw, dim)
        bias = q.new_zeros(())
        if self.rel_pos_spatial:
            rh = _rel_table(self.rel_pos_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh, q.device)]
            rw = _rel_table(self.rel_pos_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw, q.device)]
            rel_h = torch.einsum("bythwc,hkc->bythwk", r_q, rh.to(q.dtype))
            rel_w = torch.einsum("bythwc,wkc->bythwk", r_q, rw.to(q.dtype))
            bias = bias + rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]
        if self.rel_pos_temporal:
            rt = _rel_table(self.rel_pos_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt, q.device)]
            rel_t = torch.einsum("bythwc,tkc->bythwk", r_q, rt.to(q.dtype))
            bias = bias + rel_t[:, :, :, :, :, :, None, None]
        return bias

    def forward(self, x: torch.Tensor, thw: list[int]) -> tuple[torch.Tensor, list[int]]:
        b, n, _ = x.shape
        if hasattr(self, "qkv"):
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (proj(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3) for proj in (self.q, self.k, self.v))
        q, q_shape = _pool(q, self.pool_q, thw, self.has_cls, self.norm_q)
        k, k_shape = _pool(k, self.pool_k, thw, self.has_cls, self.norm_k)
        v, _ = _pool(v, self.pool_v, thw, self.has_cls, self.norm_v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos_spatial or self.rel_pos_temporal:
            sp = 1 if self.has_cls else 0
            qt, qh, qw = q_shape
            kt, kh, kw = k_shape
            grid = attn[:, :, sp:, sp:].reshape(b, self.num_heads, qt, qh, qw, kt, kh, kw)
            grid = (grid + self._rel_bias(q, q_shape, k_shape)).reshape(b, self.num_heads, qt * qh * qw, kt * kh * kw)
            if sp:
                grid = torch.cat((attn[:, :, 1:, :1], grid), dim=3)
                attn = torch.cat((attn[:, :, :1, :], grid), dim=2)
            else:
                attn = grid
        x = attn.softmax(dim=-1) @ v
        if self.residual_pooling:
            if self.has_cls:
                x = torch.cat((x[:, :, :1], x[:, :, 1:] + q[:, :, 1:]), dim=2)
            else:
                x = x + q
        x = x.transpose(1, 2).reshape(b, -1, self.dim_out)
        return self.proj(x), q_shape


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiScaleBlock(nn.Module):
    def __init__(self, setting: dict[str, Any], config: MViTConfig) -> None:
        super().__init__()
        dim, dim_out = setting["dim"], setting["dim_out"]
        self.dim, self.dim_out = dim, dim_out
        self.dim_mul_in_att = config.dim_mul_in_att
        self.has_cls = config.cls_embed_on
        att_dim = dim_out if config.dim_mul_in_att else dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = MultiScaleAttention(dim, att_dim, setting["num_heads"], setting, config)
        self.norm2 = nn.LayerNorm(att_dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(att_dim, int(att_dim * config.mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        stride_q = list(setting["stride_q"])
        self.pool_skip = (nn.MaxPool3d([s + 1 if s > 1 else s for s in stride_q], stride_q,
                                       [(s + 1 if s > 1 else s) // 2 for s in stride_q], ceil_mode=False)
                          if stride_q and math.prod(stride_q) > 1 else None)

    def forward(self, x: torch.Tensor, thw: list[int]) -> tuple[torch.Tensor, list[int]]:
        x_norm = self.norm1(x)
        x_block, thw_new = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        x_res, _ = _pool(x, self.pool_skip, thw, self.has_cls)
        x = x_res + x_block
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + x_mlp, thw_new


class TransformerHead(nn.Module):
    """PySlowFast ``TransformerBasicHead`` without its eval-mode softmax: dropout, ``projection``."""

    def __init__(self, dim: int, config: MViTConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.projection = nn.Linear(dim, config.num_labels, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(features))


_HEAD_PREFIX = "head.projection."


class MViTForVideoClassification(FamilyClassifier):
    """MViT (v1 / v2) with the interface of :class:`falv.FALForVideoClassification`; PySlowFast's names."""

    head_prefix = "head.projection."
    config_class = MViTConfig
    main_input_name = "pixel_values"

    def __init__(self, config: MViTConfig) -> None:
        super().__init__()
        self.config = config
        settings = mvit_block_settings(config)
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        t, h, w = config.patch_dims
        if config.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if config.use_abs_pos:
            if config.sep_pos_embed:
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, dim))
                self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, dim))
                if config.cls_embed_on:
                    self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))
            else:
                self.pos_embed = nn.Parameter(torch.zeros(1, t * h * w + int(config.cls_embed_on), dim))
        self.norm_stem = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.norm_stem else None
        self.blocks = nn.ModuleList(MultiScaleBlock(s, config) for s in settings)
        out_dim = settings[-1]["dim_out"]
        self.norm = nn.LayerNorm(out_dim, eps=config.layer_norm_eps)
        self.head = TransformerHead(out_dim, config)
        self.initialise()

    def init_weights(self) -> None:
        """PySlowFast's init: truncated N(0, 0.02) weights, 0.02 linear biases, unit LayerNorms with 0.02
        shift, truncated N(0, 0.02) position and relative tables and CLS token."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.constant_(module.bias, 0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.02)
        for name, param in self.named_parameters():
            if name.split(".")[-1] in ("cls_token", "pos_embed", "pos_embed_spatial", "pos_embed_temporal",
                                       "pos_embed_class", "rel_pos_h", "rel_pos_w", "rel_pos_t"):
                nn.init.trunc_normal_(param, std=0.02)
        self.init_head()

    def init_head(self) -> None:
        """A fresh ``head.projection`` (truncated N(0, 0.02) weights, 0.02 bias, as PySlowFast)."""
        nn.init.trunc_normal_(self.head.projection.weight, std=0.02)
        nn.init.constant_(self.head.projection.bias, 0.02)

    def _abs_pos(self, thw: list[int]) -> torch.Tensor:
        cfg = self.config
        pt, ph, pw = cfg.patch_dims
        if cfg.sep_pos_embed:
            table = self.pos_embed_spatial.repeat(1, pt, 1) + torch.repeat_interleave(
                self.pos_embed_temporal, ph * pw, dim=1)
            if cfg.cls_embed_on:
                table = torch.cat([self.pos_embed_class, table], 1)
        else:
            table = self.pos_embed
        if list(thw) == [pt, ph, pw]:
            return table
        cls_pos = table[:, :1] if cfg.cls_embed_on else None
        grid = table[:, 1:] if cfg.cls_embed_on else table
        grid = F.interpolate(grid.reshape(1, pt, ph, pw, -1).permute(0, 4, 1, 2, 3), size=tuple(thw),
                             mode="trilinear")
        grid = grid.reshape(1, -1, math.prod(thw)).permute(0, 2, 1)
        return grid if cls_pos is None else torch.cat((cls_pos, grid), dim=1)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding (B, D): the normed CLS token (or normed token mean), before dropout and projection."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        x, thw = self.patch_embed(pixel_values.permute(0, 2, 1, 3, 4))  # PySlowFast's (B, C, T, H, W)
        if self.config.cls_embed_on:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        if self.config.use_abs_pos:
            x = x + self._abs_pos(thw).to(x.dtype)
        if self.norm_stem is not None:
            x = self.norm_stem(x)
        for block in self.blocks:
            x, thw = block(x, thw)
        if self.config.use_mean_pooling:
            if self.config.cls_embed_on:
                x = x[:, 1:]
            return self.norm(x.mean(1))
        if self.config.cls_embed_on:
            return self.norm(x)[:, 0]
        return self.norm(x).mean(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits: ``head.projection`` of the (dropped-out) features, before any softmax."""
        return self.head(features)

    # -- save / load ------------------------------------------------------------------------------
def count_flops(config: MViTConfig, num_frames: int | None = None, image_size: int | None = None,
                batch_size: int = 1) -> int:
    """FLOPs of one forward pass (torch's counter on the meta device; a multiply-add = 2 FLOPs)."""
    return flops.count_flops(config, num_frames, image_size, batch_size, model_class=MViTForVideoClassification)


def count_parameters(config: MViTConfig) -> int:
    return flops.count_parameters(config, model_class=MViTForVideoClassification)


# -- original checkpoints ---------------------------------------------------------------------------

#: falv (= PySlowFast) names <-> pytorchvideo's ``create_multiscale_vision_transformers`` names
#: (prefixes; ``blocks.*`` are the same in both).
_PYTORCHVIDEO_NAMES = [
    ("patch_embed.proj.", "patch_embed.patch_model."),
    ("cls_token", "cls_positional_encoding.cls_token"),
    ("pos_embed", "cls_positional_encoding.pos_embed"),  # also pos_embed_spatial / _temporal / _class
    ("norm.", "norm_embed."),
    ("norm_stem.", "norm_patch_embed."),
    ("head.projection.", "head.proj."),
]
_PV_STEM_KEY = "patch_embed.patch_model.weight"
_STEM_KEY = "patch_embed.proj.weight"


def to_pytorchvideo_key(name: str) -> str:
    """pytorchvideo's name of a falv (PySlowFast) MViT state-dict key."""
    for falv, pv in _PYTORCHVIDEO_NAMES:
        if name.startswith(falv):
            return pv + name[len(falv):]
    return name


def from_pytorchvideo_key(name: str) -> str:
    """falv's (PySlowFast's) name of a pytorchvideo MViT state-dict key (others unchanged)."""
    for falv, pv in _PYTORCHVIDEO_NAMES:
        if name.startswith(pv):
            return falv + name[len(pv):]
    return name


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in ("module.", "model."):
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


_MVIT_BLOCK_KEY = re.compile(r"^blocks\.\d+\.attn\.(pool_[qkv]\.|norm_[qkv]\.|rel_pos_[hwt]$)")


def _cfg_says_mvit(data: dict[str, Any]) -> bool:
    text = data.get("cfg")
    if isinstance(text, str):
        return bool(re.search(r"^\s*ARCH:\s*['\"]?mvit['\"]?\s*$", text, re.M | re.I))
    if isinstance(text, dict):
        model = text.get("MODEL") or {}
        return isinstance(model, dict) and str(model.get("ARCH", "")).lower() == "mvit"
    return False


def _layout(checkpoint: Checkpoint, state: dict[str, Any]) -> str | None:
    """``"pyslowfast"``, ``"pytorchvideo"`` or None: a 3D patch convolution and MViT's pooling
    attention (``attn.pool_*`` / ``norm_*`` / ``rel_pos_*``) or a cfg with ``MODEL.ARCH: mvit``.
    TimeSformer's patch projection is 2D; VideoMAE's is 3D but without a CLS token or pooling."""
    for layout, stem in (("pyslowfast", _STEM_KEY), ("pytorchvideo", _PV_STEM_KEY)):
        if getattr(state.get(stem), "ndim", 0) != 5:
            continue
        if any(_MVIT_BLOCK_KEY.match(k) for k in state) or _cfg_says_mvit(checkpoint.data):
            return layout
        if layout == "pytorchvideo" and any(k.startswith("cls_positional_encoding.") for k in state):
            return layout
    return None


def _sniff(checkpoint: Checkpoint) -> bool:
    """An MViT checkpoint of PySlowFast or pytorchvideo (by its keys or its cfg)."""
    try:
        if checkpoint.format != "torch":
            return False
        state = checkpoint.state()
        return isinstance(state, dict) and _layout(checkpoint, _strip_prefix(state)) is not None
    except Exception:  # noqa: BLE001 - a sniffer never raises: another family may read the file
        return False



#: PySlowFast ``defaults.py`` values of the ``MVIT.*`` keys falv reads.
_MVIT_DEFAULTS: dict[str, Any] = dict(
    MODE="conv", POOL_FIRST=False, CLS_EMBED_ON=True, PATCH_KERNEL=[3, 7, 7], PATCH_STRIDE=[2, 4, 4],
    PATCH_PADDING=[2, 4, 4], PATCH_2D=False, EMBED_DIM=96, NUM_HEADS=1, MLP_RATIO=4.0, QKV_BIAS=True,
    LAYER_SCALE_INIT_VALUE=0.0, DEPTH=16, NORM="layernorm", DIM_MUL=[], HEAD_MUL=[], POOL_KV_STRIDE=[],
    POOL_KV_STRIDE_ADAPTIVE=None, POOL_Q_STRIDE=[], POOL_KVQ_KERNEL=None, NORM_STEM=False, SEP_POS_EMBED=False,
    USE_ABS_POS=True, USE_FIXED_SINCOS_POS=False, REL_POS_SPATIAL=False, REL_POS_TEMPORAL=False,
    RESIDUAL_POOLING=False, DIM_MUL_IN_ATT=False, SEPARATE_QKV=False, USE_MEAN_POOLING=False,
)


def _value(section: dict[str, Any], key: str, default: Any) -> Any:
    value = section.get(key, default)
    if isinstance(value, str) and value.strip()[:1] in "([":  # yacs-style "(3, 7, 7)"
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    return value


def _from_cfg(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """Architecture and data fields of a PySlowFast MViT cfg (its defaults where a key is absent)."""
    mvit = cfg.get("MVIT") or {}
    data = cfg.get("DATA") or {}
    model = cfg.get("MODEL") or {}
    if not all(isinstance(s, dict) for s in (mvit, data, model)):
        raise CheckpointError(f"{path}: its cfg's MVIT / DATA / MODEL sections are not mappings")
    m = {k: _value(mvit, k, d) for k, d in _MVIT_DEFAULTS.items()}
    rev = mvit.get("REV") or {}
    unsupported = [name for name, bad in (
        ("MVIT.REV.ENABLE (reversible MViT)", isinstance(rev, dict) and bool(rev.get("ENABLE"))),
        ("MVIT.POOL_FIRST", bool(m["POOL_FIRST"])), ("MVIT.PATCH_2D", bool(m["PATCH_2D"])),
        ("MVIT.LAYER_SCALE_INIT_VALUE > 0", float(m["LAYER_SCALE_INIT_VALUE"] or 0) > 0),
        ("MVIT.USE_FIXED_SINCOS_POS", bool(m["USE_FIXED_SINCOS_POS"])),
        (f"MVIT.MODE {m['MODE']!r}", m["MODE"] not in _MODES),
        (f"MVIT.NORM {m['NORM']!r}", m["NORM"] != "layernorm"),
        ("DETECTION.ENABLE", bool((cfg.get("DETECTION") or {}).get("ENABLE"))),
    ) if bad]
    if unsupported:
        raise CheckpointError(f"{path}: falv does not support {', '.join(unsupported)} MViT checkpoints")
    try:
        frames = int(_value(data, "NUM_FRAMES", 8))
        rate = int(_value(data, "SAMPLING_RATE", 8))
        test_crop = int(_value(data, "TEST_CROP_SIZE", 256))
        train_crop = int(_value(data, "TRAIN_CROP_SIZE", 224))
        if train_crop != test_crop:  # PySlowFast's MViT asserts they are equal
            raise ValueError(f"TRAIN_CROP_SIZE {train_crop} != TEST_CROP_SIZE {test_crop}")
        out = dict(
            num_frames=frames, image_size=test_crop,
            num_channels=int((_value(data, "INPUT_CHANNEL_NUM", [3]) or [3])[0]),
            patch_kernel=tuple(m["PATCH_KERNEL"]), patch_stride=tuple(m["PATCH_STRIDE"]),
            patch_padding=tuple(m["PATCH_PADDING"]), embed_dim=int(m["EMBED_DIM"]), num_heads=int(m["NUM_HEADS"]),
            depth=int(m["DEPTH"]), mlp_ratio=float(m["MLP_RATIO"]), qkv_bias=bool(m["QKV_BIAS"]),
            separate_qkv=bool(m["SEPARATE_QKV"]), dim_mul=m["DIM_MUL"] or (), head_mul=m["HEAD_MUL"] or (),
            pool_q_stride=m["POOL_Q_STRIDE"] or (),
            pool_kv_stride=() if m["POOL_KV_STRIDE_ADAPTIVE"] is not None else (m["POOL_KV_STRIDE"] or ()),
            pool_kv_stride_adaptive=m["POOL_KV_STRIDE_ADAPTIVE"], pool_kvq_kernel=m["POOL_KVQ_KERNEL"],
            mode=str(m["MODE"]), cls_embed_on=bool(m["CLS_EMBED_ON"]), sep_pos_embed=bool(m["SEP_POS_EMBED"]),
            use_abs_pos=bool(m["USE_ABS_POS"]), rel_pos_spatial=bool(m["REL_POS_SPATIAL"]),
            rel_pos_temporal=bool(m["REL_POS_TEMPORAL"]), residual_pooling=bool(m["RESIDUAL_POOLING"]),
            dim_mul_in_att=bool(m["DIM_MUL_IN_ATT"]), use_mean_pooling=bool(m["USE_MEAN_POOLING"]),
            norm_stem=bool(m["NORM_STEM"]),
            image_mean=tuple(float(v) for v in _value(data, "MEAN", list(KINETICS_MEAN))),
            image_std=tuple(float(v) for v in _value(data, "STD", list(KINETICS_STD))),
            num_labels=int(_value(model, "NUM_CLASSES", 400)),
            head_dropout_prob=float(_value(model, "DROPOUT_RATE", 0.5)),
            sampling=_sampling(frames, rate, f"PySlowFast cfg: DATA.NUM_FRAMES {frames} x SAMPLING_RATE {rate} "
                                             "at 30 fps (Kinetics)"))
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: cannot read the MViT settings of its cfg: {exc}") from exc
    return out


def _hub_defaults(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Settings of a pytorchvideo hub file without cfg: MViTv1-B, its clip length from
    ``pos_embed_temporal`` (16 frames: 16x4, 32: 32x3), its crop from ``pos_embed_spatial``."""
    temporal = state.get("pos_embed_temporal")
    spatial = state.get("pos_embed_spatial")
    head = state.get("head.projection.weight")
    if temporal is None or spatial is None or head is None or temporal.ndim != 3 or spatial.ndim != 3:
        raise CheckpointError(f"{path}: a pytorchvideo MViT file without cfg must be MViTv1-B (separate position "
                              "tables); give its PySlowFast config with load_model(path, cfg=...)")
    base = MVIT_PRESETS["mvitv1_b_16x4"]
    stride = MViTConfig(**base).patch_stride
    frames = int(temporal.shape[1]) * stride[0]
    side = int(round(math.sqrt(spatial.shape[1])))
    rate = {16: 4, 32: 3}.get(frames, 4)
    return dict(base, num_frames=frames, image_size=side * stride[1], num_labels=int(head.shape[0]),
                pool_norm_eps=1e-5,
                sampling=_sampling(frames, rate, f"PySlowFast configs/Kinetics/MVIT_B_{frames}x{rate}_CONV.yaml "
                                                 f"({frames} x {rate} at 30 fps; the checkpoint holds no cfg)"))


def load_mvit_checkpoint(checkpoint: Checkpoint, path: Path, labels: list[str] | None = None,
                         cfg: Any = None) -> MViTForVideoClassification:
    """An :class:`MViTForVideoClassification` from a PySlowFast or pytorchvideo MViT checkpoint
    (module docstring); ``labels`` replaces the head with a fresh one; ``cfg`` (a PySlowFast config:
    YAML file, YAML text or dict) stands for the file's own cfg."""
    raw = checkpoint.state()
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: its weights are not all tensors")
    state = _strip_prefix(raw)
    layout = _layout(checkpoint, state) if checkpoint.format == "torch" else None
    if layout is None:
        raise CheckpointError(f"{path} is not an MViT checkpoint (no 3D {_STEM_KEY!r} with MViT pooling attention)")
    pv = layout == "pytorchvideo"
    falv_state = {from_pytorchvideo_key(k): v for k, v in state.items()} if pv else dict(state)
    file_name = to_pytorchvideo_key if pv else (lambda k: k)
    parsed = read_pyslowfast_cfg(cfg if cfg is not None else checkpoint.data.get("cfg"), path)
    if parsed is not None and isinstance(parsed.get("MVIT"), dict):
        fields = _from_cfg(parsed, path)
        if pv:
            fields["pool_norm_eps"] = 1e-5
        what = "the MViT its cfg describes"
    elif pv:
        fields = _hub_defaults(falv_state, path)
        what = "MViTv1-B (a pytorchvideo hub file without cfg)"
    else:
        raise CheckpointError(f"{path}: a PySlowFast MViT checkpoint without its cfg; give the run's config "
                              "with load_model(path, cfg=...)")
    fields["separate_qkv"] = fields.get("separate_qkv", False) or "blocks.0.attn.q.weight" in falv_state
    return model_from_original(MViTForVideoClassification, fields, state, path, what, labels, file_name)


_load_dir = falv_directory_loader(MViTForVideoClassification, "PySlowFast / pytorchvideo")


FAMILIES = [Family(
    name="mvit",
    description="MViTv1-B / MViTv2-S (PySlowFast .pyth with its cfg, pytorchvideo hub .pyth; falv directories)",
    model_types=(MVIT_MODEL_TYPE,),
    load_dir=_load_dir,
    sniff=_sniff,
    load_checkpoint=load_mvit_checkpoint,
    options=("labels", "cfg"),
    architectures=("MViTForVideoClassification",),
    presets=MVIT_PRESETS,
    config_class=MViTConfig,
    model_class=MViTForVideoClassification,
)]

__all__ = ["MVIT_PRESETS", "MVIT_SAMPLING", "MViTConfig", "MViTForVideoClassification", "count_flops",
           "count_parameters", "from_pytorchvideo_key", "load_mvit_checkpoint", "mvit_block_settings", "mvit_preset",
           "round_width", "to_pytorchvideo_key"]
