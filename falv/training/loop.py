"""The training loop: ``falv train`` and :func:`train`.

``entry -> clip (seeded) -> augment -> batch -> [mixup/cutmix] -> model (autocast) ->
soft-target loss -> (accumulate) -> clip grads -> AdamW step at lr_at(step) -> [EMA]``,
validation every epoch, the best weights kept as a falv model directory and a
checkpoint written atomically at the end of every epoch (and on Ctrl-C).

Exact resume: every random draw is a function of ``(seed, epoch, index)`` (data)
or ``(seed, step)`` (mixing, dropout), never of how many draws came before, so a
run resumed from a checkpoint takes exactly the steps the uninterrupted run takes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from falv.data.dataset import VideoClipDataset, collate
from falv.data.sources import DatasetError, DatasetSource, load_source
from falv.errors import ConfigError, FalvError
from falv.hub.io import atomic_write_text
from falv.training import distributed
from falv.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from falv.training.config import TrainConfig, default_epochs, default_lr
from falv.training.ema import ModelEMA
from falv.training.mixing import mix_batch, soft_loss, soft_targets
from falv.training.schedule import lr_at, param_groups
from falv.training.split import stratified_split

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
CONFIG_NAME = "train_config.json"


class TrainingInterrupted(FalvError):
    """Training stopped on a signal after saving a checkpoint; ``--resume`` continues it."""


@dataclass
class TrainResult:
    run_dir: Path
    best_dir: Path
    best_epoch: int
    best_metric: str
    best_value: float
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


# -- data ----------------------------------------------------------------------------
def _has_split(path: str, split: str) -> bool:
    p = Path(path)
    return p.is_dir() and (any((p / f"{split}{ext}").is_file() for ext in (".csv", ".tsv", ".txt")) or (p / split).is_dir())


def open_sources(config: TrainConfig) -> tuple[DatasetSource, DatasetSource, dict[str, Any]]:
    """Training and validation sources, and how the validation set was chosen (saved with the run)."""
    split = config.split or ("train" if _has_split(config.data, "train") else None)
    train = load_source(config.data, split=split)
    if config.val is not None:
        vsplit = config.val_split or ("val" if _has_split(config.val, "val") else None)
        val = load_source(config.val, split=vsplit)
        how: dict[str, Any] = {"kind": "given", "val": config.val, "split": vsplit}
    elif config.val_split or (split == "train" and _has_split(config.data, "val")):
        vsplit = config.val_split or "val"
        val = load_source(config.data, split=vsplit)
        how = {"kind": "split", "split": vsplit}
    else:
        train_idx, val_idx = stratified_split(train, config.val_fraction, config.seed)
        how = {"kind": "holdout", "fraction": config.val_fraction, "seed": config.seed,
               "val": [train.entries[i].path for i in val_idx]}
        train, val = train.subset(train_idx), train.subset(val_idx)
    missing = sorted({lab for e in val.entries for lab in e.labels} - set(train.classes))
    if missing:
        raise DatasetError(f"validation labels not in the training classes: {missing[:10]}", code="unknown_label")
    val = val.with_classes(train.classes)
    if len(train) == 0 or len(val) == 0:
        raise DatasetError("the training and the validation set each need at least one video", code="empty")
    return train, val, how


def _cache_budget(config: TrainConfig, source: DatasetSource, size: int) -> int:
    """Bytes of frame cache per process: the whole set when it fits ``cache_gb`` (or ``cache=on``)."""
    if config.cache == "off":
        return 0
    budget = int(config.cache_gb * 2**30)
    if config.cache == "on":
        return budget
    from falv.video import probe

    sample = source.entries[:: max(1, len(source) // 16)][:16]
    per_video = []
    for entry in sample:
        try:
            info = probe(entry.path)
        except (FalvError, OSError):
            continue
        aspect = max(info.width, info.height) / max(1, min(info.width, info.height))
        per_video.append(info.num_frames * size * size * aspect * 3)
    estimate = float(np.mean(per_video)) * len(source) if per_video else math.inf
    return budget if estimate <= budget else 0


# -- model ---------------------------------------------------------------------------
def build_model(config: TrainConfig, classes: list[str], multilabel: bool) -> nn.Module:
    """A FAL model for ``classes``: a preset from scratch, or ``config.init`` with a new head."""
    from falv.hub.load import load_model
    from falv.model.presets import preset
    from falv.model.transformer import FALForVideoClassification

    problem = "multi_label_classification" if multilabel else "single_label_classification"
    overrides = dict(config.model_overrides)
    if config.attention:
        overrides["attention_type"] = config.attention
    if config.drop_path is not None:
        overrides["drop_path_rate"] = config.drop_path
    if config.init is None:
        if config.num_frames:
            overrides["num_frames"] = config.num_frames
        if config.image_size:
            overrides["image_size"] = config.image_size
        cfg = preset(config.preset, id2label=dict(enumerate(classes)), problem_type=problem,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), **overrides)
        return FALForVideoClassification(cfg)
    model = load_model(config.init, num_frames=config.num_frames, image_size=config.image_size)
    same_head = model.config.labels == list(classes) if hasattr(model.config, "labels") else False
    if not same_head or overrides or model.config.problem_type != problem:
        state = model.state_dict()
        cfg = replace(model.config, problem_type=problem, **overrides).with_labels(classes)
        model = FALForVideoClassification(cfg)
        own = model.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape
                and (same_head or not k.startswith("head."))}
        model.load_state_dict(kept, strict=False)
    return model


def _freeze_backbone(model: nn.Module) -> None:
    """Linear probing: only the classification head (``model.head``) keeps learning."""
    head = getattr(model, "head", None)
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no .head to train alone; drop --freeze-backbone")
    keep = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


# -- helpers -------------------------------------------------------------------------
def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, rank, 0x7EA1]).generate_state(1)[0])


def _epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of one epoch: a seeded shuffle, padded to a multiple of the
    world size by repeating the start (as DistributedSampler), dealt round-robin."""
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)
    if world > 1:
        pad = (-n) % world
        order = np.concatenate([order, order[:pad]])[rank::world]
    return [order[i:i + batch].tolist() for i in range(0, len(order), batch)]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    from falv.inference import cpu_supports_bf16

    p = config.precision
    if p == "fp32":
        return None
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else None
    if p == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.bfloat16 if p == "bf16" else torch.float16


def _metric_name(config: TrainConfig, multilabel: bool) -> str:
    if config.metric != "auto":
        return config.metric
    return "val_map" if multilabel else "val_top1"


def _better(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if metric == "val_loss" else value > best + min_delta


class _Log:
    """Append-only JSONL log, rewritten on resume to drop what came after the checkpoint."""

    def __init__(self, path: Path, enabled: bool, started: float) -> None:
        self.path, self.enabled, self.started = path, enabled, started

    def truncate_after(self, step: int, epoch: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("event") == "step" and rec.get("step", 0) <= step:
                kept.append(line)
            elif rec.get("event") == "epoch" and rec.get("epoch", 0) <= epoch:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = {"event": event, **fields, "time": round(time.monotonic() - self.started, 3)}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(rec) + "\n")


def _save_best(model: nn.Module, best_dir: Path) -> None:
    """Replace ``best_dir`` by the model as a falv directory (written aside, then swapped in)."""
    tmp = best_dir.with_name(best_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    old = best_dir.with_name(best_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if best_dir.exists():
        os.replace(best_dir, old)
    os.replace(tmp, best_dir)
    shutil.rmtree(old, ignore_errors=True)


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: VideoClipDataset,
    ctx: distributed.DistContext,
    amp: torch.dtype | None,
    batch_size: int,
    multilabel: bool,
) -> dict[str, float]:
    """Single-view validation (centre clip, centre crop): loss, top-1 or mAP, sharded over processes."""
    from falv.evaluation.metrics import mean_average_precision

    model.eval()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    scores, targets, loss_sum = [], [], 0.0
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        if batch is None:
            continue
        with _autocast(ctx.device, amp):
            logits = model(batch["pixel_values"].to(ctx.device)).logits.float().cpu()
        y = batch["labels"]
        loss_sum += float(soft_loss(logits, soft_targets(y, logits.shape[-1]), multilabel)) * len(y)
        scores.append(logits)
        targets.append(y)
    local = (torch.cat(scores).numpy() if scores else None, torch.cat(targets).numpy() if targets else None, loss_sum)
    parts = [p for p in ctx.gather(local) if p[0] is not None]
    all_scores = np.concatenate([p[0] for p in parts])
    all_targets = np.concatenate([p[1] for p in parts])
    out = {"val_loss": sum(p[2] for p in parts) / len(all_scores)}
    if multilabel:
        out["val_map"] = float(mean_average_precision(all_scores, all_targets))
        out["val_top1"] = None
    else:
        out["val_top1"] = float((all_scores.argmax(-1) == all_targets).mean())
        out["val_map"] = None
    return out


# -- the loop ------------------------------------------------------------------------
def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
    echo: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train as ``config`` says; returns where the best model is and how it did.

    ``model``: train this module (any module with FALForVideoClassification's
    interface: ``forward(pixel_values) -> .logits``, ``.config``,
    ``save_pretrained``) instead of building one. ``resume``: continue the run
    in ``config.out`` from its latest checkpoint (the saved training options win
    over ``config``). ``on_step(step)`` is called after every optimizer step.
    """
    if not config.out or (not config.data and not resume):
        raise ConfigError("training needs data and an output folder")
    run_dir = Path(config.out)
    ctx = distributed.setup(config.device)
    say = echo if (echo is not None and ctx.is_main) else (lambda _m: None)
    try:
        return _train(config, run_dir, ctx, model, resume, on_step, say)
    finally:
        distributed.teardown(ctx)


def _train(config, run_dir, ctx, model, resume, on_step, say) -> TrainResult:
    started = time.monotonic()
    checkpoint = None
    if resume:
        ckpt_path = latest_checkpoint(run_dir)
        if ckpt_path is None:
            raise ConfigError(f"{run_dir}: no checkpoint to resume from")
        saved = TrainConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8")))
        config = replace(saved, out=str(run_dir), device=config.device)
        checkpoint = load_checkpoint(ckpt_path)
    elif ctx.is_main and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a training run: pass --resume to continue it, "
                          "or choose another --out")
    ctx.barrier()

    train_src, val_src, how = open_sources(config)
    multilabel = train_src.multilabel
    if model is None:
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        model = build_model(config, train_src.classes, multilabel)
    if config.freeze_backbone:
        _freeze_backbone(model)
    mcfg = model.config
    epochs = config.epochs or default_epochs(len(train_src))
    fine_tune = config.init is not None
    micro = max(1, config.batch_size // ctx.world_size)
    lr = config.lr or default_lr(config.batch_size, config.accumulate, fine_tune)
    resolved = replace(config, epochs=epochs, lr=lr,
                       warmup_epochs=config.warmup_epochs if config.warmup_epochs is not None
                       else max(1.0, round(0.1 * epochs, 2)))
    metric = _metric_name(resolved, multilabel)
    if metric == "val_map" and not multilabel:
        raise ConfigError("val_map needs multi-label data; use val_top1 or val_loss")

    from falv.data.transforms import eval_transform, train_transform

    size = mcfg.image_size
    mean, std = tuple(mcfg.image_mean), tuple(mcfg.image_std)
    ttf = train_transform(crop_size=size, scale=resolved.scale, flip=resolved.flip == "on", mean=mean, std=std)
    etf = eval_transform(shortest_edge=size, mean=mean, std=std)
    budget = _cache_budget(resolved, train_src, ttf.shortest_edge or size)
    train_ds = VideoClipDataset(train_src, mcfg.num_frames, ttf, train=True, seed=resolved.seed, cache_bytes=budget)
    val_ds = VideoClipDataset(val_src, mcfg.num_frames, etf, train=False, seed=resolved.seed,
                              cache_bytes=budget and int(budget * len(val_src) / max(1, len(train_src))) + 2**20)
    workers = resolved.workers if resolved.workers is not None else (0 if budget else 2)

    device, amp = ctx.device, _precision(resolved, ctx.device)
    model.to(device)
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), resolved.weight_decay), lr=lr,
                                  betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    ema = ModelEMA(model, resolved.ema) if resolved.ema else None

    steps_per_epoch = math.ceil(len(_epoch_batches(len(train_src), micro, 0, 0, ctx.rank, ctx.world_size))
                                / resolved.accumulate)
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(total_steps - 1, int(round(resolved.warmup_epochs * steps_per_epoch)))

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "bad_epochs": 0}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["state"]["optimizer"])
        if scaler is not None and checkpoint["state"].get("scaler"):
            scaler.load_state_dict(checkpoint["state"]["scaler"])
        if ema is not None and checkpoint["ema"] is not None:
            ema.load_state_dict(checkpoint["ema"])
        state.update(checkpoint["state"]["trainer"])
    log = _Log(run_dir / LOG_NAME, ctx.is_main, started - state.get("elapsed", 0.0))
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            (run_dir / LOG_NAME).unlink(missing_ok=True)
            atomic_write_text(run_dir / CONFIG_NAME, resolved.to_json())
            atomic_write_text(run_dir / "split.json", json.dumps(
                {"train": train_src.to_dict(), "val": val_src.to_dict(), "how": how}, indent=1) + "\n")
        else:
            log.truncate_after(state["step"], state["epoch"])
    say(f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
        f"{mcfg.attention_type if hasattr(mcfg, 'attention_type') else 'cnn'}) on {len(train_src)} videos, "
        f"validating on {len(val_src)}; {epochs} epochs x {steps_per_epoch} steps, lr {lr:.2g}, "
        f"{'bf16' if amp is torch.bfloat16 else 'fp16' if amp is torch.float16 else 'fp32'}"
        f"{f', {ctx.world_size} processes' if ctx.enabled else ''}"
        f"{', frames cached in memory' if budget else ''}"
        + (f"; resuming at epoch {state['epoch'] + 1}" if checkpoint is not None else ""))

    def snapshot() -> None:
        if ctx.is_main:
            st = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                  "trainer": {**state, "elapsed": time.monotonic() - log.started}}
            save_checkpoint(run_dir, state["step"], model=model.state_dict(), state=st,
                            ema=ema.state_dict() if ema else None)
        ctx.barrier()

    stop_signal: list[int] = []
    previous = None
    if ctx.is_main and hasattr(signal, "SIGTERM"):
        try:
            previous = signal.signal(signal.SIGTERM, lambda s, f: stop_signal.append(s))
        except ValueError:  # not the main thread
            previous = None

    history: list[dict[str, Any]] = []
    num_classes = len(train_src.classes)
    best_dir = run_dir / "best"
    try:
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            train_ds.set_epoch(epoch)
            batches = _epoch_batches(len(train_src), micro, resolved.seed, epoch, ctx.rank, ctx.world_size)
            done_in_epoch = state["step"] - epoch * steps_per_epoch  # optimizer steps already taken this epoch
            groups = [batches[i:i + resolved.accumulate] for i in range(0, len(batches), resolved.accumulate)]
            from torch.utils.data import DataLoader

            flat = [b for g in groups[done_in_epoch:] for b in g]
            loader = DataLoader(train_ds, batch_sampler=flat, collate_fn=collate, num_workers=workers,
                                persistent_workers=False)
            it = iter(loader)
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            rate = lr_at(max(0, state["step"] - 1), total_steps, warmup_steps, lr, min(resolved.min_lr, lr))
            for group in groups[done_in_epoch:]:
                step = state["step"]
                rate = lr_at(step, total_steps, warmup_steps, lr, min(resolved.min_lr, lr))
                for g in optimizer.param_groups:
                    g["lr"] = rate
                torch.manual_seed(_step_seed(resolved.seed, step, ctx.rank))  # dropout / drop path
                rng = np.random.default_rng(_step_seed(resolved.seed, step, 10_000 + ctx.rank))
                for k in range(len(group)):
                    batch = next(it)
                    if batch is None:
                        continue
                    x = batch["pixel_values"].to(device, non_blocking=True)
                    y = batch["labels"].to(device)
                    target = soft_targets(y, num_classes, 0.0 if multilabel else resolved.label_smoothing)
                    x, target = mix_batch(x, target, rng, mixup_alpha=resolved.mixup, cutmix_alpha=resolved.cutmix,
                                          prob=resolved.mix_prob)
                    sync = k == len(group) - 1 or not ctx.enabled
                    with (nullcontext() if sync else net.no_sync()), _autocast(device, amp):
                        logits = net(x).logits
                        loss = soft_loss(logits, target, multilabel) / len(group)
                    (scaler.scale(loss) if scaler else loss).backward()
                    loss_sum += float(loss.detach()) * len(group) * len(y)
                    seen += len(y)
                    if not multilabel:
                        correct += int((logits.detach().argmax(-1) == y).sum())
                if scaler:
                    scaler.unscale_(optimizer)
                if resolved.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), resolved.clip_grad)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                state["step"] = step + 1
                if state["step"] % resolved.log_every == 0:
                    log.write("step", epoch=epoch + 1, step=state["step"], loss=round(float(loss.detach()) * len(group), 5),
                              lr=rate)
                if on_step is not None:
                    on_step(state["step"])
                if stop_signal:
                    raise KeyboardInterrupt
            totals = ctx.all_sum([loss_sum, correct, seen])
            train_loss = totals[0] / max(1.0, totals[2])
            train_top1 = None if multilabel else totals[1] / max(1.0, totals[2])
            state["epoch"] = epoch + 1
            record: dict[str, Any] = {"epoch": epoch + 1, "step": state["step"], "lr": rate,
                                      "train_loss": round(train_loss, 5),
                                      "train_top1": None if train_top1 is None else round(train_top1, 5),
                                      "val_loss": None, "val_top1": None, "val_map": None}
            last = state["epoch"] == epochs
            if (epoch + 1) % resolved.validate_every == 0 or last:
                judged = ema.module if ema is not None else model
                record.update(validate(judged, val_ds, ctx, amp, micro, multilabel))
                value = record[metric]
                if _better(metric, value, state["best"], resolved.min_delta):
                    state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
                    if ctx.is_main:
                        _save_best(judged, best_dir)
                else:
                    state["bad_epochs"] += 1
            log.write("epoch", **record)
            history.append(record)
            say(_epoch_line(record, epochs, metric, state, time.monotonic() - log.started))
            snapshot()
            if resolved.patience and state["bad_epochs"] >= resolved.patience:
                say(f"early stopping: {metric} has not improved for {resolved.patience} epochs")
                break
    except KeyboardInterrupt:
        snapshot()
        raise TrainingInterrupted(f"training stopped at step {state['step']}; checkpoint saved. "
                                  f"Continue with: falv train --resume --out {run_dir}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    elapsed = time.monotonic() - log.started
    log.write("end", best_epoch=state["best_epoch"], best_metric=metric, best_value=state["best"])
    if ctx.is_main:
        _write_plots(run_dir)
        say(f"best {metric} {state['best']:.4g} at epoch {state['best_epoch']}; model in {best_dir} "
            f"({elapsed:.0f} s)")
    return TrainResult(run_dir=run_dir, best_dir=best_dir, best_epoch=state["best_epoch"], best_metric=metric,
                       best_value=state["best"], epochs_run=state["epoch"], steps=state["step"], seconds=elapsed,
                       history=history)


def _epoch_line(record: dict[str, Any], epochs: int, metric: str, state: dict[str, Any], elapsed: float) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.3f}"]
    if record["train_top1"] is not None:
        parts.append(f"train {record['train_top1']:.1%}")
    if record[metric] is not None:
        value = record[metric]
        shown = f"{value:.3f}" if metric == "val_loss" else f"{value:.1%}"
        parts.append(f"{metric} {shown}{' *' if state['best_epoch'] == record['epoch'] else ''}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{elapsed:.0f} s")
    return "  ".join(parts)


def _write_plots(run_dir: Path) -> None:
    try:
        from falv.report.plots import plot_training
    except ImportError:
        return
    try:
        plot_training(run_dir / LOG_NAME, run_dir / "plots")
    except ImportError as exc:  # matplotlib missing: the JSONL log is still there
        logger.warning("training plots skipped: %s", exc)
