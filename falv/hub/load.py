"""Load FAL models from falv directories, transformers TimeSformer directories or
hub ids, and original TimeSformer ``.pyth`` files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from falv.config import CONFIG_NAME, MODEL_TYPE, FALConfig
from falv.errors import CheckpointError
from falv.hub.families import Family

WEIGHTS_NAME = "model.safetensors"
PREPROCESSOR_NAMES = ("preprocessor_config.json", "video_preprocessor_config.json")
PICKLE_SUFFIXES = (".pyth", ".pth", ".pt", ".bin", ".ckpt")
_HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "*.txt"]


def resolve(
    path_or_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local path for a directory, a checkpoint file, or a hub model id (downloaded)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_id)
    looks_like_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith(PICKLE_SUFFIXES)
    if not looks_like_id:
        raise CheckpointError(f"model not found: {text} is neither a directory, a checkpoint file nor a hub id")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            text,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=_HUB_PATTERNS,
        )
    except Exception as exc:  # offline, unknown repo, auth: one clear line
        raise CheckpointError(
            f"could not get {text!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); pass a local directory instead"
        ) from exc
    return Path(local)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def load_preprocessor_config(path_or_id: str | os.PathLike, **hub: Any) -> dict[str, Any] | None:
    """The preprocessor config dict of a model directory, or None if it has none."""
    path = resolve(path_or_id, **hub)
    if path.is_dir():
        for name in PREPROCESSOR_NAMES:
            if (path / name).is_file():
                return _read_json(path / name)
    return None


def load_config(path_or_id: str | os.PathLike, **hub: Any) -> FALConfig:
    """The FALConfig of a falv or TimeSformer directory (or hub id) or ``.pyth`` file."""
    path = resolve(path_or_id, **hub)
    if path.is_file():
        from falv.hub.convert import config_from_original_state, read_original_checkpoint

        return config_from_original_state(read_original_checkpoint(path))
    return _config_from_dir(path)


def _config_from_dir(path: Path) -> FALConfig:
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}: not a model directory")
    data = _read_json(path / CONFIG_NAME)
    model_type = data.get("model_type")
    if model_type == MODEL_TYPE:
        return FALConfig.from_dict(data)
    if model_type == "timesformer":
        from falv.hub.convert import config_from_timesformer

        return config_from_timesformer(data, load_preprocessor_config(path))
    raise CheckpointError(
        f"{path / CONFIG_NAME} has model_type {model_type!r}; falv reads 'fal' and 'timesformer' models"
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as _load_file

    def load_file(file: str) -> dict[str, torch.Tensor]:
        try:
            return _load_file(file)
        except Exception as exc:  # SafetensorError, OSError: one clear line
            raise CheckpointError(f"cannot read weights {file}: {exc}") from exc

    index = path / f"{WEIGHTS_NAME}.index.json"
    if (path / WEIGHTS_NAME).is_file():
        return load_file(str(path / WEIGHTS_NAME))
    if index.is_file():  # sharded safetensors
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            state.update(load_file(str(path / shard)))
        return state
    if (path / "pytorch_model.bin").is_file():

        try:
            return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read {path / 'pytorch_model.bin'} weights-only: {exc}") from exc
    raise CheckpointError(f"{path} has no {WEIGHTS_NAME} (or pytorch_model.bin)")


def load_model(
    path_or_id: str | os.PathLike,
    *,
    num_frames: int | None = None,
    image_size: int | None = None,
    labels: list[str] | None = None,
    num_attention_heads: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Any:
    """Build a :class:`FALForVideoClassification` and load its weights strictly.

    ``num_frames`` / ``image_size`` resize the positional embeddings for good
    (bicubic in space, linear in time); ``labels`` replaces the head with a fresh
    one for a new label set; ``num_attention_heads`` is needed only for ``.pyth``
    files whose head count is not the ViT convention (hidden/64).
    """
    from falv.hub.convert import config_from_original_state, convert_state_dict, read_original_checkpoint
    from falv.model.embeddings import resize_position_embeddings

    path = resolve(path_or_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    if path.is_file():
        source_state = read_original_checkpoint(path)
        overrides = {"num_attention_heads": num_attention_heads} if num_attention_heads else {}
        config = config_from_original_state(source_state, overrides)
        source = "original"
    else:
        config = _config_from_dir(path)
        source_state = _read_weights(path)
        source = "falv" if config.model_type == MODEL_TYPE and _is_falv_dir(path) else "transformers"

    # The model is built on the meta device: no memory and no random initialisation for
    # weights that are about to be replaced; load_state_dict(assign=True) then adopts the
    # loaded tensors as they are (no copy). Only a fresh head (``labels``) is initialised.
    skeleton = _skeleton(config)
    expected = skeleton.state_dict()
    if source == "falv":
        state = source_state
        check_state_keys(state, expected, path)
    else:
        state = convert_state_dict(source_state, config, source, expected)

    # Resize embeddings / replace the head on the state dict, then build the final model.
    new_config = config
    if num_frames is not None or image_size is not None:
        import dataclasses

        new_config = dataclasses.replace(
            new_config,
            num_frames=num_frames or config.num_frames,
            image_size=image_size or config.image_size,
        )
        side = new_config.image_size // new_config.patch_size
        state = resize_position_embeddings(
            state, "fal.embeddings.", num_frames=new_config.num_frames, grid=(side, side)
        )
    if labels is not None:
        new_config = new_config.with_labels(list(labels))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model = skeleton if new_config is config else _skeleton(new_config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (labels is not None and k.startswith("head."))]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    if labels is not None:
        model.head.to_empty(device="cpu")
        model.init_head()
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model.name_or_path = str(path_or_id)
    return model


def _skeleton(config: FALConfig) -> Any:
    """A FALForVideoClassification on the meta device: its structure, keys and shapes only."""
    from falv.model.transformer import FALForVideoClassification

    with torch.device("meta"):
        return FALForVideoClassification(config)


def _is_falv_dir(path: Path) -> bool:
    return _read_json(path / CONFIG_NAME).get("model_type") == MODEL_TYPE


def check_state_keys(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """One error naming the missing, unexpected and mis-shaped keys of ``path``'s weights."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path / WEIGHTS_NAME} does not match its config.json: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatch {wrong[:8]}"
        )


# -- the FAL / TimeSformer family (falv.hub.families) ----------------------------------------------

def _sniff_timesformer(checkpoint: Any) -> bool:
    """An original TimeSformer ``.pyth``: a ViT ``patch_embed`` whose projection is a 2D convolution
    (per frame; MViT's is 3D), ``blocks`` and a ``cls_token``."""
    state = checkpoint.state()
    keys = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    proj = keys.get("patch_embed.proj.weight")
    return checkpoint.format == "torch" and "cls_token" in keys and getattr(proj, "ndim", 0) == 4 \
        and any(k.startswith("blocks.0.attn.") for k in keys)


def _load_fal_dir(path: Path, config: dict[str, Any], **options: Any) -> Any:
    return load_model(path, **options)


def _load_fal_checkpoint(checkpoint: Any, path: Path, **options: Any) -> Any:
    return load_model(path, **options)


FAMILIES = [Family(
    name="fal",
    description="FAL / TimeSformer (falv directories, transformers TimeSformer directories and hub ids, "
                "original TimeSformer .pyth files)",
    model_types=(MODEL_TYPE, "timesformer"),
    load_dir=_load_fal_dir,
    sniff=_sniff_timesformer,
    load_checkpoint=_load_fal_checkpoint,
    options=("labels", "num_frames", "image_size", "num_attention_heads"),
    architectures=("FALForVideoClassification", "TimesformerForVideoClassification"),
)]
