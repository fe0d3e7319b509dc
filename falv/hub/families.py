"""One registry of model families, and :func:`load_model` for any checkpoint they read.

A *family* is one architecture line (FAL/TimeSformer, VideoMAE, the PySlowFast ResNets,
X3D, TSM, falv's CNN baseline). It says which ``config.json`` ``model_type`` values of a
model directory it reads, and, for single-file checkpoints (``.pyth``, ``.pkl``, ``.pth``,
whatever the extension), whether a checkpoint's content is one of its own. Every command
loads models through :func:`load_model`; no command branches on the family.

Every model a family returns has the interface of :class:`falv.FALForVideoClassification`:
``config`` (label and preprocessing fields of :class:`falv.config.LabelFields`, plus
``num_frames`` and ``image_size``), ``forward(pixel_values (B, T, C, H, W), labels=None)``
returning ``.logits`` (before any softmax), ``.embeddings`` and ``.loss``;
``forward_features`` (the pooled features before the head) and ``forward_head``;
``save_pretrained`` (a falv directory) and ``init_head``.

Checkpoints are read without executing code from them: PyTorch files with
``torch.load(weights_only=True)``, Caffe2 pickles with an unpickler that only builds numpy
arrays, dicts and lists.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from falv.errors import CheckpointError

CONFIG_NAME = "config.json"

#: Modules that define families (each a module-level ``FAMILIES`` list), in detection order.
FAMILY_MODULES = (
    "falv.hub.load",
    "falv.model.baseline",
    "falv.model.videomae",
    "falv.model.slowfast",
    "falv.model.x3d",
    "falv.model.tsm",
    "falv.model.mvit",
)


@dataclass(frozen=True)
class Family:
    """How one architecture line is recognised and loaded.

    ``model_types``: the ``model_type`` values of ``config.json`` in directories it reads
    (falv's own and other libraries'). ``load_dir(path, config_dict, **options)`` loads such a
    directory. ``sniff(checkpoint)`` says whether a single-file checkpoint (what
    :func:`read_checkpoint` returned) is this family's; ``load_checkpoint(checkpoint, path,
    **options)`` loads it. ``options`` are the keyword arguments of :func:`load_model` the
    family accepts (``labels`` replaces the head for a new label set; families may take more,
    listed in ``options``). ``license`` names the published weights' license when it limits use.
    """

    name: str
    description: str
    model_types: tuple[str, ...] = ()
    load_dir: Callable[..., Any] | None = None
    sniff: Callable[[Any], bool] | None = None
    load_checkpoint: Callable[..., Any] | None = None
    options: tuple[str, ...] = ("labels",)
    architectures: tuple[str, ...] = ()
    license: str | None = None
    model_class: type | None = None
    #: named configurations (``{name: keyword overrides}``) built by ``config_class(**overrides)``
    presets: dict[str, dict[str, Any]] | None = None
    config_class: type | None = None

    def preset(self, name: str, **overrides: Any) -> Any:
        """The config of a named preset (keyword arguments override its fields)."""
        if not self.presets or name not in self.presets or self.config_class is None:
            raise CheckpointError(f"{self.name} has no preset {name!r}; presets: {', '.join(self.presets or {})}")
        return self.config_class(**{**self.presets[name], **overrides})


def families() -> list[Family]:
    """Every registered family, in detection order."""
    out: list[Family] = []
    for name in FAMILY_MODULES:
        out.extend(importlib.import_module(name).FAMILIES)
    return out


def family(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise CheckpointError(f"unknown model family {name!r}; families: {', '.join(f.name for f in families())}")


# -- reading single-file checkpoints -------------------------------------------------------------


@dataclass
class Checkpoint:
    """A single-file checkpoint as read: ``data`` is what the file holds (a dict), ``format``
    ``"torch"`` or ``"caffe2"``."""

    data: dict[str, Any]
    format: str
    path: Path

    def state(self, *keys: str) -> dict[str, Any]:
        """The weights dict: the first of ``keys`` (default ``model_state``, ``state_dict``,
        ``model``, ``module``, ``blobs``) that holds a dict, else the file's dict itself."""
        for key in keys or ("model_state", "state_dict", "model", "module", "blobs"):
            value = self.data.get(key)
            if isinstance(value, dict):
                return value
        return self.data


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


class _ArraysOnly(pickle.Unpickler):
    """Unpickles Caffe2 ``.pkl`` weights (dicts of numpy arrays, written by Python 2 or 3) and
    refuses every other global, so no code in the file runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ("builtins", "set"),
        ("__builtin__", "set"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            if module == "__builtin__":
                module = "builtins"
            if module.startswith("numpy.core") or module.startswith("numpy._core"):
                import numpy

                core = getattr(numpy, "_core", None) or numpy.core
                return getattr(core.multiarray, name)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: falv reads arrays only")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a single-file checkpoint by its content: a PyTorch file (zip or legacy format,
    ``weights_only``) or a Caffe2 pickle of numpy arrays. Raises :class:`CheckpointError` with
    one line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
        fmt = "torch"
    except Exception as torch_error:  # not a PyTorch file (or one holding objects): try Caffe2
        try:
            with open(path, "rb") as handle:
                data = _ArraysOnly(io.BufferedReader(handle), encoding="latin1").load()
            fmt = "caffe2"
        except Exception:
            # torch's own message advises weights_only=False, which falv never does: keep it out.
            raise CheckpointError(
                f"cannot read {path}: neither a PyTorch checkpoint of tensors nor a Caffe2 pickle of arrays "
                f"({type(torch_error).__name__}); falv never unpickles arbitrary objects"
            ) from torch_error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights")
    return Checkpoint(data=data, format=fmt, path=path)


# -- loading ---------------------------------------------------------------------------------------


def detect(source: str | os.PathLike, **hub: Any) -> tuple[Family, Path, Any]:
    """``(family, local path, config dict or Checkpoint)`` for a model directory, hub id or
    checkpoint file, recognised by content."""
    from falv.hub.load import resolve

    path = resolve(source, **hub)
    known = families()
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{path} has no {CONFIG_NAME}: not a model directory")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {config_path}: {exc}") from exc
        model_type = config.get("model_type") if isinstance(config, dict) else None
        for fam in known:
            if model_type in fam.model_types and fam.load_dir is not None:
                return fam, path, config
        readable = sorted({t for fam in known for t in fam.model_types})
        raise CheckpointError(
            f"{config_path} has model_type {model_type!r}; falv reads: {', '.join(readable)}"
        )
    checkpoint = read_checkpoint(path)
    for fam in known:
        if fam.sniff is not None and fam.load_checkpoint is not None and fam.sniff(checkpoint):
            return fam, path, checkpoint
    keys = list(checkpoint.state())[:5]
    raise CheckpointError(
        f"{path} is a {checkpoint.format} checkpoint of no known family (first keys: {keys}); falv reads "
        f"{', '.join(f.name for f in known if f.sniff is not None)} checkpoints"
    )


def load_model(
    source: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    **options: Any,
) -> Any:
    """A model, in eval mode, for any supported checkpoint: a falv directory, a transformers
    directory or hub id (TimeSformer, VideoMAE), or an original checkpoint file (TimeSformer,
    PySlowFast ``.pyth`` / Caffe2 ``.pkl``, pytorchvideo hub, TSM), recognised by content.

    ``labels`` replaces the head with a fresh one for a new label set (fine-tuning). Other
    keyword arguments go to the family (e.g. FAL's ``num_frames``); a family that does not
    take one raises :class:`CheckpointError` naming it.
    """
    if isinstance(source, torch.nn.Module):
        return source
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    fam, path, found = detect(source, **hub)
    unknown = sorted(k for k in options if k not in fam.options)
    if unknown:
        raise CheckpointError(f"{fam.name} models do not take {', '.join(unknown)} "
                              f"(they take: {', '.join(fam.options)})")
    if labels is not None:
        options["labels"] = list(labels)
    if isinstance(found, Checkpoint):
        model = fam.load_checkpoint(found, path, **options)  # type: ignore[misc]
    else:
        model = fam.load_dir(path, found, **options)  # type: ignore[misc]
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model.name_or_path = str(source)
    model.family = fam.name
    return model


def family_of(model: Any) -> str:
    """The family name of a loaded model (``fal`` for models built in Python)."""
    name = getattr(model, "family", None)
    if name:
        return name
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for fam in families():
        if model_type in fam.model_types:
            return fam.name
    return "unknown"


def describe() -> list[dict[str, Any]]:
    """One row per family: name, description, what it reads, its presets and its weights' license note."""
    return [dict(name=f.name, description=f.description, model_types=list(f.model_types),
                 reads_files=f.sniff is not None, presets=list(f.presets or {}), license=f.license)
            for f in families()]


__all__ = ["Checkpoint", "Family", "detect", "families", "family", "family_of", "load_model", "read_checkpoint",
           "describe"]
