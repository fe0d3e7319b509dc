"""Training checkpoints: written whole or not at all, so ``--resume`` always finds a good one.

``RUN_DIR/checkpoint/step-00000123/`` holds ``model.safetensors`` (and
``ema.safetensors``), ``state.pt`` (optimizer, grad scaler and trainer state:
plain numbers, lists and tensors, loadable with ``weights_only=True``). A new
checkpoint is written into a temporary folder, renamed into place, and only then
named in ``checkpoint/latest``; older checkpoints are removed afterwards. A crash at
any moment leaves ``latest`` naming a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from falv.errors import CheckpointError
from falv.hub.io import atomic_write_text

LATEST = "latest"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    keep: int = 1,
) -> Path:
    """Write checkpoint ``step`` and make it the latest; keeps the newest ``keep`` checkpoints."""
    root = Path(run_dir) / "checkpoint"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_file(_tensors(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(_tensors(ema), str(tmp / "ema.safetensors"))
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, final.name + "\n")
    names = sorted(p.name for p in root.glob("step-*") if p.is_dir())
    for name in names[:-keep] if keep > 0 else []:
        if name != final.name:
            shutil.rmtree(root / name, ignore_errors=True)
    for stale in root.glob(".step-*"):  # temporary folders of a crashed save
        with contextlib.suppress(OSError):
            shutil.rmtree(stale)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The folder ``checkpoint/latest`` names, or None when the run has no checkpoint."""
    root = Path(run_dir) / "checkpoint"
    try:
        name = (root / LATEST).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = root / name
    if not (path / "state.pt").is_file():
        raise CheckpointError(f"{root / LATEST} names {name}, which is incomplete or missing")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"model": tensors, "ema": tensors | None, "state": dict}`` of a checkpoint folder."""
    path = Path(path)
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        model = load_file(str(path / "model.safetensors"))
        ema = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint in {path}: {exc}") from exc
    return {"model": model, "ema": ema, "state": state}
