"""FALConfig: one typed configuration for the FAL video transformer.

Fields that mean the same as in transformers' ``TimesformerConfig`` carry the
same names (``image_size``, ``patch_size``, ``num_frames``, ``hidden_size``,
``attention_type``, ...), so a config.json written by either reads naturally in
the other. The config round-trips through JSON exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falv.errors import ConfigError

CONFIG_NAME = "config.json"
MODEL_TYPE = "fal"

#: The five space-time attention schemes of the FAL paper (Fig. 1, Table 1).
ATTENTION_TYPES = (
    "space_only",
    "joint_space_time",
    "divided_space_time",
    "sparse_local_global",
    "axial",
)
POSITION_EMBEDDINGS = ("none", "space", "space_time")
#: Order of the two steps of divided attention: TimeSformer's time-then-space (the
#: default, what public checkpoints hold) or space-then-time (the paper's order ablation).
DIVIDED_ORDERS = ("time_space", "space_time")
HEAD_TYPES = ("linear", "mlp")
#: Motion input (``FALConfig.motion_input``): none, or each frame's difference from the previous
#: frame as extra input channels (computed inside the model from pixel_values).
MOTION_INPUTS = ("none", "frame_diff")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")

# ImageNet statistics, the default of TimeSformer's processor in transformers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: How a model's clips were spaced in time (:class:`ClipSampling`).
SAMPLING_MODES = ("dense", "uniform")
#: Where a clip's frames went inside its span (:class:`ClipSampling` ``frame_selection``;
#: falv.video.keymoments); the labeling option ``--frame-selection`` takes the same values.
FRAME_SELECTIONS = ("uniform", "key-moments")


@dataclass(frozen=True)
class ClipSampling:
    """How the frames of a model's training clips were spaced in time, stored in config.json
    as ``sampling``; labeling, evaluation, serving and streaming plan windows of
    :meth:`seconds` by default (docs/model.md, "Clip sampling").

    - ``mode="dense"``: ``num_frames`` frames ``frame_stride`` source frames apart at ``fps``
      (PySlowFast's ``NUM_FRAMES x SAMPLING_RATE``; TimeSformer on Kinetics: 8 x 32 at 30 fps),
      a clip of ``num_frames * frame_stride / fps`` seconds.
    - ``mode="uniform"``: TSN segment sampling, ``num_frames`` frames spread evenly over a
      clip of ``clip_seconds`` (falv train: over each whole training clip; it records the
      duration that 9 in 10 training clips fit in). ``clip_seconds=None``: clips were whole
      videos of any length (Something-Something v2); the model has no window of its own and
      a video is cut into ``--clips`` equal parts, as falv did before sampling was recorded.

    ``frame_selection``: ``"key-moments"`` when the frames were placed where the picture changes
    (uniform mode only; :mod:`falv.video.keymoments`), else None (uniform); labeling then
    selects frames the same way by default.

    ``source`` says where the numbers come from (free text, e.g. ``"falv train"``).
    """

    mode: str = "uniform"
    clip_seconds: float | None = None
    frame_stride: int | None = None
    fps: float | None = None
    source: str | None = None
    frame_selection: str | None = None

    def __post_init__(self) -> None:
        check_choice("sampling mode", self.mode, SAMPLING_MODES)
        if self.frame_selection is not None:
            check_choice("frame_selection", self.frame_selection, FRAME_SELECTIONS)
            if self.frame_selection == "uniform":
                object.__setattr__(self, "frame_selection", None)
            elif self.mode != "uniform":
                raise ConfigError("key-moments frame selection is a uniform-mode sampling (frames placed within "
                                  "a clip's span), not dense")
        if self.mode == "dense":
            if isinstance(self.frame_stride, bool) or not isinstance(self.frame_stride, int) or self.frame_stride < 1:
                raise ConfigError(f"dense sampling needs frame_stride >= 1 (frames), got {self.frame_stride!r}")
            if not _positive_number(self.fps):
                raise ConfigError(f"dense sampling needs fps > 0 (the rate frame_stride counts at), got {self.fps!r}")
            if self.clip_seconds is not None:
                raise ConfigError("dense sampling gives its duration by frame_stride and fps; drop clip_seconds")
        else:
            if self.frame_stride is not None or self.fps is not None:
                raise ConfigError("uniform sampling takes clip_seconds, not frame_stride/fps (that is mode='dense')")
            if self.clip_seconds is not None and not _positive_number(self.clip_seconds):
                raise ConfigError(f"clip_seconds must be a number > 0, got {self.clip_seconds!r}")
        if self.fps is not None:
            object.__setattr__(self, "fps", float(self.fps))
        if self.clip_seconds is not None:
            object.__setattr__(self, "clip_seconds", float(self.clip_seconds))

    def seconds(self, num_frames: int) -> float | None:
        """Duration of one clip of ``num_frames`` frames (None: a clip is a whole video)."""
        if self.mode == "dense":
            return num_frames * self.frame_stride / self.fps  # type: ignore[operator]
        return self.clip_seconds

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_any(cls, value: Any) -> ClipSampling | None:
        """A ClipSampling from itself, its dict (config.json) or None."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"sampling must be an object like {{\"mode\": \"dense\", \"frame_stride\": 32, "
                              f"\"fps\": 30}}, got {value!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"unknown sampling field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**value)

    @classmethod
    def parse(cls, text: str) -> ClipSampling:
        """From a command-line value: ``FxS@FPS`` / ``S@FPS`` (dense, stride S at FPS, e.g. ``8x32@30``
        or ``32@30``), ``2.5s`` or ``2.5`` (uniform over 2.5-second clips), or ``video`` (whole videos)."""
        t = text.strip().lower()
        if t in ("video", "whole", "none"):
            return cls(mode="uniform", clip_seconds=None, source="user")
        try:
            if "@" in t:
                stride, fps = t.split("@", 1)
                numbers: dict[str, Any] = {"mode": "dense", "frame_stride": int(stride.split("x", 1)[-1]),
                                           "fps": float(fps)}
            else:
                numbers = {"mode": "uniform", "clip_seconds": float(t.removesuffix("s"))}
        except ValueError:
            raise ConfigError(f"cannot read sampling {text!r}: give STRIDE@FPS (e.g. 32@30), SECONDS (e.g. 2.5s) "
                              "or 'video'") from None
        return cls(**numbers, source="user")


def _positive_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid values: {', '.join(choices)}")
    return value


def default_id2label(num_labels: int) -> dict[int, str]:
    """``{0: "LABEL_0", ...}``: transformers' names for ``num_labels`` unnamed classes."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError(f"num_labels must be an integer >= 1, got {num_labels!r}")
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def accepts_num_labels(cls):  # type: ignore[no-untyped-def]
    """Let a config dataclass take ``num_labels=N`` as transformers' configs do: without
    ``id2label`` the labels are ``LABEL_0`` ... ``LABEL_{N-1}``; with it, N must match."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, num_labels: int | None = None, **kwargs: Any) -> None:
        if num_labels is not None:
            if kwargs.get("id2label") is None:
                kwargs["id2label"] = default_id2label(num_labels)
            elif len(kwargs["id2label"]) != num_labels:
                raise ConfigError(f"num_labels={num_labels} but id2label has {len(kwargs['id2label'])} labels")
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


class LabelFields:
    """Label, problem-type and preprocessing handling, and config.json writing, shared by the
    configs of falv's models (:class:`FALConfig` and the CNN baseline's), so the trainer and
    the labeler read either. Subclasses provide ``to_dict``.
    The dataclass using it declares ``id2label``, ``label2id``, ``problem_type``,
    ``image_mean``, ``image_std``, ``num_channels``, ``num_frames``, ``thresholds``, ``temperature``,
    ``sampling``, ``background_label`` and ``hierarchical``."""

    id2label: dict[int, str]
    label2id: dict[str, int]
    problem_type: str
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    num_channels: int
    thresholds: list[float] | None
    temperature: float | None
    sampling: ClipSampling | None
    num_frames: int
    background_label: str | None
    hierarchical: bool

    def _normalise_labels(self) -> None:
        """JSON gives string keys and lists: back to ``{int: str}``, ``{str: int}`` and tuples."""
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if not self.label2id:
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        self.sampling = ClipSampling.from_any(self.sampling)
        if self.thresholds is not None:
            self.thresholds = [float(x) for x in self.thresholds]
        if self.temperature is not None and not isinstance(self.temperature, bool):
            self.temperature = float(self.temperature) if isinstance(self.temperature, (int, float)) else self.temperature

    def _validate_labels(self) -> None:
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        if len(self.id2label) < 1:
            raise ConfigError("a model needs at least one label (id2label is empty)")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ConfigError("id2label keys must be 0..num_labels-1")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ConfigError("image_mean and image_std need one value per channel")
        if self.thresholds is not None and len(self.thresholds) != self.num_labels:
            raise ConfigError(f"thresholds has {len(self.thresholds)} values for {self.num_labels} labels")
        if self.thresholds is not None and not all(math.isfinite(t) for t in self.thresholds):
            raise ConfigError(f"thresholds must be finite numbers, got {self.thresholds}")
        if self.temperature is not None and not _positive_number(self.temperature):
            raise ConfigError(f"temperature must be a number > 0, got {self.temperature!r}")
        if self.background_label is not None:
            if self.background_label not in self.id2label.values():
                raise ConfigError(f"background_label {self.background_label!r} is not one of the labels (id2label)")
            if self.problem_type != "single_label_classification":
                raise ConfigError("background_label needs a single-label model: a multi-label model says "
                                  "'no action' by keeping every class under its threshold")
            if self.num_labels < 2:
                raise ConfigError("a model with a background label needs at least one other label")
        if self.hierarchical:
            if self.problem_type != "single_label_classification":
                raise ConfigError("a hierarchical model is single-label (its scores sum over the taxonomy's leaves)")
            self.taxonomy  # noqa: B018 - the labels must be the leaves' paths of a tree

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        """As transformers' configs: a new label count renames the labels ``LABEL_0``..."""
        if value != self.num_labels:
            self.id2label = default_id2label(value)
            self.label2id = {v: k for k, v in self.id2label.items()}
            self.thresholds = None

    @property
    def clip_seconds(self) -> float | None:
        """Seconds one clip of this model spans (:class:`ClipSampling`); None when unknown or a whole video."""
        return None if self.sampling is None else self.sampling.seconds(self.num_frames)

    @property
    def frame_selection(self) -> str:
        """Where this model's training frames went inside a clip: ``"uniform"`` or ``"key-moments"``."""
        return (self.sampling.frame_selection if self.sampling is not None else None) or "uniform"

    @property
    def taxonomy(self):  # -> falv.taxonomy.Taxonomy | None
        """The label tree of a hierarchical model (its labels are the leaves' paths), else None."""
        if not self.hierarchical:
            return None
        from falv.taxonomy import Taxonomy

        return Taxonomy.from_labels(self.labels)

    @property
    def labels(self) -> list[str]:
        """Class names in index order."""
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def action_labels(self) -> list[str]:
        """Class names in index order without the background class: what labeling emits as
        video labels, windows and segments, and what exports list as classes."""
        return [label for label in self.labels if label != self.background_label]

    @property
    def is_multilabel(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def with_labels(self, labels: list[str]):  # -> the same config class
        """A copy with a new label set (e.g. fine-tuning on your own classes)."""
        background = self.background_label if self.background_label in labels else None
        return dataclasses.replace(self, id2label=dict(enumerate(labels)), label2id={}, thresholds=None,
                                   temperature=None, background_label=background, hierarchical=False)

    def _labels_to_dict(self, out: dict[str, Any]) -> dict[str, Any]:
        if out.get("background_label") is None:  # configs of models without one stay as they were
            out.pop("background_label", None)
        if not out.get("hierarchical"):
            out.pop("hierarchical", None)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["image_mean"] = list(self.image_mean)
        out["image_std"] = list(self.image_std)
        # written only when known, so configs without them stay as they were
        for name in ("sampling", "temperature"):
            if getattr(self, name) is None:
                out.pop(name, None)
        if self.sampling is not None:
            out["sampling"] = self.sampling.to_dict()
        from falv import __version__

        out["falv_version"] = __version__
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/config.json`` atomically."""
        from falv.hub.io import atomic_write_text

        path = Path(directory) / CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path


@accepts_num_labels
@dataclass
class FALConfig(LabelFields):
    """Configuration of :class:`falv.FALForVideoClassification`.

    The defaults describe the ``base`` preset (ViT-B, 8 frames of 224x224,
    divided space-time attention), which is also transformers' TimeSformer default.
    """

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_frames: int = 8
    # Frames each patch token sees: 1 is TimeSformer (one frame's patch); 2 also embeds the
    # same patch of the previous frame (the first frame repeats itself), a motion cue that
    # lets small models trained from scratch learn direction (docs/model.md).
    patch_frames: int = 1
    # "frame_diff": each patch token also embeds its patch's change from the previous frame (three
    # more channels, the first frame's change zero), computed inside the model, so labeling,
    # export and the processor see the same pixel_values; measured in docs/results.md.
    motion_input: str = "none"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    # Standard deviation of the time embedding's random init. 0 is TimeSformer's zeros (right when
    # starting from an image model: its function is kept). From scratch, zeros start the model
    # invariant to frame order, and on order-only classes it stayed there (docs/model.md); the
    # tiny preset uses 1.0.
    time_embedding_init_std: float = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    attention_type: str = "divided_space_time"
    # divided_space_time only: "time_space" (TimeSformer, default) or "space_time" (order ablation).
    divided_order: str = "time_space"
    position_embedding: str = "space_time"
    # Head: "linear" (TimeSformer) or "mlp" (the paper's 1-hidden-layer MLP, Sec. 3).
    head_type: str = "linear"
    head_hidden_size: int | None = None
    head_dropout_prob: float = 0.0
    problem_type: str = "single_label_classification"
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    label2id: dict[str, int] = field(default_factory=dict)
    # Preprocessing, saved with the model so inference needs no guessed flags.
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    # Multi-label decision thresholds, per class (None: 0.5 everywhere); falv train tunes them.
    thresholds: list[float] | None = None
    # Temperature scaling (Guo et al., 2017): scores are softmax/sigmoid(logits / temperature);
    # falv train fits it on the validation split. None: 1.
    temperature: float | None = None
    # How the training clips were spaced in time (ClipSampling); None: unknown (falv before 0.x,
    # then a clip is taken to span the whole video).
    sampling: ClipSampling | None = None
    # The label of the "no action" class learnt from the gaps of untrimmed videos (falv train
    # --untrimmed); labeling never emits it as a label or segment (docs/evaluation.md).
    background_label: str | None = None
    # The labels are the leaves of a taxonomy, named by their paths (``sports/ball/soccer``);
    # inner nodes score the sum of their leaves (falv.taxonomy, docs/hierarchy.md).
    hierarchical: bool = False
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        self._normalise_labels()
        self.validate()

    # -- checks -----------------------------------------------------------
    def validate(self) -> None:
        check_choice("attention_type", self.attention_type, ATTENTION_TYPES)
        check_choice("divided_order", self.divided_order, DIVIDED_ORDERS)
        if self.divided_order != DIVIDED_ORDERS[0] and self.attention_type != "divided_space_time":
            raise ConfigError(
                f"divided_order={self.divided_order!r} applies only to attention_type "
                f"'divided_space_time', not {self.attention_type!r}"
            )
        check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        check_choice("head_type", self.head_type, HEAD_TYPES)
        check_choice("motion_input", self.motion_input, MOTION_INPUTS)
        positive = ("image_size", "patch_size", "num_channels", "num_frames", "patch_frames", "hidden_size",
                    "num_hidden_layers", "num_attention_heads", "intermediate_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        std = self.time_embedding_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < math.inf:
            raise ConfigError(f"time_embedding_init_std must be a number >= 0, got {std!r}")
        if isinstance(self.patch_frames, int) and self.patch_frames > self.num_frames:
            raise ConfigError(f"patch_frames ({self.patch_frames}) must not exceed num_frames ({self.num_frames})")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        self._validate_labels()

    # -- derived (labels: LabelFields) ------------------------------------
    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # -- JSON -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. ``divided_order``, ``patch_frames``, ``motion_input`` and
        ``time_embedding_init_std`` are written only when they are not the default, so configs of
        default models stay exactly as they were before the options existed."""
        out = dataclasses.asdict(self)
        for name, default in (("divided_order", DIVIDED_ORDERS[0]), ("patch_frames", 1), ("motion_input", "none"),
                              ("time_embedding_init_std", 0.0)):
            if out[name] == default:
                del out[name]
        out["architectures"] = ["FALForVideoClassification"]
        return self._labels_to_dict(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FALConfig:
        """Build from a dict; keys that are not fields (e.g. ``architectures``) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names or k == "num_labels"}
        if kwargs.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ConfigError(
                f"config has model_type {kwargs['model_type']!r}, expected {MODEL_TYPE!r}; "
                "use falv.hub.load_config to convert TimeSformer configs"
            )
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> FALConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **kwargs: Any) -> FALConfig:
        """Read the config of a falv or transformers TimeSformer directory or hub id."""
        from falv.hub.load import load_config

        return load_config(path_or_id, **kwargs)
