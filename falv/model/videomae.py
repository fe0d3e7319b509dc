"""VideoMAE (Tong et al., "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", NeurIPS 2022) as a falv model family.

**License of the published weights.** The VideoMAE checkpoints published by the authors
(MCG-NJU/VideoMAE, and the ``MCG-NJU/videomae-*`` hub ids converted from them) are released
under **CC-BY-NC-4.0**: non-commercial use only. falv's code here is falv's; the license
binds the weights (``Family.license`` says so, and ``falv`` lists it with the families).

Architecture (a plain ViT over space-time tubelets, as transformers' ``VideoMAEModel``):

* tubelet embedding: one ``Conv3d`` with kernel = stride = ``tubelet_size x patch_size x
  patch_size`` (2 x 16 x 16 in every published model), giving
  ``N = (T / 2) * (H / 16) * (W / 16)`` tokens, frame-major; no CLS token;
* a **fixed** sinusoidal position table over the N tokens (the "attention is all you need"
  table: dim 2i = sin(pos / 10000^(2i/D)), dim 2i+1 = cos(...)), added to the tokens; it is not
  a weight and is in no checkpoint (falv recomputes it, a non-persistent buffer);
* L pre-LN blocks: ``x + attn(LN(x))``, ``x + MLP(LN(x))``; the attention has biases on the
  queries and the values but **none on the keys** (``q_bias``, ``v_bias``; falv fuses the three
  projections into one ``qkv`` linear whose bias is ``[q_bias, 0, v_bias]``, and attends with
  :func:`torch.nn.functional.scaled_dot_product_attention`);
* pooling, as transformers' ``VideoMAEForVideoClassification``: with ``use_mean_pooling``
  (every fine-tuned checkpoint) the mean of all tokens, then ``fc_norm`` (a LayerNorm with
  torch's default eps 1e-5, which transformers does not take from ``layer_norm_eps``); without
  it, a final LayerNorm over the tokens (``videomae.layernorm``) and then the FIRST token
  (``pooling="first"``; VideoMAE has no CLS token, so this is one tubelet's token, exactly
  what transformers does); falv also offers ``pooling="mean"`` there: the mean of the normed
  tokens (used for pre-trained encoders, below);
* a linear head (``classifier``) on the pooled features; ``forward_features`` returns those
  features (before the head's dropout and projection), ``forward_head`` the logits.

Layouts read (:func:`falv.hub.families.load_model` recognises them by ``config.json``):

* falv directories, ``model_type: "falv_videomae"`` (written by :meth:`save_pretrained`):
  ``patch_embed.{weight,bias}``, ``blocks.N.norm1``, ``blocks.N.attn.qkv.weight`` (3D x D),
  ``blocks.N.attn.q_bias`` / ``v_bias``, ``blocks.N.attn.proj``, ``blocks.N.norm2``,
  ``blocks.N.mlp.fc1`` / ``fc2``, ``norm`` (without mean pooling) or ``fc_norm`` (with it),
  ``head``; read strictly, round trip exact.
* transformers directories and hub ids, ``model_type: "videomae"`` (``model.safetensors``,
  sharded safetensors or ``pytorch_model.bin``, read weights-only), as written by
  ``save_pretrained`` of:

  - ``VideoMAEForVideoClassification`` (fine-tuned classifiers, e.g.
    ``MCG-NJU/videomae-base-finetuned-kinetics``): ``videomae.embeddings.patch_embeddings.
    projection.{weight,bias}``, ``videomae.encoder.layer.N.attention.attention.{query,key,value}.
    weight``, ``...attention.attention.q_bias`` / ``v_bias`` (or ``query.bias`` / ``value.bias``,
    transformers 5's in-memory names), ``...attention.output.dense``, ``...layernorm_before``,
    ``...layernorm_after``, ``...intermediate.dense``, ``...output.dense``,
    ``videomae.layernorm`` (without mean pooling), ``fc_norm`` (with it), ``classifier``;
  - ``VideoMAEForPreTraining`` (pre-trained encoders, e.g. ``MCG-NJU/videomae-base``): the same
    ``videomae.*`` encoder keys; its decoder (``decoder.*``, ``encoder_to_decoder.weight``,
    ``mask_token``) serves only the pixel reconstruction and is ignored on purpose;
  - ``VideoMAEModel``: the encoder keys without the ``videomae.`` prefix.

  Every encoder key must be there and be used; a missing, unexpected or mis-shaped key is one
  :class:`~falv.errors.CheckpointError` naming them. Config fields honoured: ``image_size``,
  ``patch_size`` (square only), ``num_channels``, ``num_frames``, ``tubelet_size``,
  ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``,
  ``hidden_act``, dropouts, ``initializer_range``, ``layer_norm_eps``, ``qv_bias`` (older
  configs: ``qkv_bias``), ``use_mean_pooling``, ``id2label``, ``problem_type``; from
  ``preprocessor_config.json`` (or ``video_preprocessor_config.json``) ``image_mean``,
  ``image_std`` and the crop size (which must equal ``image_size``: the position table fixes
  the input size).

**Pre-trained encoders** (no ``classifier``): falv builds the encoder and a fresh head,
labelled by ``labels=`` when given (fine-tuning), else by the config's ``id2label``
(transformers' default: two classes ``LABEL_0``, ``LABEL_1``) with a warning that the logits
mean nothing until trained. The features are usable at once: published encoders have no mean
pooling (``use_mean_pooling: false``) and their final LayerNorm (``videomae.layernorm``), and
falv pools them with ``pooling="mean"`` (mean of the normed tokens: the whole clip), not
transformers' first token; an encoder with ``use_mean_pooling: true`` gets a fresh
``fc_norm`` (unit scale, zero shift) as transformers gives it.

**Clip sampling** (``config.sampling``; the checkpoint does not say its data set, so the label
count does, as for TimeSformer in :func:`falv.hub.convert.timesformer_sampling`):

* 400 classes and 16 frames: Kinetics-400, 16 frames 4 apart at 30 fps (VideoMAE's
  ``--num_frames 16 --sampling_rate 4``, MCG-NJU/VideoMAE ``scripts/kinetics/*/finetune.sh``;
  tested with 5 clips x 3 crops);
* 174 classes: Something-Something v2, 16 frames spread TSN-style over the whole video
  (``ClipSampling(mode="uniform", clip_seconds=None)``; MODEL_ZOO.md: "TSN uniform sampling on
  Something-Something V2", tested with 2 clips x 3 crops);
* otherwise (and for pre-trained encoders) unknown: ``None`` (set ``config.sampling`` or
  ``falv convert --sampling``).

Preprocessing of the published models: ImageNet mean/std, short side resized to 224, centre
crop 224 (transformers' ``VideoMAEImageProcessor``).

**Not supported:** the original MCG-NJU ``.pth`` files (convert them with transformers'
``convert_videomae_to_pytorch.py`` first), VideoMAE V2 checkpoints (other layouts; giant
models), non-square images or patches, learnable position embeddings, input clips of another
frame count or size than the config's (the fixed table covers exactly N tokens, as in
transformers, which raises too), masked pre-training (the decoder is not built).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from falv.config import ClipSampling, accepts_num_labels, check_choice
from falv.errors import CheckpointError, ConfigError
from falv.hub.families import Family, read_checkpoint
from falv.model import flops
from falv.model.classifier import FamilyClassifier, FamilyConfig
from falv.model.schemes import DropPath

VIDEOMAE_MODEL_TYPE = "falv_videomae"
TRANSFORMERS_MODEL_TYPE = "videomae"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LICENSE = "CC-BY-NC-4.0 (published VideoMAE weights)"

POOLINGS = ("mean", "first")
#: transformers' ``ACT2FN`` names falv builds (the tanh GELUs are one function).
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish")

#: Kinetics-400 has 400 classes; VideoMAE samples 16 frames 4 apart (MCG-NJU/VideoMAE finetune.sh).
KINETICS_CLASSES, KINETICS_FRAMES, KINETICS_STRIDE = 400, 16, 4
#: Something-Something v2 has 174 classes; VideoMAE spreads the frames over the whole video (TSN).
SSV2_CLASSES = 174


@accepts_num_labels
@dataclass
class VideoMAEConfig(FamilyConfig):
    """Configuration of :class:`VideoMAEForVideoClassification`.

    The architecture fields mean what they mean in transformers' ``VideoMAEConfig`` and have its
    defaults (ViT-B, 16 frames of 224 x 224, tubelets 2 x 16 x 16, ``layer_norm_eps`` 1e-12).
    ``fc_norm_eps`` is the eps of the LayerNorm after mean pooling (transformers: torch's
    default 1e-5). ``pooling`` (``"mean"`` / ``"first"``, default: ``"mean"`` with
    ``use_mean_pooling``, else ``"first"`` as transformers) says which tokens the features are
    when ``use_mean_pooling`` is false (see the module docstring). Label and preprocessing
    fields mean what they mean in :class:`falv.FALConfig`.
    """

    ARCHITECTURE: ClassVar[str] = "VideoMAEForVideoClassification"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_frames: int = 16
    tubelet_size: int = 2
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    fc_norm_eps: float = 1e-5
    qv_bias: bool = True
    use_mean_pooling: bool = True
    pooling: str | None = None
    head_dropout_prob: float = 0.0
    model_type: str = VIDEOMAE_MODEL_TYPE

    def __post_init__(self) -> None:
        self._normalise_labels()
        if self.pooling is None:
            self.pooling = "mean" if self.use_mean_pooling is True else "first"
        self.validate()

    def validate(self) -> None:
        if self.model_type != VIDEOMAE_MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not {VIDEOMAE_MODEL_TYPE!r}")
        for name in ("image_size", "patch_size", "num_channels", "num_frames", "tubelet_size", "hidden_size",
                     "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ConfigError(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_attention_heads}")
        check_choice("hidden_act", self.hidden_act, HIDDEN_ACTS)
        check_choice("pooling", self.pooling, POOLINGS)  # type: ignore[arg-type]
        for name in ("qv_bias", "use_mean_pooling"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.use_mean_pooling and self.pooling != "mean":
            raise ConfigError("use_mean_pooling pools the mean of the tokens; pooling='first' needs "
                              "use_mean_pooling=false")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate", "head_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "fc_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        self._validate_labels()

    # -- derived ------------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (time, height, width)."""
        side = self.image_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w

_VIT = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}
#: The published VideoMAE sizes (ViT-S/B/L/H encoders, 16 x 224 x 224 clips, 2 x 16 x 16 tubelets).
VIDEOMAE_PRESETS: dict[str, dict[str, Any]] = {
    f"videomae-{name}": dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2, **vit)
    for name, vit in _VIT.items()
}


def videomae_preset(name: str, **overrides: Any) -> VideoMAEConfig:
    """A :class:`VideoMAEConfig` of a published size; keyword arguments override fields."""
    if name not in VIDEOMAE_PRESETS:
        raise ConfigError(f"unknown VideoMAE preset {name!r}; valid presets: {', '.join(VIDEOMAE_PRESETS)}")
    return VideoMAEConfig(**{**VIDEOMAE_PRESETS[name], **overrides})


def videomae_sampling(num_frames: int, num_labels: int) -> ClipSampling | None:
    """The documented clip sampling of a fine-tuned VideoMAE, guessed from its label count
    (module docstring): Kinetics-400 16 x 4 at 30 fps, SSv2 whole-video uniform, else None."""
    if num_labels == SSV2_CLASSES:
        return ClipSampling(mode="uniform", clip_seconds=None,
                            source=f"VideoMAE SSv2: {num_frames} frames TSN-style over the whole video")
    if num_labels == KINETICS_CLASSES and num_frames == KINETICS_FRAMES:
        return ClipSampling(mode="dense", frame_stride=KINETICS_STRIDE, fps=30.0,
                            source="VideoMAE Kinetics-400: 16x4 at 30 fps (MCG-NJU/VideoMAE finetune.sh)")
    return None


# -- modules --------------------------------------------------------------------------------------


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position table, (1, num_positions, dim) float32: dim 2i is
    sin(pos / 10000^(2i/dim)), dim 2i+1 cos of the same angle (computed in float64, as the
    reference does in numpy). Computed on the CPU also inside a ``meta`` device context (a
    skeleton about to be loaded): torch's meta ``arange`` would import ``torch._dynamo`` (~2 s)."""
    with torch.device("cpu"):
        pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
        j = torch.arange(dim)
        angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (2 * (j // 2)).to(torch.float64) / dim)
        table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32).unsqueeze(0)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "relu":
        return nn.ReLU()
    return nn.SiLU()  # silu, swish (validated by the config)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection whose bias is
    ``[q_bias, 0, v_bias]`` (VideoMAE has no key bias), and an output projection ``proj``."""

    def __init__(self, dim: int, num_heads: int, qv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x)  # a module call, so that inference may swap in a packed linear
        if self.q_bias is not None:
            qkv = qkv + torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias)).to(qkv.dtype)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Module):
    """``fc1`` -> activation -> ``fc2`` -> dropout (transformers' intermediate / output dense)."""

    def __init__(self, dim: int, hidden: int, act: str, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: VideoMAEConfig, drop_path: float) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, config.num_attention_heads, config.qv_bias, config.attention_probs_dropout_prob,
                              config.hidden_dropout_prob)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(d, config.intermediate_size, config.hidden_act, config.hidden_dropout_prob)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoMAEForVideoClassification(FamilyClassifier):
    """VideoMAE encoder, pooling and a linear head, with the interface of
    :class:`falv.FALForVideoClassification` (module docstring)."""

    config_class = VideoMAEConfig
    main_input_name = "pixel_values"

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.config = config
        d, p, t = config.hidden_size, config.patch_size, config.tubelet_size
        self.patch_embed = nn.Conv3d(config.num_channels, d, kernel_size=(t, p, p), stride=(t, p, p))
        table = sinusoid_table(config.num_patches, d)  # on the CPU; then on the module's device (meta too)
        self.register_buffer("position_table", table.to(torch.empty(0).device), persistent=False)
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = None if config.use_mean_pooling else nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(d, eps=config.fc_norm_eps) if config.use_mean_pooling else None
        self.head_drop = nn.Dropout(config.head_dropout_prob)
        self.head = nn.Linear(d, config.num_labels)
        self.initialise()

    # -- weights --------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """ViT init (transformers' VideoMAE): truncated normal (std ``initializer_range``) for
        the linears and the tubelet convolution, zero biases (q/v included), unit LayerNorms."""
        self._init_modules(self.modules())
        for block in self.blocks:
            if block.attn.q_bias is not None:
                nn.init.zeros_(block.attn.q_bias)
                nn.init.zeros_(block.attn.v_bias)

    def init_head(self) -> None:
        """Initialise the classification head alone (a new label set on loaded weights)."""
        self._init_modules(self.head.modules())

    def _init_modules(self, modules: Any) -> None:
        std = self.config.initializer_range
        for module in modules:
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _materialize(self, fresh: tuple[str, ...]) -> None:
        """After loading into a meta-device skeleton: allocate and initialise the ``fresh``
        submodules (``head``, ``fc_norm``) and compute the position table on the weights' device."""
        device = self.patch_embed.weight.device
        for name in fresh:
            module = getattr(self, name)
            module.to_empty(device=device)
            self._init_modules(module.modules())
        self.position_table = sinusoid_table(self.config.num_patches, self.config.hidden_size).to(device)

    # -- forward --------------------------------------------------------------------------------
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens, (B, N, D): transformers' ``VideoMAEModel`` ``last_hidden_state``
        (after the final LayerNorm when the model has one, i.e. without mean pooling)."""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}"
            )
        cfg = self.config
        _, frames, channels, height, width = pixel_values.shape
        if (frames, channels, height, width) != (cfg.num_frames, cfg.num_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"VideoMAE takes clips of {cfg.num_frames} frames of {cfg.num_channels} x {cfg.image_size} x "
                f"{cfg.image_size} (its position table is fixed), got {frames} x {channels} x {height} x {width}"
            )
        x = self.patch_embed(pixel_values.transpose(1, 2))  # (B, C, T, H, W) -> (B, D, T', H', W')
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_table.to(dtype=x.dtype)
        for block in self.blocks:
            x = block(x)
        return x if self.norm is None else self.norm(x)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding (B, D): ``fc_norm`` of the mean token (mean pooling), else the
        final-normed first token (``pooling="first"``, transformers) or mean token (``"mean"``)."""
        tokens = self.encode(pixel_values)
        if self.fc_norm is not None:
            return self.fc_norm(tokens.mean(dim=1))
        return tokens[:, 0] if self.config.pooling == "first" else tokens.mean(dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(features))

    # -- save / load ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, *, labels: list[str] | None = None,
                        device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **hub: Any) -> VideoMAEForVideoClassification:
        """Load a falv VideoMAE directory, or a transformers VideoMAE directory or hub id (in
        eval mode). ``labels`` replaces the head with a fresh one for a new label set;
        ``revision``, ``cache_dir``, ``local_files_only`` go to the hub."""
        from falv.hub.load import resolve

        path = resolve(path_or_id, **hub)
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} has no {CONFIG_NAME}: not a model directory")
        data = _read_json(path / CONFIG_NAME)
        model_type = data.get("model_type")
        if model_type == VIDEOMAE_MODEL_TYPE:
            model = _load_falv_dir(path, labels)
        elif model_type == TRANSFORMERS_MODEL_TYPE:
            model = load_transformers_dir(path, data, labels)
        else:
            raise CheckpointError(f"{path / CONFIG_NAME} has model_type {model_type!r}; VideoMAE reads "
                                  f"{VIDEOMAE_MODEL_TYPE!r} and {TRANSFORMERS_MODEL_TYPE!r}")
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        model.name_or_path = str(path_or_id)
        return model


# -- loading --------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as exc:  # SafetensorError, OSError: one clear line
        raise CheckpointError(f"cannot read weights {file}: {exc}") from exc


def read_dir_weights(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights of a model directory and the file they came from: ``model.safetensors``,
    sharded safetensors (``model.safetensors.index.json``) or ``pytorch_model.bin`` (read
    weights-only, :func:`falv.hub.families.read_checkpoint`)."""
    if (path / WEIGHTS_NAME).is_file():
        return _read_safetensors(path / WEIGHTS_NAME), path / WEIGHTS_NAME
    index = path / f"{WEIGHTS_NAME}.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_read_safetensors(path / shard))
        return state, index
    if (path / "pytorch_model.bin").is_file():
        checkpoint = read_checkpoint(path / "pytorch_model.bin")
        state = {k: v for k, v in checkpoint.state().items() if isinstance(v, torch.Tensor)}
        return state, path / "pytorch_model.bin"
    raise CheckpointError(f"{path} has no weights ({WEIGHTS_NAME}, its sharded index, or pytorch_model.bin)")


def _check_keys(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], file: Path,
                what: str, optional: frozenset[str] = frozenset()) -> None:
    """One CheckpointError naming the missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}"
             for k in sorted(state) if k in expected and tuple(state[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{file} does not match {what}: missing {missing[:8]}, unexpected {unexpected[:8]}, "
                              f"shape mismatch {wrong[:8]}")


def _skeleton(config: VideoMAEConfig) -> VideoMAEForVideoClassification:
    with torch.device("meta"):
        return VideoMAEForVideoClassification(config)


def _build(config: VideoMAEConfig, state: dict[str, torch.Tensor],
           fresh: tuple[str, ...]) -> VideoMAEForVideoClassification:
    """A model of ``config`` holding ``state`` (keys checked before), with ``fresh`` submodules
    newly initialised. Built on the meta device and loaded with ``assign`` (no copy of weights
    that are already float32, no random init of what is loaded)."""
    model = _skeleton(config)
    own = model.state_dict()
    state = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k.split(".", 1)[0] not in fresh]
    if missing or unexpected:  # a bug in the key maps: the files were checked already
        raise CheckpointError(f"weights do not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model._materialize(fresh)
    return model


def _load_falv_dir(path: Path, labels: list[str] | None = None) -> VideoMAEForVideoClassification:
    config = VideoMAEConfig.from_json_file(path / CONFIG_NAME)
    if not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}")
    state = _read_safetensors(path / WEIGHTS_NAME)
    expected = {k: tuple(v.shape) for k, v in _skeleton(config).state_dict().items()}
    _check_keys(state, expected, path / WEIGHTS_NAME, "its config.json (a falv VideoMAE)")
    fresh: tuple[str, ...] = ()
    if labels is not None:
        config = config.with_labels(list(labels))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        fresh = ("head",)
    return _build(config, state, fresh)


# transformers' names -> falv's --------------------------------------------------------------------

#: Keys of VideoMAEForPreTraining's decoder: pixel reconstruction only, never used for classification.
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")
_PARAM_SUFFIXES = (".weight", ".bias")


def transformers_key_map(config: VideoMAEConfig, prefix: str = "videomae.", head: bool = True,
                         fc_norm: bool | None = None) -> dict[str, tuple[str, int | None]]:
    """transformers key -> (falv key, part): ``part`` 0/1/2 is the query/key/value third of the
    fused ``qkv`` weight, None a tensor taken as it is. ``prefix``: ``"videomae."`` for
    VideoMAEForVideoClassification / ForPreTraining, ``""`` for VideoMAEModel; ``head``: the
    ``classifier``; ``fc_norm`` (default: with mean pooling when ``head``)."""
    out: dict[str, tuple[str, int | None]] = {}

    def pair(source: str, target: str) -> None:
        for suffix in _PARAM_SUFFIXES:
            out[source + suffix] = (target + suffix, None)

    pair(f"{prefix}embeddings.patch_embeddings.projection", "patch_embed")
    for i in range(config.num_hidden_layers):
        t, f = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        for part, name in enumerate(("query", "key", "value")):
            out[f"{t}attention.attention.{name}.weight"] = (f"{f}attn.qkv.weight", part)
        if config.qv_bias:
            out[f"{t}attention.attention.q_bias"] = (f"{f}attn.q_bias", None)
            out[f"{t}attention.attention.v_bias"] = (f"{f}attn.v_bias", None)
        pair(f"{t}attention.output.dense", f"{f}attn.proj")
        pair(f"{t}layernorm_before", f"{f}norm1")
        pair(f"{t}layernorm_after", f"{f}norm2")
        pair(f"{t}intermediate.dense", f"{f}mlp.fc1")
        pair(f"{t}output.dense", f"{f}mlp.fc2")
    if not config.use_mean_pooling:
        pair(f"{prefix}layernorm", "norm")
    if fc_norm if fc_norm is not None else (head and config.use_mean_pooling):
        pair("fc_norm", "fc_norm")
    if head:
        pair("classifier", "head")
    return out


def _canonical_bias_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 names the query/value biases ``query.bias`` / ``value.bias`` in memory
    (its checkpoints keep ``q_bias`` / ``v_bias``): read either. A file holding both names for
    one bias keeps the second as an unexpected key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for modern, legacy in ((".attention.attention.query.bias", ".attention.attention.q_bias"),
                               (".attention.attention.value.bias", ".attention.attention.v_bias")):
            if key.endswith(modern):
                renamed = key[: -len(modern)] + legacy
                if renamed not in state:
                    key = renamed
        out[key] = value
    return out


def _square(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"VideoMAE {name} {value} is not square; falv reads square images and patches only")
        value = value[0]
    return value


def _crop_size(preprocessor: dict[str, Any]) -> int | None:
    crop = preprocessor.get("crop_size") if preprocessor.get("do_center_crop", True) else None
    if crop is None:
        size = preprocessor.get("size")
        crop = size if isinstance(size, dict) and {"height", "width"} <= set(size) else None
    if isinstance(crop, int):
        return crop
    if isinstance(crop, dict) and "height" in crop and "width" in crop:
        if crop["height"] != crop["width"]:
            raise CheckpointError(f"the preprocessor crops {crop['height']} x {crop['width']}: falv reads square "
                                  "VideoMAE inputs only")
        return int(crop["height"])
    return None


_SAME_NAME_FIELDS = ("num_channels", "num_frames", "tubelet_size", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
                     "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps", "use_mean_pooling")


def config_from_transformers(data: dict[str, Any], preprocessor: dict[str, Any] | None = None, *,
                             classifier: bool = True) -> VideoMAEConfig:
    """A :class:`VideoMAEConfig` from a transformers ``VideoMAEConfig`` dict and its
    preprocessor config. ``classifier``: the checkpoint has a fine-tuned head (then the clip
    sampling is guessed from the label count); without one, a mean-pooling-free encoder pools
    the mean of its normed tokens (``pooling="mean"``)."""
    kwargs: dict[str, Any] = {k: data[k] for k in _SAME_NAME_FIELDS if k in data and data[k] is not None}
    kwargs["image_size"] = _square(data, "image_size", 224)
    kwargs["patch_size"] = _square(data, "patch_size", 16)
    if "qv_bias" in data:
        kwargs["qv_bias"] = data["qv_bias"]
    elif "qkv_bias" in data:  # configs written before transformers renamed it
        kwargs["qv_bias"] = data["qkv_bias"]
    if isinstance(data.get("id2label"), dict) and data["id2label"]:
        kwargs["id2label"] = {int(k): str(v) for k, v in data["id2label"].items()}
    elif isinstance(data.get("num_labels"), int):
        kwargs["num_labels"] = data["num_labels"]
    if data.get("problem_type") == "multi_label_classification":
        kwargs["problem_type"] = "multi_label_classification"
    if preprocessor:
        for key in ("image_mean", "image_std"):
            value = preprocessor.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value] * int(kwargs.get("num_channels", 3))
            if value is not None:
                kwargs[key] = tuple(value)
        crop = _crop_size(preprocessor)
        if crop is not None and crop != kwargs["image_size"]:
            raise CheckpointError(f"the preprocessor config crops {crop} px but config.json's image_size is "
                                  f"{kwargs['image_size']}: VideoMAE's fixed position table takes exactly image_size")
    if not classifier and not kwargs.get("use_mean_pooling", True):
        kwargs["pooling"] = "mean"
    try:
        config = VideoMAEConfig(**kwargs)
    except ConfigError as exc:
        raise CheckpointError(f"unusable VideoMAE config.json: {exc}") from exc
    if classifier:
        config.sampling = videomae_sampling(config.num_frames, config.num_labels)
    return config


def load_transformers_dir(path: Path, data: dict[str, Any],
                          labels: list[str] | None = None) -> VideoMAEForVideoClassification:
    """A transformers VideoMAE directory (module docstring) as a falv model, keys checked strictly."""
    from falv.hub.load import load_preprocessor_config

    raw, file = read_dir_weights(path)
    state = _canonical_bias_names(raw)
    prefix = "videomae." if any(k.startswith("videomae.") for k in state) else ""
    classifier = bool(prefix) and any(k.startswith("classifier.") for k in state)
    config = config_from_transformers(data, load_preprocessor_config(path), classifier=classifier)
    has_fc_norm = not classifier and config.use_mean_pooling and any(k.startswith("fc_norm.") for k in state)
    key_map = transformers_key_map(config, prefix, head=classifier,
                                   fc_norm=config.use_mean_pooling and (classifier or has_fc_norm))
    kind = ("VideoMAEForVideoClassification" if classifier
            else "VideoMAEForPreTraining" if prefix else "VideoMAEModel")
    if prefix and not classifier:  # the pre-training decoder: ignored on purpose (module docstring)
        state = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}

    own = {k: tuple(v.shape) for k, v in _skeleton(config).state_dict().items()}
    expected: dict[str, tuple[int, ...]] = {}
    for source, (target, part) in key_map.items():
        shape = own[target]
        expected[source] = shape if part is None else (shape[0] // 3, *shape[1:])
    _check_keys(state, expected, file, f"a transformers {kind} of its config.json")

    converted: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor | None]] = {}
    for source, (target, part) in key_map.items():
        if part is None:
            converted[target] = state[source]
        else:
            parts.setdefault(target, [None, None, None])[part] = state[source]
    for target, pieces in parts.items():
        converted[target] = torch.cat(pieces)  # type: ignore[arg-type]

    fresh: list[str] = []
    if labels is not None or not classifier:
        fresh.append("head")
        converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    if config.use_mean_pooling and not any(k.startswith("fc_norm.") for k in converted):
        fresh.append("fc_norm")
    if labels is not None:
        config = config.with_labels(list(labels))
    elif not classifier:
        warnings.warn(
            f"{path} is a pre-trained VideoMAE encoder without a classifier: its head "
            f"({config.num_labels} labels of config.json) is freshly initialised and its logits mean nothing "
            "until trained; pass labels= to fine-tune, or use forward_features",
            stacklevel=3,
        )
    return _build(config, converted, tuple(fresh))


# -- FLOPs, family -------------------------------------------------------------------------------------


def count_flops(config: VideoMAEConfig, batch_size: int = 1) -> int:
    """FLOPs of one forward pass, counted as FAL's are (:func:`falv.model.flops.count_flops`)."""
    return flops.count_flops(config, None, None, batch_size, model_class=VideoMAEForVideoClassification)


def count_parameters(config: VideoMAEConfig) -> int:
    return flops.count_parameters(config, model_class=VideoMAEForVideoClassification)


def _load_dir(path: Path, config: dict[str, Any], labels: list[str] | None = None) -> VideoMAEForVideoClassification:
    if config.get("model_type") == TRANSFORMERS_MODEL_TYPE:
        return load_transformers_dir(path, config, labels)
    return _load_falv_dir(path, labels)


FAMILIES = [Family(
    name="videomae",
    description="VideoMAE (falv directories; transformers VideoMAE directories and hub ids: fine-tuned "
                "classifiers and pre-trained encoders)",
    model_types=(VIDEOMAE_MODEL_TYPE, TRANSFORMERS_MODEL_TYPE),
    load_dir=_load_dir,
    architectures=("VideoMAEForVideoClassification", "VideoMAEForPreTraining", "VideoMAEModel"),
    license=LICENSE,
    model_class=VideoMAEForVideoClassification,
    config_class=VideoMAEConfig,
    presets=VIDEOMAE_PRESETS,
)]
