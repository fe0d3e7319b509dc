"""The training loop: ``falv train`` and :func:`train`.

``entry -> clip (seeded) -> augment -> batch -> [mixup/cutmix] -> model (autocast) ->
soft-target loss -> (accumulate) -> clip grads -> AdamW step at scheduled_lr(step) -> [EMA]``,
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

from falv.data.dataset import VideoClipDataset, collate, loader_context
from falv.data.sources import DatasetError, DatasetSource, load_source
from falv.errors import ConfigError, FalvError, RunError
from falv.hub.io import atomic_write_text
from falv.video.pool import MAIN_GUARD_HINT
from falv.training import distributed
from falv.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from falv.training.config import TrainConfig, default_epochs, default_lr
from falv.training.ema import ModelEMA
from falv.taxonomy import Taxonomy, read_taxonomy
from falv.training.mixing import Objective, mix_batch
from falv.training.schedule import PlateauTracker, param_groups, scheduled_lr
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
    if config.untrimmed:
        if config.taxonomy:
            raise ConfigError("--untrimmed and --taxonomy together are not supported yet: the background class "
                              "would need a place in the taxonomy")
        train, how["untrimmed"] = _add_untrimmed(train, config)
    if config.taxonomy:
        taxonomy = read_taxonomy(config.taxonomy)
        train, val = with_taxonomy(train, taxonomy), with_taxonomy(val, taxonomy)
        how["taxonomy"] = {"file": config.taxonomy, "leaves": list(taxonomy.leaves)}
    missing = sorted({lab for e in val.entries for lab in e.labels} - set(train.classes))
    if missing:
        raise DatasetError(f"validation labels not in the training classes: {missing[:10]}", code="unknown_label")
    val = val.with_classes(train.classes)
    if len(train) == 0 or len(val) == 0:
        raise DatasetError("the training and the validation set each need at least one video", code="empty")
    return train, val, how


def with_taxonomy(source: DatasetSource, taxonomy: Taxonomy) -> DatasetSource:
    """``source`` with its labels resolved to the taxonomy's nodes (a leaf's or an inner node's
    path; :meth:`Taxonomy.resolve`) and the nodes as its classes (the leaves first)."""
    if source.multilabel:
        raise ConfigError("--taxonomy needs single-label data (a hierarchical model picks one path)")
    resolved: dict[str, str] = {}
    for label in {lab for e in source.entries for lab in e.labels}:
        try:
            resolved[label] = taxonomy.resolve(label)
        except ConfigError as exc:
            raise DatasetError(f"{source.name}: {exc}", code="unknown_label") from None
    entries = [replace(e, labels=tuple(resolved[lab] for lab in e.labels)) for e in source.entries]
    return replace(source, entries=entries, classes=list(taxonomy.nodes), problems=list(source.problems))


def untrimmed_window(config: TrainConfig) -> float:
    """The length of the untrimmed training windows: ``untrimmed_window``, else the window
    labeling and evaluation plan by default for the model being trained."""
    if config.untrimmed_window is not None:
        return float(config.untrimmed_window)
    from falv.evaluation.runner import default_window

    if config.num_frames:
        frames = config.num_frames
    elif config.init is not None:
        from falv.hub.load import load_config

        frames = load_config(config.init).num_frames
    else:
        from falv.model.presets import preset

        frames = preset(config.preset).num_frames
    return default_window(int(frames))


def _add_untrimmed(train: DatasetSource, config: TrainConfig) -> tuple[DatasetSource, dict[str, Any]]:
    """The training source plus the windows of the untrimmed videos (``--untrimmed``)."""
    from falv.data.untrimmed import untrimmed_entries, with_untrimmed

    window = untrimmed_window(config)
    found = untrimmed_entries(config.untrimmed, window=window, stride=config.untrimmed_stride,
                              subset=config.untrimmed_subset, multilabel=train.multilabel)
    if found.missing:
        logger.warning("%s: %d video(s) of the ground truth not found and left out: %s", config.untrimmed,
                       len(found.missing), ", ".join(found.missing[:5]))
    merged, background = with_untrimmed(train, found)
    from falv.data.untrimmed import DEFAULT_TRAIN_STRIDE_FRACTION

    stride = config.untrimmed_stride if config.untrimmed_stride is not None else window * DEFAULT_TRAIN_STRIDE_FRACTION
    return merged, {"ground_truth": config.untrimmed, "subset": config.untrimmed_subset, "window": window,
                    "stride": stride, "videos": found.videos, "windows": len(found.entries),
                    "background_windows": found.background_windows, "background_label": background}


def background_of(how: dict[str, Any]) -> str | None:
    """The background label the training data defines (``--untrimmed``, single-label), if any."""
    return (how.get("untrimmed") or {}).get("background_label")


def _cache_budget(config: TrainConfig, source: DatasetSource, size: int) -> int:
    """Bytes of frame cache per process: the whole set when it fits ``cache_gb`` (or ``cache=on``)."""
    if config.cache == "off":
        return 0
    budget = int(config.cache_gb * 2**30)
    if config.cache == "on":
        return budget
    from falv.video import probe

    paths = list(dict.fromkeys(e.path for e in source.entries))  # windows of one file share its frames
    sample = paths[:: max(1, len(paths) // 16)][:16]
    per_video = []
    for path in sample:
        try:
            info = probe(path)
        except (FalvError, OSError):
            continue
        aspect = max(info.width, info.height) / max(1, min(info.width, info.height))
        per_video.append(info.num_frames * size * size * aspect * 3)
    estimate = float(np.mean(per_video)) * len(paths) if per_video else math.inf
    return budget if estimate <= budget else 0


# -- model ---------------------------------------------------------------------------
def build_model(config: TrainConfig, classes: list[str], multilabel: bool, background: str | None = None,
                hierarchical: bool = False) -> nn.Module:
    """A FAL model for ``classes``: a preset from scratch, or ``config.init`` with a new head.
    ``background``: the label of the learnt background class (``--untrimmed``); ``hierarchical``:
    ``classes`` are a taxonomy's leaf paths (``--taxonomy``)."""
    from falv.hub.load import load_model
    from falv.model.presets import preset
    from falv.model.transformer import FALForVideoClassification

    problem = "multi_label_classification" if multilabel else "single_label_classification"
    overrides = dict(config.model_overrides)
    if config.attention:
        overrides["attention_type"] = config.attention
    if config.drop_path is not None:
        overrides["drop_path_rate"] = config.drop_path
    if config.motion_input is not None:
        overrides["motion_input"] = config.motion_input
    if background is not None:
        overrides["background_label"] = background
    if hierarchical:
        overrides["hierarchical"] = True
    if config.init is None:
        if config.num_frames:
            overrides["num_frames"] = config.num_frames
        if config.image_size:
            overrides["image_size"] = config.image_size
        cfg = preset(config.preset, id2label=dict(enumerate(classes)), problem_type=problem,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), **overrides)
        return FALForVideoClassification(cfg)
    from falv.hub.families import detect

    family = detect(config.init)[0]
    if family.name != "fal":
        return _other_family(config, family.name, classes, problem, background, hierarchical)
    model = load_model(config.init, num_frames=config.num_frames, image_size=config.image_size)
    same_head = model.config.labels == list(classes) if hasattr(model.config, "labels") else False
    if not same_head or overrides or model.config.problem_type != problem:
        state = model.state_dict()
        cfg = replace(model.config.with_labels(classes), problem_type=problem, **overrides)
        model = FALForVideoClassification(cfg)
        own = model.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape
                and (same_head or not k.startswith("head."))}
        key = "fal.embeddings.patch_embed.proj.weight"
        if key in state and key in own and key not in kept and own[key].shape[1] == 2 * state[key].shape[1]:
            # motion input added to a checkpoint without it: its pixel weights, and zero weights for the
            # frame differences, so training starts from the checkpoint's own function
            d, frames = own[key].shape[0], cfg.patch_frames
            weight = torch.zeros(d, frames, 2, own[key].shape[1] // (2 * frames))
            weight[:, :, 0] = state[key].view(d, frames, -1)
            kept[key] = weight.view(d, -1)
        model.load_state_dict(kept, strict=False)
    return model


def _other_family(config: TrainConfig, family: str, classes: list[str], problem: str, background: str | None,
                  hierarchical: bool) -> nn.Module:
    """``config.init`` of a family other than FAL (VideoMAE, PySlowFast, X3D, TSM, the CNN baseline),
    with a fresh head unless its classes and problem type are already ``classes`` / ``problem``."""
    from falv.hub.families import load_model

    fal_only = [flag for flag, value in (("--attention", config.attention), ("--drop-path", config.drop_path),
                                         ("--motion-input", config.motion_input), ("--num-frames", config.num_frames),
                                         ("--image-size", config.image_size),
                                         ("model overrides", config.model_overrides)) if value]
    if fal_only:
        raise ConfigError(f"{', '.join(fal_only)} apply to FAL models; {config.init} is a {family} model, "
                          "which trains with its own architecture and clip shape")
    model = load_model(config.init)
    if model.config.labels != list(classes) or model.config.problem_type != problem:
        model = load_model(config.init, labels=list(classes))
    model.config.problem_type = problem
    model.config.background_label = background
    model.config.hierarchical = hierarchical
    if hasattr(model.config, "validate"):
        model.config.validate()
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


def _next_batch(batches: Any, workers: int) -> Any:
    """The loader's next batch; loader workers that die say what to check (a script without a
    main guard: they start with forkserver and re-import the main module, as falv label's do)."""
    try:
        return next(batches)
    except RuntimeError as exc:
        if workers > 0 and "exited unexpectedly" in str(exc):
            raise RunError(f"the {workers} data loading worker processes died ({exc}). {MAIN_GUARD_HINT}, "
                           "or pass --workers 0 (workers=0 in Python)") from exc
        raise


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


# Below this width, bf16 autocast on CPU costs more in casts than it saves in matmuls
# (tiny preset, width 128: 1.8x slower than fp32 on one thread, equal on two; measured).
BF16_MIN_WIDTH_CPU = 384


def _precision(config: TrainConfig, device: torch.device, width: int | None = None) -> torch.dtype | None:
    from falv.inference import cpu_supports_bf16

    p = config.precision
    if p == "fp32":
        return None
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        wide = width is None or width >= BF16_MIN_WIDTH_CPU
        return torch.bfloat16 if cpu_supports_bf16() and wide else None
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
    objective: Objective,
    return_logits: bool = False,
) -> dict[str, Any]:
    """Single-view validation (centre clip, centre crop): loss, top-1 or mAP, sharded over processes.
    ``return_logits``: also ``logits`` (N, K) and ``targets`` of the whole split."""
    from falv.evaluation.metrics import mean_average_precision

    model.eval()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    scores, targets, loss_sum, correct = [], [], 0.0, 0
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        if batch is None:
            continue
        with _autocast(ctx.device, amp):
            logits = model(batch["pixel_values"].to(ctx.device)).logits.float().cpu()
        y = batch["labels"]
        loss_sum += float(objective.loss(logits, objective.targets(y))) * len(y)
        correct += objective.correct(logits, y)
        scores.append(logits)
        targets.append(y)
    local = (torch.cat(scores).numpy() if scores else None, torch.cat(targets).numpy() if targets else None, loss_sum,
             correct)
    parts = [p for p in ctx.gather(local) if p[0] is not None]
    all_scores = np.concatenate([p[0] for p in parts])
    all_targets = np.concatenate([p[1] for p in parts])
    out: dict[str, Any] = {"val_loss": sum(p[2] for p in parts) / len(all_scores)}
    multilabel = objective.multilabel
    if return_logits:
        out["logits"], out["targets"] = all_scores, all_targets
    if multilabel:
        out["val_map"] = float(mean_average_precision(all_scores, all_targets))
        out["val_top1"] = None
    else:
        out["val_top1"] = sum(p[3] for p in parts) / len(all_scores)
        out["val_map"] = None
    return out


def calibrate(config: Any, logits: np.ndarray, targets: np.ndarray, multilabel: bool) -> dict[str, Any]:
    """Fit the model's score calibration on the validation split's logits and store it in
    ``config``: the temperature (``config.temperature``, L-BFGS on the NLL) and, for
    multi-label models, per-class thresholds on the calibrated scores (``config.thresholds``).
    Returns the figures for the training log (temperature, validation ECE before and after)."""
    from falv.evaluation.calibration import (expected_calibration_error, fit_temperature, sigmoid_np, softmax_np,
                                             tune_thresholds)

    if getattr(config, "hierarchical", False) and not multilabel:  # fitted on the videos labelled at a leaf
        leaf = np.asarray(targets) < config.num_labels
        logits, targets = np.asarray(logits)[leaf], np.asarray(targets)[leaf]
    if not hasattr(config, "temperature") or len(logits) == 0:
        return {}
    z = np.asarray(logits, dtype=np.float64)
    t = fit_temperature(z, targets, multilabel=multilabel)
    config.temperature = round(t, 4)
    scores = sigmoid_np if multilabel else softmax_np
    out = {"temperature": config.temperature,
           "val_ece_raw": expected_calibration_error(scores(z), targets, multilabel=multilabel),
           "val_ece": expected_calibration_error(scores(z / config.temperature), targets, multilabel=multilabel)}
    if multilabel:
        config.thresholds = [round(x, 4) for x in tune_thresholds(scores(z / config.temperature), targets)]
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
    return Trainer(config, run_dir, ctx, model, checkpoint, on_step, say).run()


class Trainer:
    """One training run: built from a config (and a checkpoint when resuming), then :meth:`run`."""

    def __init__(self, config, run_dir, ctx, model, checkpoint, on_step, say) -> None:
        self.run_dir, self.ctx, self.on_step, self.say = run_dir, ctx, on_step, say
        started = time.monotonic()
        self.train_src, self.val_src, how = open_sources(config)
        self.multilabel = self.train_src.multilabel
        self.taxonomy = read_taxonomy(config.taxonomy) if config.taxonomy else None
        classes = list(self.taxonomy.leaves) if self.taxonomy is not None else self.train_src.classes
        self.objective = Objective(len(classes), self.multilabel, self.taxonomy)
        if model is None:
            torch.manual_seed(config.seed)  # the initial weights depend on the seed only
            model = build_model(config, classes, self.multilabel, background_of(how),
                                hierarchical=self.taxonomy is not None)
        if config.freeze_backbone:
            _freeze_backbone(model)
        self.model = model
        epochs = config.epochs or default_epochs(len(self.train_src))
        lr = config.lr or default_lr(config.batch_size, config.accumulate, fine_tune=config.init is not None)
        warmup = config.warmup_epochs if config.warmup_epochs is not None else max(1.0, round(0.1 * epochs, 2))
        step_epochs = config.step_epochs or max(1.0, round(epochs / 3, 2))
        self.config = cfg = replace(config, epochs=epochs, lr=lr, warmup_epochs=warmup, step_epochs=step_epochs)
        self.metric = _metric_name(cfg, self.multilabel)
        if self.metric == "val_map" and not self.multilabel:
            raise ConfigError("val_map needs multi-label data; use val_top1 or val_loss")
        self.micro = max(1, cfg.batch_size // ctx.world_size)  # clips per process per micro-batch
        self._build_data()
        self._build_optimisation()
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "bad_epochs": 0}
        if checkpoint is not None:
            self._restore(checkpoint)
        self.log = _Log(run_dir / LOG_NAME, ctx.is_main, started - self.state.get("elapsed", 0.0))
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:
                (run_dir / LOG_NAME).unlink(missing_ok=True)
                atomic_write_text(run_dir / CONFIG_NAME, cfg.to_json())
                atomic_write_text(run_dir / "split.json", json.dumps(
                    {"train": self.train_src.to_dict(), "val": self.val_src.to_dict(), "how": how}, indent=1) + "\n")
            else:
                self.log.truncate_after(self.state["step"], self.state["epoch"])
        self._announce(resumed=checkpoint is not None)

    # -- setup ---------------------------------------------------------------------------
    def _build_data(self) -> None:
        from falv.data.transforms import eval_transform, train_transform

        cfg, mcfg = self.config, self.model.config
        size, mean, std = mcfg.image_size, tuple(mcfg.image_mean), tuple(mcfg.image_std)
        ttf = train_transform(crop_size=size, scale=cfg.scale, flip=cfg.flip == "on", mean=mean, std=std,
                              color_jitter=cfg.color_jitter, rotate=cfg.rotate)
        etf = eval_transform(shortest_edge=size, mean=mean, std=std)
        self.cache = _cache_budget(cfg, self.train_src, ttf.shortest_edge or size)
        val_cache = self.cache and int(self.cache * len(self.val_src) / max(1, len(self.train_src))) + 2**20
        self.train_ds = VideoClipDataset(self.train_src, mcfg.num_frames, ttf, train=True, seed=cfg.seed,
                                         cache_bytes=self.cache, frame_selection=cfg.frame_selection)
        self.val_ds = VideoClipDataset(self.val_src, mcfg.num_frames, etf, train=False, seed=cfg.seed,
                                       cache_bytes=val_cache, frame_selection=cfg.frame_selection)
        if hasattr(mcfg, "sampling"):  # how the model saw time: what labeling plans its windows from
            mcfg.sampling = self.train_ds.sampling()
        self.workers = cfg.workers if cfg.workers is not None else (0 if self.cache else 2)
        batches = _epoch_batches(len(self.train_src), self.micro, 0, 0, self.ctx.rank, self.ctx.world_size)
        self.steps_per_epoch = math.ceil(len(batches) / cfg.accumulate)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = min(self.total_steps - 1, int(round(cfg.warmup_epochs * self.steps_per_epoch)))

    def _build_optimisation(self) -> None:
        cfg, ctx, model = self.config, self.ctx, self.model
        self.device, self.amp = ctx.device, _precision(cfg, ctx.device, getattr(model.config, "hidden_size", None))
        model.to(self.device)
        self.net: nn.Module = model
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                                           betas=(0.9, 0.999))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None
        self.ema = ModelEMA(model, cfg.ema) if cfg.ema else None

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["state"]["optimizer"])
        if self.scaler is not None and checkpoint["state"].get("scaler"):
            self.scaler.load_state_dict(checkpoint["state"]["scaler"])
        if self.ema is not None and checkpoint["ema"] is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.state.update(checkpoint["state"]["trainer"])

    def _announce(self, resumed: bool) -> None:
        cfg, mcfg = self.config, self.model.config
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, "fp32")
        self.say(f"training {type(self.model).__name__} ({params:.2f} M parameters, "
                 f"{getattr(mcfg, 'attention_type', 'cnn')}) on {len(self.train_src)} videos, validating on "
                 f"{len(self.val_src)}; {cfg.epochs} epochs x {self.steps_per_epoch} steps, lr {cfg.lr:.2g}, {precision}"
                 f"{f', {self.ctx.world_size} processes' if self.ctx.enabled else ''}"
                 f"{', frames cached in memory' if self.cache else ''}"
                 + (f"; resuming at epoch {self.state['epoch'] + 1}" if resumed else ""))

    def snapshot(self) -> None:
        """Checkpoint the current state (rank 0 writes; every process waits for it)."""
        if self.ctx.is_main:
            st = {"optimizer": self.optimizer.state_dict(),
                  "scaler": self.scaler.state_dict() if self.scaler else None,
                  "trainer": {**self.state, "elapsed": time.monotonic() - self.log.started}}
            save_checkpoint(self.run_dir, self.state["step"], model=self.model.state_dict(), state=st,
                            ema=self.ema.state_dict() if self.ema else None)
        self.ctx.barrier()

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, state = self.config, self.state
        stop_signal: list[int] = []
        previous = None
        if self.ctx.is_main:
            try:
                previous = signal.signal(signal.SIGTERM, lambda s, f: stop_signal.append(s))
            except ValueError:  # not the main thread
                previous = None
        history: list[dict[str, Any]] = []
        try:
            while state["epoch"] < cfg.epochs:
                record = self.train_epoch(state["epoch"], stop_signal)
                record.update(self.end_epoch(record["epoch"]))
                self.log.write("epoch", **record)
                history.append(record)
                self.say(_epoch_line(record, cfg.epochs, self.metric, state, time.monotonic() - self.log.started))
                self.snapshot()
                if cfg.patience and state["bad_epochs"] >= cfg.patience:
                    self.say(f"early stopping: {self.metric} has not improved for {cfg.patience} epochs")
                    break
        except KeyboardInterrupt:
            self.snapshot()
            raise TrainingInterrupted(f"training stopped at step {state['step']}; checkpoint saved. "
                                      f"Continue with: falv train --resume --out {self.run_dir}") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        elapsed = time.monotonic() - self.log.started
        self.log.write("end", best_epoch=state["best_epoch"], best_metric=self.metric, best_value=state["best"])
        best_dir = self.run_dir / "best"
        if self.ctx.is_main:
            _write_plots(self.run_dir)
            self.say(f"best {self.metric} {state['best']:.4g} at epoch {state['best_epoch']}; model in {best_dir} "
                     f"({elapsed:.0f} s)")
        return TrainResult(run_dir=self.run_dir, best_dir=best_dir, best_epoch=state["best_epoch"],
                           best_metric=self.metric, best_value=state["best"], epochs_run=state["epoch"],
                           steps=state["step"], seconds=elapsed, history=history)

    def train_epoch(self, epoch: int, stop_signal: list[int]) -> dict[str, Any]:
        """The optimizer steps of ``epoch`` not yet taken; returns the epoch's training figures."""
        from torch.utils.data import DataLoader

        cfg, ctx, state = self.config, self.ctx, self.state
        self.train_ds.set_epoch(epoch)
        batches = _epoch_batches(len(self.train_src), self.micro, cfg.seed, epoch, ctx.rank, ctx.world_size)
        groups = [batches[i:i + cfg.accumulate] for i in range(0, len(batches), cfg.accumulate)]
        groups = groups[state["step"] - epoch * self.steps_per_epoch:]  # steps already taken (resume)
        loader = DataLoader(self.train_ds, batch_sampler=[b for g in groups for b in g], collate_fn=collate,
                            num_workers=self.workers, multiprocessing_context=loader_context(self.workers))
        batches_in = iter(loader)
        self.net.train()
        sums = [0.0, 0.0, 0.0]  # loss x clips, correct, clips
        rate = self._rate(max(0, state["step"] - 1))
        for group in groups:
            step = state["step"]
            rate = self._rate(step)
            for g in self.optimizer.param_groups:
                g["lr"] = rate
            torch.manual_seed(_step_seed(cfg.seed, step, ctx.rank))  # dropout / drop path
            rng = np.random.default_rng(_step_seed(cfg.seed, step, 10_000 + ctx.rank))
            loss = self._accumulate([_next_batch(batches_in, self.workers) for _ in group], rng, sums)
            self._optimizer_step()
            state["step"] = step + 1
            if state["step"] % cfg.log_every == 0:
                self.log.write("step", epoch=epoch + 1, step=state["step"], loss=round(loss, 5), lr=rate)
            if self.on_step is not None:
                self.on_step(state["step"])
            if stop_signal:
                raise KeyboardInterrupt
        loss_sum, correct, seen = ctx.all_sum(sums)
        state["epoch"] = epoch + 1
        return {"epoch": epoch + 1, "step": state["step"], "lr": rate,
                "train_loss": round(loss_sum / max(1.0, seen), 5),
                "train_top1": None if self.multilabel else round(correct / max(1.0, seen), 5),
                "val_loss": None, "val_top1": None, "val_map": None}

    def _rate(self, step: int) -> float:
        cfg = self.config
        return scheduled_lr(cfg.scheduler, step, self.total_steps, self.warmup_steps, cfg.lr,
                            min(cfg.min_lr, cfg.lr), steps_per_epoch=self.steps_per_epoch,
                            step_epochs=cfg.step_epochs, gamma=cfg.step_gamma,
                            scale=self.state.get("lr_scale", 1.0))

    def _accumulate(self, micro_batches: list[Any], rng: np.random.Generator, sums: list[float]) -> float:
        """Forward and backward over the micro-batches of one step; returns the step's mean loss."""
        cfg, objective = self.config, self.objective
        step_loss = 0.0
        for k, batch in enumerate(micro_batches):
            if batch is None:
                continue
            x = batch["pixel_values"].to(self.device, non_blocking=True)
            y = batch["labels"].to(self.device)
            target = objective.targets(y, cfg.label_smoothing)
            x, target = mix_batch(x, target, rng, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob)
            sync = k == len(micro_batches) - 1 or not self.ctx.enabled  # DDP: all-reduce on the last only
            with (nullcontext() if sync else self.net.no_sync()), _autocast(self.device, self.amp):
                logits = self.net(x).logits
                loss = objective.loss(logits, target) / len(micro_batches)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            value = float(loss.detach()) * len(micro_batches)
            step_loss += value / len(micro_batches)
            sums[0] += value * len(y)
            sums[2] += len(y)
            sums[1] += objective.correct(logits.detach(), y)
        return step_loss

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Validate (every ``validate_every`` epochs and at the end), keep the best model, count bad epochs."""
        cfg, state = self.config, self.state
        if epoch % cfg.validate_every and epoch != cfg.epochs:
            return {}
        judged = self.ema.module if self.ema is not None else self.model
        figures = validate(judged, self.val_ds, self.ctx, self.amp, self.micro, self.objective, return_logits=True)
        logits, targets = figures.pop("logits"), figures.pop("targets")
        value = figures[self.metric]
        improved = _better(self.metric, value, state["best"], cfg.min_delta)
        if improved:
            state.update(best=value, best_epoch=epoch, bad_epochs=0)
            figures.update(calibrate(judged.config, logits, targets, self.multilabel))
            if self.ctx.is_main:
                _save_best(judged, self.run_dir / "best")
        else:
            state["bad_epochs"] += 1
        if cfg.scheduler == "plateau":  # judged on the same metric as the best checkpoint
            PlateauTracker(cfg.plateau_factor, cfg.plateau_patience).update(state, improved)
        return figures


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
