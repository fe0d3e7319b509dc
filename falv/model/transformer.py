"""The FAL encoder and :class:`FALForVideoClassification` (Sec. 3 of the FAL paper).

Input ``pixel_values`` is ``(B, T, C, H, W)`` as in transformers. A block is the
scheme's attention steps (each pre-LN, with a residual) followed by a pre-LN
1-hidden-layer MLP with a residual (Eq. 9). The clip embedding is the final
LayerNorm of the CLS token (Eq. 10); the head is linear or a 1-hidden-layer MLP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from falv.config import FALConfig
from falv.model.attention import ATTENTION_BACKENDS
from falv.model.embeddings import Embeddings
from falv.model.schemes import AttentionStep, DropPath, StepAttention, scheme_steps

_ACTIVATIONS = {"gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        from falv.errors import ConfigError

        raise ConfigError(f"unknown hidden_act {name!r}; valid values: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """Linear -> activation -> Linear (TimeSformer's ``mlp.fc1`` / ``mlp.fc2``)."""

    def __init__(self, dim: int, hidden: int, act: str, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One FAL block: the scheme's attention steps, then the MLP (Eq. 7-9)."""

    def __init__(self, config: FALConfig, drop_path: float) -> None:
        super().__init__()
        d = config.hidden_size
        self.steps = nn.ModuleDict(
            {
                name: AttentionStep(
                    name,
                    grouping,
                    d,
                    config.num_attention_heads,
                    qkv_bias=config.qkv_bias,
                    attn_drop=config.attention_probs_dropout_prob,
                    proj_drop=config.hidden_dropout_prob,
                    eps=config.layer_norm_eps,
                    cls_mode=cls_mode,
                    out_fc=out_fc,
                )
                for name, grouping, cls_mode, out_fc in scheme_steps(config.attention_type, config.divided_order)
            }
        )
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = MLP(d, config.intermediate_size, config.hidden_act, config.hidden_dropout_prob)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, cls: torch.Tensor, x: torch.Tensor, grid: tuple[int, int, int], need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[StepAttention, ...]]:
        records = []
        for step in self.steps.values():
            cls, x, record = step(cls, x, grid, self.drop_path, need_weights)
            if record is not None:
                records.append(record)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        cls = cls + self.drop_path(self.mlp(self.norm2(cls)))
        return cls, x, tuple(records)


@dataclass
class FALModelOutput:
    """What the encoder returns.

    ``last_hidden_state``: (B, K + T*N, D), CLS token(s) first, then patches frame-major
    (K = T for space-only, whose per-frame CLS tokens are averaged in ``pooler_output``);
    ``pooler_output``: the clip embedding LN(CLS) (B, D), Eq. 10;
    ``hidden_states``: the input of every block and the final output, same layout;
    ``attentions``: per block, one :class:`StepAttention` per attention step.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[tuple[StepAttention, ...], ...] | None = None


@dataclass
class VideoClassifierOutput:
    """``logits`` (B, num_labels); ``loss`` when labels were given; ``embeddings`` (B, D)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[tuple[StepAttention, ...], ...] | None = None

    def __getitem__(self, key: str) -> Any:  # outputs["logits"], as with transformers outputs
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [k for k in ("loss", "logits", "embeddings", "hidden_states", "attentions") if getattr(self, k) is not None]


class FALModel(nn.Module):
    """The FAL encoder: embeddings, L blocks, final LayerNorm."""

    def __init__(self, config: FALConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # stochastic depth rule
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> FALModelOutput:
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}")
        cls, x, grid = self.embeddings(pixel_values)
        hidden, attentions = [], []
        for block in self.blocks:
            if output_hidden_states:
                hidden.append(torch.cat([cls, x], dim=1))
            cls, x, records = block(cls, x, grid, output_attentions)
            if output_attentions:
                attentions.append(records)
        if output_hidden_states:
            hidden.append(torch.cat([cls, x], dim=1))
        # Space-only: average over frames before the final norm (TimeSformer); no-op when K == 1.
        pooled = self.norm(cls.mean(dim=1))
        last = self.norm(torch.cat([cls, x], dim=1))
        return FALModelOutput(
            last_hidden_state=last,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class ClassificationHead(nn.Module):
    """Linear head (``fc``), or the paper's 1-hidden-layer MLP (``fc1``, ``fc2``)."""

    def __init__(self, config: FALConfig) -> None:
        super().__init__()
        d, k = config.hidden_size, config.num_labels
        self.drop = nn.Dropout(config.head_dropout_prob)
        if config.head_type == "mlp":
            hidden = config.head_hidden_size or d
            self.fc1 = nn.Linear(d, hidden)
            self.act = _activation(config.hidden_act)
            self.fc2 = nn.Linear(hidden, k)
            self.fc = None
        else:
            self.fc = nn.Linear(d, k)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.drop(features)
        if self.fc is not None:
            return self.fc(x)
        return self.fc2(self.drop(self.act(self.fc1(x))))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy for single-label (class indices), BCE-with-logits for multi-label (multi-hot)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))
    return F.cross_entropy(logits.float(), labels.long())


class ModelProperties:
    """``device``, ``dtype`` and ``num_parameters()`` of an ``nn.Module`` classifier, as
    transformers' models have them (FAL and the CNN baseline)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device  # type: ignore[attr-defined]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype  # type: ignore[attr-defined]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # type: ignore[attr-defined]

    def initialise(self) -> None:
        """``init_weights()``, except on the meta device: a skeleton whose weights a checkpoint is
        about to replace holds no values to fill (and torch's meta ``normal_`` imports
        ``torch._dynamo``, about 2 s of every load)."""
        if not any(p.is_meta for p in self.parameters()):  # type: ignore[attr-defined]
            self.init_weights()  # type: ignore[attr-defined]


class FALForVideoClassification(ModelProperties, nn.Module):
    """FAL video classifier with HF-style ``from_pretrained`` / ``save_pretrained``.

    ``forward`` computes in the dtype it is given, like any torch module;
    ``forward_features`` returns the clip embedding and ``forward_head`` the logits.
    """

    config_class = FALConfig
    main_input_name = "pixel_values"

    def __init__(self, config: FALConfig) -> None:
        super().__init__()
        self.config = config
        self.fal = FALModel(config)
        self.head = ClassificationHead(config)
        self.initialise()

    # -- weights ----------------------------------------------------------
    def init_weights(self) -> None:
        """TimeSformer/ViT init: truncated normal (std=initializer_range) for linears and
        embeddings, zero biases, unit LayerNorms, and zero ``temporal_fc`` in every
        divided-attention block but the first (so those blocks start as image blocks); the
        time embedding normal with std ``time_embedding_init_std`` (TimeSformer's 0: zeros)."""
        self._init_modules(self.modules())
        std = self.config.initializer_range
        emb = self.fal.embeddings
        for p in (emb.cls_token, emb.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=std)
        if emb.time_embed is not None:
            nn.init.normal_(emb.time_embed, std=self.config.time_embedding_init_std)  # std 0: zeros
        for i, block in enumerate(self.fal.blocks):
            for step in block.steps.values():
                if step.fc is not None and i > 0:
                    nn.init.zeros_(step.fc.weight)
                    nn.init.zeros_(step.fc.bias)

    def init_head(self) -> None:
        """Initialise the classification head alone (a new label set on loaded weights)."""
        self._init_modules(self.head.modules())

    def _init_modules(self, modules: Any) -> None:
        std = self.config.initializer_range
        for module in modules:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- forward ----------------------------------------------------------
    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding LN(CLS) of Eq. 10, (B, D): what `falv label` exports."""
        return self.fal(pixel_values).pooler_output

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        **_: Any,
    ) -> VideoClassifierOutput:
        out = self.fal(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.head(out.pooler_output)
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return VideoClassifierOutput(
            logits=logits,
            loss=loss,
            embeddings=out.pooler_output,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits, labels, self.config.is_multilabel)

    # -- settings ---------------------------------------------------------
    def set_attention_backend(self, backend: str) -> FALForVideoClassification:
        """``"sdpa"`` (default, fused kernels) or ``"reference"`` (explicit softmax)."""
        from falv.config import check_choice

        check_choice("attention backend", backend, ATTENTION_BACKENDS)
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = backend
        return self

    # -- hub --------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **kwargs: Any) -> FALForVideoClassification:
        """Load a falv directory, a transformers TimeSformer directory or hub id, or a
        TimeSformer ``.pyth`` checkpoint (converted on the fly).

        Keyword arguments: ``num_frames`` / ``image_size`` resize the positional
        embeddings for good; ``labels`` replaces the head with a fresh one for a new
        label set; ``revision``, ``cache_dir``, ``local_files_only`` go to the hub.
        """
        from falv.hub.load import load_model

        return load_model(path_or_id, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and preprocessor_config.json (atomically)."""
        from falv.hub.save import save_model

        save_model(self, directory)


# The name used in the FAL model card's snippet.
FALVideoClassifierForVideoClassification = FALForVideoClassification
