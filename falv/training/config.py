"""TrainConfig: everything that determines a training run (saved as ``RUN_DIR/train_config.json``).

Fields left as ``None`` are filled by :func:`resolve` from the data and the
model, so that the defaults scale with the dataset: see docs/training.md for
the recipe and the measurements behind it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from falv.config import FRAME_SELECTIONS, MOTION_INPUTS
from falv.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
METRICS = ("auto", "val_top1", "val_loss", "val_map")
FLIP = ("auto", "on", "off")
SCHEDULERS = ("cosine", "step", "plateau")


@dataclass
class TrainConfig:
    data: str = ""                    # any dataset source (folder, CSV list, falv synth folder, ...)
    out: str = ""                     # RUN_DIR
    val: str | None = None            # validation source; None: a stratified hold-out of `data`
    val_fraction: float = 0.15
    split: str | None = None          # split of `data` to train on (synth/Kinetics...): default "train" when it has one
    val_split: str | None = None      # split of `val` (or of `data` when val is None and it has one): default "val"
    # annotated untrimmed videos (ActivityNet-style ground truth): windows inside actions train their
    # class, windows in the gaps a background class (falv/data/untrimmed.py)
    untrimmed: str | None = None
    untrimmed_subset: str | None = None  # one subset of that file (default: every annotated video)
    untrimmed_window: float | None = None  # window seconds (default: the window labeling uses for the model)
    untrimmed_stride: float | None = None  # default: half the window
    # model
    preset: str = "tiny"
    attention: str | None = None      # attention scheme (default: the preset's, divided)
    init: str | None = None           # falv dir, TimeSformer dir/hub id or .pyth to start from
    freeze_backbone: bool = False     # train only the head (linear probing)
    num_frames: int | None = None
    image_size: int | None = None
    frame_selection: str = "uniform"  # or "key-moments": frames where the picture changes (falv.video.keymoments)
    motion_input: str | None = None   # "frame_diff": frame differences as extra input channels (None: the model's)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # any FALConfig field
    # a label taxonomy file (falv.taxonomy): the classes are its leaves, labels may name any node,
    # and the loss counts every level from the top down to the labelled node
    taxonomy: str | None = None
    # optimisation
    epochs: int | None = None         # None: scaled to the dataset size
    batch_size: int = 16              # global batch (split across processes)
    accumulate: int = 1               # micro-batches per optimizer step
    lr: float | None = None           # None: 1e-3 x batch x accumulate / 16 from scratch, a tenth of it fine-tuning
    min_lr: float = 1e-5              # floor of every scheduler
    scheduler: str = "cosine"         # after warm-up: cosine decay, step decay, or reduce on plateau
    step_epochs: float | None = None  # step: epochs between decays (None: a third of the epochs)
    step_gamma: float = 0.1           # step: factor per decay
    plateau_patience: int = 2         # plateau: validations without improvement tolerated
    plateau_factor: float = 0.1       # plateau: factor per reduction
    weight_decay: float = 0.05
    warmup_epochs: float | None = None  # None: 10% of the epochs (at least one)
    label_smoothing: float = 0.1
    mixup: float = 0.0                # Beta(alpha, alpha) for mixup; 0 disables
    cutmix: float = 0.0               # Beta(alpha, alpha) for cutmix; 0 disables
    mix_prob: float = 1.0
    clip_grad: float | None = 1.0
    drop_path: float | None = None    # None: the model config's
    precision: str = "auto"           # bf16 autocast on CPUs with bf16, bf16/fp16 on CUDA
    ema: float | None = None          # EMA decay (e.g. 0.999); validation and best/ then use the EMA weights
    # augmentation
    scale: tuple[float, float] = (0.5, 1.0)  # random resized crop area range
    flip: str = "off"                 # horizontal flip: off by default (direction classes flip meaning)
    color_jitter: float = 0.0         # brightness/contrast/saturation factors in [1-s, 1+s] per clip (0: off)
    rotate: float = 0.0               # one rotation in [-deg, deg] per clip (0: off)
    # validation, stopping, checkpoints
    metric: str = "auto"              # val_top1 (single-label) / val_map (multi-label)
    patience: int | None = None       # early stopping: epochs without improvement
    min_delta: float = 0.0
    validate_every: int = 1
    seed: int = 0
    workers: int | None = None        # DataLoader workers; None: 0 when frames are cached, else 2
    cache: str = "auto"               # keep decoded frames in memory: auto (when they fit), on, off
    cache_gb: float = 2.0
    log_every: int = 10               # optimizer steps between step log lines
    device: str = "auto"

    def __post_init__(self) -> None:
        self.scale = tuple(float(x) for x in self.scale)  # type: ignore[assignment]
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.flip not in FLIP:
            raise ConfigError(f"flip must be one of {', '.join(FLIP)}, got {self.flip!r}")
        if self.cache not in ("auto", "on", "off"):
            raise ConfigError(f"cache must be auto, on or off, got {self.cache!r}")
        for name in ("batch_size", "accumulate", "validate_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ConfigError("mixup and cutmix alphas must not be negative")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ConfigError(f"ema decay must be in (0, 1), got {self.ema}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.step_epochs is not None and self.step_epochs <= 0:
            raise ConfigError(f"step_epochs must be positive, got {self.step_epochs}")
        if not 0.0 < self.step_gamma <= 1.0 or not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError("step_gamma must be in (0, 1] and plateau_factor in (0, 1)")
        if self.plateau_patience < 0 or self.min_lr < 0:
            raise ConfigError("plateau_patience and min_lr must not be negative")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        if self.untrimmed_window is not None and not self.untrimmed_window > 0:
            raise ConfigError(f"untrimmed_window must be > 0 seconds, got {self.untrimmed_window}")
        if self.untrimmed_stride is not None and not self.untrimmed_stride > 0:
            raise ConfigError(f"untrimmed_stride must be > 0 seconds, got {self.untrimmed_stride}")
        if self.motion_input is not None and self.motion_input not in MOTION_INPUTS:
            raise ConfigError(f"unknown motion_input {self.motion_input!r}; valid values: {', '.join(MOTION_INPUTS)}")
        if self.frame_selection not in FRAME_SELECTIONS:
            raise ConfigError(f"unknown frame_selection {self.frame_selection!r}; valid values: "
                              f"{', '.join(FRAME_SELECTIONS)}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"scale {self.scale} must satisfy 0 < min <= max <= 1")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``taxonomy`` only when set, so flat runs' configs (and the experiments'
        cache keys made from them) stay as they were before the option existed."""
        out = dataclasses.asdict(self)
        if out["taxonomy"] is None:
            del out["taxonomy"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(unknown)}")
        return cls(**data)


def default_epochs(num_train: int) -> int:
    """Epochs for a dataset of ``num_train`` videos when none are given: enough optimizer
    steps for a small transformer to learn from scratch on small sets (measured on falv synth
    sets, docs/training.md), fewer passes as the set grows: ``ceil(12000 / n)`` (about
    12000 clips seen), clamped to [30, 100] epochs.
    """
    return int(min(100, max(30, math.ceil(12000 / max(1, num_train)))))


def default_lr(batch_size: int, accumulate: int, fine_tune: bool) -> float:
    """Linear scaling rule (Goyal et al., 2017): 1e-3 per 16 clips from scratch, a tenth fine-tuning."""
    base = 1e-3 * batch_size * accumulate / 16
    return base / 10 if fine_tune else base
