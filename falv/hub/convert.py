"""Explicit, strict conversions from public TimeSformer checkpoints to falv.

Two sources share one key map:

* transformers' ``TimesformerForVideoClassification`` (``model_type: "timesformer"``,
  keys ``timesformer.encoder.layer.{i}.temporal_attention.attention.qkv.weight`` ...);
* the original facebookresearch/TimeSformer ``.pyth`` checkpoints (the
  ``model_state`` dict, keys ``model.blocks.{i}.temporal_attn.qkv.weight`` ...).

Every source key must be used and every falv key filled, with shapes checked;
otherwise a :class:`CheckpointError` names the missing, unexpected or
mismatched keys. Pickled checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from falv.config import ClipSampling, FALConfig
from falv.errors import CheckpointError

Transform = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _conv_to_linear(t: torch.Tensor) -> torch.Tensor:
    """Conv2d patch kernel (D, C, P, P) -> falv's linear patch embedding (D, C*P*P)."""
    return t.reshape(t.shape[0], -1) if t.ndim == 4 else t


# Per-block key stems: (transformers stem, original TimeSformer stem, falv stem).
# "{main}" is the step that holds the block's main attention (space or joint).
_BLOCK_KEYS = [
    ("attention.attention.qkv", "attn.qkv", "steps.{main}.attn.qkv"),
    ("attention.output.dense", "attn.proj", "steps.{main}.attn.proj"),
    ("layernorm_before", "norm1", "steps.{main}.norm"),
    ("layernorm_after", "norm2", "norm2"),
    ("intermediate.dense", "mlp.fc1", "mlp.fc1"),
    ("output.dense", "mlp.fc2", "mlp.fc2"),
]
_TEMPORAL_KEYS = [
    ("temporal_layernorm", "temporal_norm1", "steps.time.norm"),
    ("temporal_attention.attention.qkv", "temporal_attn.qkv", "steps.time.attn.qkv"),
    ("temporal_attention.output.dense", "temporal_attn.proj", "steps.time.attn.proj"),
    ("temporal_dense", "temporal_fc", "steps.time.fc"),
]
_TOP_KEYS = [
    # (transformers, original, falv, transform)
    ("timesformer.embeddings.cls_token", "model.cls_token", "fal.embeddings.cls_token", _identity),
    ("timesformer.embeddings.position_embeddings", "model.pos_embed", "fal.embeddings.pos_embed", _identity),
    ("timesformer.embeddings.time_embeddings", "model.time_embed", "fal.embeddings.time_embed", _identity),
    ("timesformer.embeddings.patch_embeddings.projection.weight", "model.patch_embed.proj.weight",
     "fal.embeddings.patch_embed.proj.weight", _conv_to_linear),
    ("timesformer.embeddings.patch_embeddings.projection.bias", "model.patch_embed.proj.bias",
     "fal.embeddings.patch_embed.proj.bias", _identity),
    ("timesformer.layernorm.weight", "model.norm.weight", "fal.norm.weight", _identity),
    ("timesformer.layernorm.bias", "model.norm.bias", "fal.norm.bias", _identity),
    ("classifier.weight", "model.head.weight", "head.fc.weight", _identity),
    ("classifier.bias", "model.head.bias", "head.fc.bias", _identity),
]
SUPPORTED_TIMESFORMER_SCHEMES = ("space_only", "joint_space_time", "divided_space_time")


def timesformer_key_map(config: FALConfig, source: str) -> dict[str, tuple[str, Transform]]:
    """``{source key: (falv key, transform)}`` for a TimeSformer checkpoint.

    ``source`` is ``"transformers"`` or ``"original"``. Only the three schemes
    TimeSformer implements exist there.
    """
    if config.attention_type not in SUPPORTED_TIMESFORMER_SCHEMES:
        raise CheckpointError(
            f"TimeSformer checkpoints have no {config.attention_type!r} attention; "
            f"they use one of {', '.join(SUPPORTED_TIMESFORMER_SCHEMES)}"
        )
    if config.patch_frames != 1:
        raise CheckpointError(
            f"TimeSformer checkpoints embed one frame per patch token; this model has patch_frames={config.patch_frames}"
        )
    if config.motion_input != "none":
        raise CheckpointError(
            f"TimeSformer checkpoints embed pixels only; this model has motion_input={config.motion_input!r}"
        )
    col = {"transformers": 0, "original": 1}[source]
    layer_prefix = "timesformer.encoder.layer." if source == "transformers" else "model.blocks."
    main = "joint" if config.attention_type == "joint_space_time" else "space"
    mapping: dict[str, tuple[str, Transform]] = {}
    for row in _TOP_KEYS:
        mapping[row[col]] = (row[2], row[3])
    for i in range(config.num_hidden_layers):
        stems = list(_BLOCK_KEYS)
        if config.attention_type == "divided_space_time":
            stems += _TEMPORAL_KEYS
        for row in stems:
            for suffix in ("weight", "bias"):
                src = f"{layer_prefix}{i}.{row[col]}.{suffix}"
                dst = f"fal.blocks.{i}.{row[2].format(main=main)}.{suffix}"
                mapping[src] = (dst, _identity)
    return mapping


def transformers_to_original(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """A transformers TimeSformer state dict in the original ``.pyth`` ``model_state`` layout.

    The inverse of the key map above, for writing checkpoints the way the reference code
    does (tests, benchmarks). The temporal keys are taken where the state has them.
    """
    out = {orig: state[hf] for hf, orig, _falv, _t in _TOP_KEYS if hf in state}
    for i in range(num_layers):
        for hf_stem, orig_stem, _falv in _BLOCK_KEYS + _TEMPORAL_KEYS:
            for suffix in ("weight", "bias"):
                key = f"timesformer.encoder.layer.{i}.{hf_stem}.{suffix}"
                if key in state:
                    out[f"model.blocks.{i}.{orig_stem}.{suffix}"] = state[key]
    return out


def convert_state_dict(
    source_state: dict[str, torch.Tensor],
    config: FALConfig,
    source: str,
    expected: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Apply :func:`timesformer_key_map` strictly against ``expected`` (a falv state dict)."""
    mapping = timesformer_key_map(config, source)
    # Keys a model of this config does not have (e.g. no time embedding) must be absent too.
    mapping = {k: v for k, v in mapping.items() if v[0] in expected}
    ignorable = {"timesformer.embeddings.position_ids"}
    unexpected = sorted(k for k in source_state if k not in mapping and k not in ignorable)
    missing = sorted(k for k in mapping if k not in source_state)
    if unexpected or missing:
        raise CheckpointError(_key_report(missing, unexpected))
    out: dict[str, torch.Tensor] = {}
    mismatched = []
    for src, (dst, transform) in mapping.items():
        value = transform(source_state[src])
        if tuple(value.shape) != tuple(expected[dst].shape):
            mismatched.append(f"{src} {tuple(value.shape)} -> {dst} {tuple(expected[dst].shape)}")
        out[dst] = value
    unfilled = sorted(set(expected) - set(out))
    if mismatched or unfilled:
        raise CheckpointError(
            "checkpoint does not match the model: "
            + "; ".join(filter(None, [
                f"shape mismatch: {', '.join(mismatched)}" if mismatched else "",
                f"not filled: {', '.join(unfilled)}" if unfilled else "",
            ]))
        )
    return out


def _key_report(missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    def show(keys: list[str]) -> str:
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    return "checkpoint keys do not match a TimeSformer of this configuration: " + "; ".join(parts)


# -- configs ---------------------------------------------------------------------------------------

_SAME_NAME_FIELDS = (
    "image_size", "patch_size", "num_channels", "num_frames", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps", "qkv_bias",
    "attention_type", "drop_path_rate",
)


#: Documented clip sampling of the public TimeSformer checkpoints (facebookresearch/TimeSformer
#: configs, PySlowFast's NUM_FRAMES x SAMPLING_RATE at its TARGET_FPS of 30), by frame count:
#: Kinetics-400/600 TimeSformer_divST_8x32_224 (8 x 32), -HR _16x16_448 (16 x 16), -L _96x4_224 (96 x 4).
KINETICS_STRIDES = {8: 32, 16: 16, 96: 4}
#: Something-Something v2 has 174 classes; its TimeSformer configs (TimeSformer_divST_8_224,
#: _16_448, _64_224) sample frames TSN-style over the whole video.
SSV2_CLASSES = 174


def timesformer_sampling(num_frames: int, num_labels: int) -> ClipSampling | None:
    """The clip sampling a public TimeSformer checkpoint was trained with: Kinetics-style
    (any label count but SSv2's) ``num_frames x stride`` at 30 fps for the 8, 16 and 96-frame
    models; Something-Something v2: frames spread over the whole video; None when the
    checkpoint is neither (then set it yourself: ``config.sampling``, ``falv convert --sampling``)."""
    if num_labels == SSV2_CLASSES:
        return ClipSampling(mode="uniform", clip_seconds=None,
                            source=f"TimeSformer SSv2: {num_frames} frames over the whole video")
    stride = KINETICS_STRIDES.get(num_frames)
    if stride is None:
        return None
    return ClipSampling(mode="dense", frame_stride=stride, fps=30.0,
                        source=f"TimeSformer Kinetics: {num_frames}x{stride} at 30 fps")


def config_from_timesformer(data: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> FALConfig:
    """A FALConfig from a transformers ``TimesformerConfig`` dict (and its preprocessor config)."""
    kwargs: dict[str, Any] = {k: data[k] for k in _SAME_NAME_FIELDS if k in data}
    for key in ("image_size", "patch_size"):
        if isinstance(kwargs.get(key), (list, tuple)):
            kwargs[key] = int(kwargs[key][0])
    if "id2label" in data:
        kwargs["id2label"] = {int(k): v for k, v in data["id2label"].items()}
    problem = data.get("problem_type")
    if problem == "multi_label_classification":
        kwargs["problem_type"] = problem
    if preprocessor:
        for key in ("image_mean", "image_std"):
            if key in preprocessor:
                kwargs[key] = tuple(preprocessor[key])
    config = FALConfig(**kwargs)
    config.sampling = timesformer_sampling(config.num_frames, config.num_labels)
    return config


def config_from_original_state(
    state: dict[str, torch.Tensor], overrides: dict[str, Any] | None = None
) -> FALConfig:
    """Infer a FALConfig from the tensors of an original TimeSformer ``model_state``.

    Shapes give the width, patch size, image size, frame count, depth, label count
    and scheme; the head count is not in the weights (ViT convention: hidden/64,
    override with ``num_attention_heads``). Mean/std default to TimeSformer's
    training values (0.45, 0.225).
    """
    try:
        d = state["model.cls_token"].shape[-1]
        proj = state["model.patch_embed.proj.weight"]
        patch = proj.shape[-1]
        num_patches = state["model.pos_embed"].shape[1] - 1
        num_labels = state["model.head.weight"].shape[0]
        mlp = state["model.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a TimeSformer model_state: missing {exc.args[0]}") from exc
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("model.blocks."))
    if "model.time_embed" not in state:
        scheme = "space_only"
    elif "model.blocks.0.temporal_attn.qkv.weight" in state:
        scheme = "divided_space_time"
    else:
        scheme = "joint_space_time"
    kwargs: dict[str, Any] = dict(
        hidden_size=d,
        patch_size=patch,
        num_channels=proj.shape[1],
        image_size=math.isqrt(num_patches) * patch,
        num_frames=state["model.time_embed"].shape[1] if "model.time_embed" in state else 8,
        num_hidden_layers=layers,
        num_attention_heads=max(d // 64, 1),
        intermediate_size=mlp,
        attention_type=scheme,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
        image_mean=(0.45, 0.45, 0.45),
        image_std=(0.225, 0.225, 0.225),
    )
    kwargs.update(overrides or {})
    config = FALConfig(**kwargs)
    if "sampling" not in (overrides or {}):
        config.sampling = timesformer_sampling(config.num_frames, config.num_labels)
    return config


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model_state`` of a TimeSformer ``.pyth`` file, loaded without unpickling code."""
    from falv.hub.families import _is_zip

    path = Path(path)
    try:
        # mmap: tensors are read from the file as they are used, not copied in first
        # (zip-format checkpoints, torch >= 1.6; legacy ones are read whole).
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        # torch's own message advises weights_only=False, which falv never does: keep it out.
        raise CheckpointError(
            f"cannot read {path}: not a PyTorch checkpoint, or one that holds objects other than "
            f"tensors ({type(exc).__name__}); falv never unpickles arbitrary objects"
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dict of tensors")
    for key in ("model_state", "model", "state_dict", "module"):
        if key in data and isinstance(data[key], dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if state and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}  # checkpoints saved without the wrapper
    if not state:
        raise CheckpointError(f"{path} holds no tensors")
    return state


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    labels: list[str] | None = None,
    **overrides: Any,
) -> Path:
    """Write a falv directory converted from any checkpoint :func:`falv.hub.families.load_model`
    reads (a TimeSformer or VideoMAE directory or hub id, a TimeSformer ``.pyth``, a PySlowFast
    ``.pyth`` / ``.pkl``, a pytorchvideo or TSM file).

    ``labels`` names the classes of a checkpoint file (which carries none).
    ``sampling`` (a :class:`falv.config.ClipSampling`, its dict or its command-line text such
    as ``"8x32@30"``) replaces the documented sampling of the checkpoint
    (:func:`timesformer_sampling`). The converted model is checked by running it once before
    it is saved.
    """
    from falv.hub.families import load_model

    sampling = overrides.pop("sampling", None)
    model = load_model(source, **overrides)
    if sampling is not None:
        model.config.sampling = (ClipSampling.parse(sampling) if isinstance(sampling, str)
                                 else ClipSampling.from_any(sampling))
    if labels is not None:
        if len(labels) != model.config.num_labels:
            raise CheckpointError(f"{len(labels)} label names given for {model.config.num_labels} classes")
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    cfg = model.config
    with torch.no_grad():
        probe = torch.zeros(1, cfg.num_frames, cfg.num_channels, cfg.image_size, cfg.image_size)
        logits = model(probe).logits
    if not torch.isfinite(logits).all():
        raise CheckpointError("the converted model produces non-finite logits")
    model.save_pretrained(destination)
    return Path(destination)
