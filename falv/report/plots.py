"""Training curves from a run's ``log.jsonl``: ``loss.png``, ``accuracy.png``, ``lr.png``.

The log has one JSON object per line (written by the trainer)::

    {"event": "step",  "epoch", "step", "loss", "lr", "time"}
    {"event": "epoch", "epoch", "step", "lr", "train_loss", "train_top1", "val_loss",
                       "val_top1", "val_map", "time"}            # metrics may be null
    {"event": "end",   "best_epoch", "best_metric", "best_value", "time"}

Reading is tolerant: blank and unreadable lines (a run killed mid-line) are
skipped, missing or null keys leave gaps, and when a resumed run logs a step or
an epoch again the later line wins. Matplotlib (the ``plots`` extra) is
imported only here, through its object API with the Agg canvas: no pyplot, no
global backend change.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falv.report import ReportError

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
#: The pictures :func:`plot_training` writes, by key.
PLOT_NAMES = ("loss", "accuracy", "lr")


def read_log(log_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a training log, in file order; unreadable lines are skipped with a warning."""
    path = Path(log_path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such training log (a run folder holds log.jsonl)") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read the training log ({exc.strerror or exc})") from None
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path, bad)
    return records


def _number(value: Any) -> float | None:
    """A finite float, or None for missing, null, non-numeric or non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class TrainingLog:
    """A log split by event: step and epoch lines (deduplicated, sorted) and the end line."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> TrainingLog:
        steps: dict[Any, dict[str, Any]] = {}
        epochs: dict[Any, dict[str, Any]] = {}
        end = None
        for i, rec in enumerate(records):
            event = rec.get("event")
            if event == "step":
                key = _number(rec.get("step"))
                steps[key if key is not None else ("line", i)] = rec  # a repeated step: the later line wins
            elif event == "epoch":
                key = _number(rec.get("epoch"))
                epochs[key if key is not None else ("line", i)] = rec
            elif event == "end":
                end = rec
        return cls(steps=_sorted(steps, "step"), epochs=_sorted(epochs, "epoch"), end=end)

    def series(self, kind: str, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
        """(x, y) of the ``kind`` ("steps" or "epochs") lines that have both values."""
        xs, ys = [], []
        for rec in getattr(self, kind):
            x, y = _number(rec.get(x_key)), _number(rec.get(y_key))
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys


def _sorted(by_key: dict[Any, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    numbered = [r for k, r in by_key.items() if not isinstance(k, tuple)]
    unnumbered = [r for k, r in by_key.items() if isinstance(k, tuple)]
    return sorted(numbered, key=lambda r: _number(r.get(key)) or 0.0) + unnumbered


def load_training_log(log_path: str | os.PathLike[str]) -> TrainingLog:
    """:func:`read_log` split into steps, epochs and the end line."""
    return TrainingLog.from_records(read_log(log_path))


# -- drawing -------------------------------------------------------------------------------------


def _figure() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ReportError('training plots need matplotlib: pip install "falv[plots]"') from None
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _finish(fig: Any, ax: Any, path: Path, title: str, has_data: bool) -> Path:
    from matplotlib.ticker import MaxNLocator

    from falv.hub.io import atomic_open

    ax.set_title(title)
    if has_data:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
        ax.grid(True, alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data in the training log", ha="center", va="center", transform=ax.transAxes,
                color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def _mark_best(ax: Any, run: TrainingLog, x_is_step: bool) -> None:
    """A dashed line at the best epoch named by the end line."""
    if run.end is None:
        return
    best = _number(run.end.get("best_epoch"))
    if best is None:
        return
    x = best
    if x_is_step:
        match = [r for r in run.epochs if _number(r.get("epoch")) == best and _number(r.get("step")) is not None]
        if not match:
            return
        x = float(match[-1]["step"])
    metric = run.end.get("best_metric")
    label = f"best epoch {best:g}" + (f" ({metric})" if isinstance(metric, str) and metric else "")
    ax.axvline(x, color="0.5", linestyle="--", linewidth=1, label=label)


def _plot_loss(run: TrainingLog, path: Path) -> Path:
    fig, ax = _figure()
    sx, sy = run.series("steps", "step", "loss")
    by_step = bool(sx)
    x_key = "step" if by_step else "epoch"
    tx, ty = run.series("epochs", x_key, "train_loss")
    vx, vy = run.series("epochs", x_key, "val_loss")
    if sx:
        ax.plot(sx, sy, color="tab:blue", alpha=0.35, linewidth=1, label="train loss (step)")
    if tx:
        ax.plot(tx, ty, "o-", color="tab:blue", markersize=4, label="train loss (epoch)")
    if vx:
        ax.plot(vx, vy, "s-", color="tab:orange", markersize=4, label="val loss")
    has_data = bool(sx or tx or vx)
    if has_data:
        _mark_best(ax, run, by_step)
        ax.set_xlabel("optimizer step" if by_step else "epoch")
        ax.set_ylabel("loss")
    return _finish(fig, ax, path, "Loss", has_data)


def _plot_accuracy(run: TrainingLog, path: Path) -> Path:
    fig, ax = _figure()
    lines = [("train_top1", "train top-1", "o-", "tab:blue"), ("val_top1", "val top-1", "s-", "tab:orange"),
             ("val_map", "val mAP", "^-", "tab:green")]
    has_data = False
    for key, label, style, colour in lines:
        x, y = run.series("epochs", "epoch", key)
        if x:
            ax.plot(x, y, style, color=colour, markersize=4, label=label)
            has_data = True
    if has_data:
        _mark_best(ax, run, x_is_step=False)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy / mAP")
    return _finish(fig, ax, path, "Accuracy", has_data)


def _plot_lr(run: TrainingLog, path: Path) -> Path:
    fig, ax = _figure()
    x, y = run.series("steps", "step", "lr")
    x_label = "optimizer step"
    if not x:  # no step lines: the learning rate at the end of each epoch
        x, y = run.series("epochs", "epoch", "lr")
        x_label = "epoch"
    if x:
        ax.plot(x, y, color="tab:purple", linewidth=1.5, label="learning rate")
        ax.set_xlabel(x_label)
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _finish(fig, ax, path, "Learning rate", bool(x))


def plot_training(log_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``loss.png``, ``accuracy.png`` and ``lr.png`` from a training log into ``out_dir``.

    Always writes all three (a plot without data says so), so a report can rely on
    them; returns ``{"loss": path, "accuracy": path, "lr": path}``. Raises
    :class:`ReportError` when the log cannot be read or matplotlib is missing.
    """
    run = load_training_log(log_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "loss": _plot_loss(run, out / "loss.png"),
        "accuracy": _plot_accuracy(run, out / "accuracy.png"),
        "lr": _plot_lr(run, out / "lr.png"),
    }
