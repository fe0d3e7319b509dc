"""What the models of every family share: the config file, the forward contract, and the falv
directory they save to and load from.

A family model (:mod:`falv.model.videomae`, ``slowfast``, ``x3d``, ``mvit``, ``tsm``, the CNN
baseline) defines its architecture, ``forward_features`` (the pooled features before the head)
and ``forward_head`` (the logits); :class:`FamilyClassifier` gives it ``forward`` (features ->
logits -> loss, returning :class:`~falv.model.transformer.VideoClassifierOutput`),
``compute_loss``, ``save_pretrained`` and ``from_pretrained`` for falv directories
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``, each written atomically;
read strictly). Its config derives from :class:`FamilyConfig`, which reads and writes
``config.json`` (``model_type`` checked). Original checkpoints are each family's own business
(:mod:`falv.hub.families`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from falv.config import IMAGENET_MEAN, IMAGENET_STD, ClipSampling, LabelFields
from falv.errors import CheckpointError
from falv.model.transformer import ModelProperties, VideoClassifierOutput, classification_loss

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class FamilyConfig(LabelFields):
    """``config.json`` of a family model, with the label, score and preprocessing fields every
    family has (they mean what they mean in :class:`falv.FALConfig`; a family redeclares one to
    change its default, e.g. PySlowFast's Kinetics mean and std). The dataclass deriving from it
    declares ``model_type`` (its default is the family's falv model type) and sets
    ``ARCHITECTURE`` (the model class name written as ``architectures``, as transformers' configs do)."""

    ARCHITECTURE: ClassVar[str] = ""

    problem_type: str = "single_label_classification"
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    label2id: dict[str, int] = field(default_factory=dict)
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    thresholds: list[float] | None = None
    temperature: float | None = None
    sampling: ClipSampling | None = None
    background_label: str | None = None
    hierarchical: bool = False

    @classmethod
    def falv_model_type(cls) -> str:
        return cls.__dataclass_fields__["model_type"].default  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        out = json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]  # tuples -> lists
        out["architectures"] = [self.ARCHITECTURE]
        return self._labels_to_dict(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # -> the config class
        """Build from a dict; keys that are not fields (``architectures``, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names or k == "num_labels"})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):  # -> the config class
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read config {path}: {exc}") from exc
        expected = cls.falv_model_type()
        if not isinstance(data, dict) or data.get("model_type") != expected:
            found = data.get("model_type") if isinstance(data, dict) else None
            raise CheckpointError(f"{path} has model_type {found!r}, not {expected!r} "
                                  "(load any model with falv.load_model)")
        return cls.from_dict(data)


class FamilyClassifier(ModelProperties, nn.Module):
    """The shared half of a family model; subclasses set ``config_class``, build ``self.config``
    and their modules, and define ``forward_features`` and ``forward_head``. ``head_prefix``:
    the state-dict prefix of the classification head (replaced by ``labels=``)."""

    config_class: ClassVar[type]
    main_input_name = "pixel_values"
    head_prefix: ClassVar[str] = "head."

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                **_: Any) -> VideoClassifierOutput:
        """``pixel_values`` (B, T, C, H, W) -> logits (B, num_labels) before any softmax, embeddings
        (the pooled features), and the loss (cross-entropy, or BCE for multi-label) when ``labels``
        are given."""
        features = self.forward_features(pixel_values)  # type: ignore[attr-defined]
        logits = self.forward_head(features)  # type: ignore[attr-defined]
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return VideoClassifierOutput(logits=logits, loss=loss, embeddings=features)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits, labels, self.config.is_multilabel)  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors (weights and BatchNorm statistics) and
        preprocessor_config.json, each atomically (temporary file, then rename)."""
        from safetensors.torch import save

        from falv.hub.io import atomic_open
        from falv.processing import FALImageProcessor

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "library": "falv", "model_type": self.config.model_type}  # type: ignore[attr-defined]
        with atomic_open(directory / WEIGHTS_NAME, "wb") as handle:
            handle.write(save(state, metadata=metadata))
        self.config.save_pretrained(directory)  # type: ignore[attr-defined]
        FALImageProcessor.from_config(self.config).save_pretrained(directory)  # type: ignore[arg-type,attr-defined]
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, labels: list[str] | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """Load a falv directory written by :meth:`save_pretrained` (in eval mode), strictly;
        ``labels`` replaces the head with a fresh one for a new label set."""
        model = cls.from_falv_directory(Path(directory), labels)
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        model.name_or_path = str(directory)
        return model

    @classmethod
    def from_falv_directory(cls, directory: Path, labels: list[str] | None = None):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from falv.hub.load import check_state_keys

        if not (directory / CONFIG_NAME).is_file():
            raise CheckpointError(f"{directory} has no {CONFIG_NAME}: not a model directory")
        config = cls.config_class.from_json_file(directory / CONFIG_NAME)  # type: ignore[attr-defined]
        try:
            state = load_file(directory / WEIGHTS_NAME)
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read {directory / WEIGHTS_NAME}: {exc}") from exc
        fresh_head = labels is not None
        if fresh_head:
            config = config.with_labels(list(labels))  # type: ignore[arg-type]
            state = {k: v for k, v in state.items() if not k.startswith(cls.head_prefix)}
        model = cls(config)  # type: ignore[call-arg]
        expected = {k: v for k, v in model.state_dict().items() if not (fresh_head and k.startswith(cls.head_prefix))}
        check_state_keys(state, expected, directory)  # a fresh head is not expected in the file
        model.load_state_dict(state, strict=False)
        return model


# -- loading original checkpoints (the families' shared tail) ---------------------------------------


def strict_keys(state: dict[str, Any], expected: dict[str, torch.Tensor], where: Any, what: str,
                optional: tuple[str, ...] = ("num_batches_tracked",)) -> None:
    """One :class:`CheckpointError` naming every missing, unexpected and mis-shaped key of
    ``state`` against ``expected`` (keys ending in ``optional`` may be missing)."""
    missing = sorted(k for k in expected if k not in state and not k.endswith(optional))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
             for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{where} does not match {what}: missing {missing[:8]}, unexpected {unexpected[:8]}, "
                              f"shape mismatch {wrong[:8]}")


def model_from_original(model_class: type, fields: dict[str, Any], state: dict[str, torch.Tensor], path: Path,
                        what: str, labels: list[str] | None = None, file_name: Any = None) -> Any:
    """Build ``model_class`` from config ``fields`` (including ``num_labels``) and load ``state``
    (an original checkpoint's weights under the names ``file_name(falv name)`` gives, by default
    falv's own) strictly, in eval mode. ``labels``: a fresh head for that label set, the file's
    head left out. A config the fields do not make is a :class:`CheckpointError` naming the file."""
    from falv.errors import ConfigError

    name = file_name or (lambda k: k)
    fields = dict(fields)
    num_labels = fields.pop("num_labels")
    try:
        config = model_class.config_class(**fields, num_labels=num_labels)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    if labels is not None:
        config = config.with_labels(list(labels))
    model = model_class(config)
    prefix = model_class.head_prefix
    fresh_head = labels is not None
    expected = {name(k): v for k, v in model.state_dict().items() if not (fresh_head and k.startswith(prefix))}
    if fresh_head:  # the file's own head goes with its label set
        state = {k: v for k, v in state.items() if not k.startswith(name(prefix))}
    strict_keys(state, expected, path, what)
    to_falv = {name(k): k for k in model.state_dict()}
    model.load_state_dict({to_falv[k]: v for k, v in state.items()}, strict=False)
    return model.eval()


def falv_directory_loader(model_class: type, originals: str) -> Any:
    """The ``Family.load_dir`` of a family whose originals take ``cfg=``: a falv directory's own
    config.json gives the architecture, so ``cfg`` is refused there."""

    def load_dir(path: Path, config: dict[str, Any], labels: list[str] | None = None, cfg: Any = None) -> Any:
        if cfg is not None:
            raise CheckpointError(f"{path} is a falv directory: its config.json gives the architecture (cfg= is for "
                                  f"original {originals} files)")
        return model_class.from_pretrained(path, labels=labels)

    return load_dir


def read_pyslowfast_cfg(cfg: Any, path: Path | None = None, quiet: bool = False) -> dict[str, Any] | None:
    """A PySlowFast run's cfg (the YAML text a ``.pyth`` holds, a path to a YAML file, or a dict) as
    a dict; None for None. Read with a safe YAML loader (plus ``!!python/tuple`` as a list, as yacs
    may dump tuples); ``quiet``: None instead of an error for what is not such a cfg (sniffing)."""
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        return cfg
    if isinstance(cfg, os.PathLike) or (isinstance(cfg, str) and "\n" not in cfg and cfg.strip().endswith(
            (".yaml", ".yml")) and Path(cfg).expanduser().is_file()):
        try:
            cfg = Path(cfg).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot read the PySlowFast config {cfg}: {exc}") from exc
    if not isinstance(cfg, str):
        if quiet:
            return None
        raise CheckpointError(f"{path}: cfg is a {type(cfg).__name__}, not PySlowFast's YAML text")
    import yaml

    class _Loader(yaml.SafeLoader):
        """safe_load, plus ``!!python/tuple`` read as a list (yacs may dump tuples so)."""

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple",
                            lambda loader, node: loader.construct_sequence(node))
    try:
        data = yaml.load(cfg, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        if quiet:
            return None
        raise CheckpointError(f"{path}: cannot read its PySlowFast cfg as YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        if quiet:
            return None
        raise CheckpointError(f"{path}: its cfg is not a PySlowFast config (YAML mapping)")
    return data
