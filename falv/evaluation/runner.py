"""``evaluate(model, data)``: score a model on a labeled dataset (and untrimmed videos).

The path is the labeling engine's, unchanged: every video of the dataset goes
through :func:`falv.labeling.engine.label` with ``clips=K, crops=C`` and
``top_k=<number of classes>`` (thresholds of multi-label models switched off with
``apply_thresholds=False``), so each record holds the score of every class, and
the per-video score vectors are read back from the records. Evaluation adds
only what the engine does not know: the dataset's targets, the metrics
(:mod:`falv.evaluation.metrics`, :mod:`falv.evaluation.localization`) and the
report files. Untrimmed videos are labeled with sliding windows and their
segments (the engine's smoothing and merging) scored against the ground truth.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from falv.errors import ConfigError, FalvError
from falv.evaluation import metrics as M
from falv.evaluation.calibration import calibration_summary, undo_temperature
from falv.evaluation.localization import DEFAULT_TIOU_THRESHOLDS, load_ground_truth, localization_map

__all__ = [
    "EvaluationError",
    "ClassMismatchError",
    "OUTPUT_FILES",
    "parse_counts",
    "plan_views",
    "check_options",
    "map_classes",
    "scores_from_record",
    "default_window",
    "default_stride",
    "DEFAULT_STRIDE_FRACTION",
    "evaluate",
    "write_report",
]

log = logging.getLogger(__name__)

#: The files :func:`evaluate` writes into ``out_dir`` (the PNG needs matplotlib,
#: ``detections.json`` untrimmed videos).
OUTPUT_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv",
                "predictions.jsonl", "detections.json")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class EvaluationError(FalvError):
    """The evaluation cannot run (no labeled video, nothing to evaluate, ...)."""


class ClassMismatchError(EvaluationError):
    """The dataset (or ground truth) names classes the model does not know."""


# -- options --------------------------------------------------------------------------------------


def parse_counts(value: int | str | Iterable[int | str], what: str) -> list[int]:
    """``4``, ``"1,2,4"`` or ``[1, 2, 4]`` -> ``[1, 2, 4]`` (duplicates dropped, order kept)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    else:
        items = list(value)
    out: list[int] = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be whole numbers like 1 or 1,2,4; got {item!r}") from None
        if isinstance(item, float) and item != number:
            raise ConfigError(f"{what} must be whole numbers, got {item!r}")
        if number < 1:
            raise ConfigError(f"{what} must be >= 1, got {number}")
        if number not in out:
            out.append(number)
    if not out:
        raise ConfigError(f"no {what} given")
    return out


def plan_views(clips: int | str | Iterable[int], crops: int | str | Iterable[int]) -> list[tuple[int, int]]:
    """The (clips, crops) pairs to run, in order; the last is the headline view.

    Multi-view testing as in the paper (Figure 6 / Table 8): ``K`` temporal clips
    times ``C`` spatial crops, every combination of the given counts.
    """
    clip_counts = parse_counts(clips, "clips")
    crop_counts = parse_counts(crops, "crops")
    bad = [c for c in crop_counts if c not in (1, 3)]
    if bad:
        raise ConfigError(f"crops must be 1 or 3, got {bad[0]}")
    return [(k, c) for c in crop_counts for k in clip_counts]


def check_options(
    clips: int | str | Iterable[int] = 1,
    crops: int | str | Iterable[int] = 1,
    *,
    window: float | None = None,
    stride: float | None = None,
    smoothing: int = 1,
    min_duration: float = 0.0,
    segment_threshold: float = 0.5,
) -> list[tuple[int, int]]:
    """Validate the options of :func:`evaluate` before anything is loaded; returns the views.

    Raises :class:`falv.errors.ConfigError` with a message naming the option.
    """
    views = plan_views(clips, crops)
    if window is not None and not window > 0:
        raise ConfigError(f"--window must be > 0 seconds, got {window}")
    if stride is not None and not stride > 0:
        raise ConfigError(f"--stride must be > 0 seconds, got {stride}")
    if window is not None and stride is not None and stride > window:
        raise ConfigError(f"--stride ({stride:g} s) must not exceed --window ({window:g} s): windows would leave gaps")
    if smoothing < 1:
        raise ConfigError(f"--smoothing must be >= 1 window, got {smoothing}")
    if min_duration < 0:
        raise ConfigError(f"--min-duration must be >= 0 seconds, got {min_duration}")
    if not 0.0 <= segment_threshold <= 1.0:
        raise ConfigError(f"--threshold must lie in [0, 1], got {segment_threshold}")
    return views


#: Untrimmed videos: the default window stride as a fraction of the window. Windows an eighth of
#: their length apart put a window centre every 0.25 s for 2 s windows, so segment edges
#: (refined between window centres) land within a fraction of a second (docs/evaluation.md).
DEFAULT_STRIDE_FRACTION = 0.125


def default_stride(window: float) -> float:
    """The untrimmed windows' default stride: ``window * DEFAULT_STRIDE_FRACTION`` seconds."""
    return window * DEFAULT_STRIDE_FRACTION


def default_window(num_frames: int, clip_seconds: float | None = None) -> float:
    """Sliding-window length for untrimmed videos: the model's clip duration (its config's
    sampling) when known, else ``num_frames / 4`` seconds
    (:func:`falv.labeling.stages.default_window`). Pass ``window=`` to choose another."""
    from falv.labeling.stages import default_window as _default

    return _default(num_frames, clip_seconds)


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def map_classes(names: Iterable[str], model_labels: Sequence[str], *, what: str = "dataset") -> dict[str, int]:
    """Model class index of each name: the exact name, else the same name up to case,
    spaces, ``_`` and ``-`` when that is unambiguous (``playing_guitar`` -> ``playing guitar``).

    Raises :class:`ClassMismatchError` naming the classes the model does not know.
    """
    exact = {label: i for i, label in enumerate(model_labels)}
    loose: dict[str, list[int]] = {}
    for i, label in enumerate(model_labels):
        loose.setdefault(_normal(label), []).append(i)
        if "/" in label:  # a hierarchical model's leaf path also answers to its last name
            loose.setdefault(_normal(label.rsplit("/", 1)[1]), []).append(i)
    out: dict[str, int] = {}
    unknown: list[str] = []
    for name in dict.fromkeys(names):
        if name in exact:
            out[name] = exact[name]
        elif len(loose.get(_normal(name), [])) == 1:
            out[name] = loose[_normal(name)][0]
        else:
            unknown.append(name)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        known = ", ".join(repr(x) for x in list(model_labels)[:8]) + (", ..." if len(model_labels) > 8 else "")
        raise ClassMismatchError(
            f"the {what} has {len(unknown)} class(es) the model does not know: {shown}. "
            f"The model's {len(model_labels)} classes are {known}; evaluate a model trained on these classes "
            "or rename the classes (id2label in its config.json) to match"
        )
    return out


def scores_from_record(record: Any, index: Mapping[str, int], num_classes: int) -> np.ndarray:
    """The video's ``(num_classes,)`` score vector from a record labeled with ``top_k=num_classes``."""
    scores = np.zeros(num_classes, dtype=np.float64)
    seen = 0
    for item in record.labels:
        scores[index[item.label]] = item.score
        seen += 1
    if seen != num_classes:
        raise EvaluationError(
            f"{record.path}: the record holds {seen} of {num_classes} class scores; "
            "evaluation needs top_k=<number of classes> and apply_thresholds=False"
        )
    return scores


# -- running the engine ---------------------------------------------------------------------------


@dataclass
class _Model:
    """What evaluation needs to know about the model, read once."""

    arg: Any  # what label() gets: a path/id string or the module itself
    name: str
    labels: list[str]
    multilabel: bool
    thresholds: list[float] | None
    num_frames: int
    temperature: float | None = None
    clip_seconds: float | None = None
    frame_selection: str = "uniform"  # how its training frames were placed (config sampling)
    fingerprint: str = ""  # what the model is (config + weights), for resuming only its own records
    # a hierarchical model: its taxonomy, the classes its records hold (the leaves; ``labels`` are
    # those of the level evaluated) and the (leaves, labels) matrix summing the one into the other
    taxonomy: Any = None
    record_labels: list[str] | None = None
    view: np.ndarray | None = None


def model_fingerprint(model: Any) -> str:
    """A short hash that changes when the model changes: of a module's config and weights, or
    of a model folder's files (names, sizes and modification times; any other id as given)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        config = getattr(model, "config", None)
        digest.update(json.dumps(config.to_dict() if config is not None else {}, sort_keys=True,
                                 default=str).encode())
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
    path = Path(str(model))
    digest.update(os.path.abspath(str(model)).encode() if path.exists() else str(model).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{stat.st_size}:"
                      f"{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _describe_model(model: Any, level: int | None = None, max_depth: int | None = None) -> _Model:
    import torch

    if isinstance(model, torch.nn.Module):
        config = model.config
        name = str(getattr(model, "name_or_path", None) or type(model).__name__)
    else:
        from falv.hub.load import load_config

        config = load_config(model)
        name = str(model)
    # a learnt background class is no class of the evaluation: labeling never emits it
    labels = list(getattr(config, "action_labels", config.labels))
    taxonomy = getattr(config, "taxonomy", None)
    hierarchy: dict[str, Any] = {}
    if taxonomy is not None:
        names, view = taxonomy.view(level, max_depth)
        hierarchy = {"taxonomy": taxonomy, "record_labels": labels, "view": None if names == labels else view}
        labels = names
    elif level is not None or max_depth is not None:
        raise ConfigError("--level and --max-depth need a hierarchical model (trained with --taxonomy)")
    return _Model(**hierarchy, arg=model if isinstance(model, torch.nn.Module) else str(model), name=name,
                  labels=labels, multilabel=bool(config.is_multilabel),
                  thresholds=None if config.thresholds is None else list(config.thresholds),
                  num_frames=int(config.num_frames), temperature=getattr(config, "temperature", None),
                  clip_seconds=getattr(config, "clip_seconds", None), fingerprint=model_fingerprint(model),
                  frame_selection=getattr(config, "frame_selection", "uniform"))


def _key(path: str, segment: tuple[float, float] | None = None) -> str:
    from falv.labeling.store import segment_key

    return segment_key(path, segment)


def _segment(entry: Any) -> tuple[float, float] | None:
    """The part of the file a dataset entry names (Kinetics ``time_start``/``time_end``), or None."""
    if entry.start is None and entry.end is None:
        return None
    return (float(entry.start or 0.0), math.inf if entry.end is None else float(entry.end))


#: Where ``evaluate(out_dir=...)`` keeps the engine's records of each view, so that a rerun
#: with the same output folder resumes (``OUT/records/<view>/labels.jsonl``).
RECORDS_DIR = "records"


def _records_dir(out_dir: str | os.PathLike[str] | None, view: str, model: _Model, options: Any,
                 resume: bool) -> Path | None:
    """The folder of a view's ``labels.jsonl`` under ``out_dir`` (None without one). Its
    ``run.json`` names the model and the options; records made by another model or with other
    options are never reused: the folder is then emptied first (as with ``resume=False``)."""
    import dataclasses

    if out_dir is None:
        return None
    from falv.labeling.store import LABELS_NAME

    folder = Path(out_dir) / RECORDS_DIR / view
    stamp = {"model": model.fingerprint, "options": dataclasses.asdict(options)}
    stamp["options"].pop("workers", None)  # how fast, not what: a rerun may use other workers
    stamp_path = folder / "run.json"
    labels = folder / LABELS_NAME
    try:
        previous = json.loads(stamp_path.read_text(encoding="utf-8")) if stamp_path.is_file() else None
    except (OSError, ValueError):
        previous = None
    if labels.exists() and (not resume or previous != json.loads(json.dumps(stamp))):
        if resume:
            log.info("%s: made by another model or with other options; labelling again", labels)
        labels.unlink()
    from falv.hub.io import atomic_write_text

    atomic_write_text(stamp_path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return folder


def _run_engine(entries: Sequence[tuple[str, tuple[float, float] | None]], model: _Model, options: Any,
                progress: Progress | None, stage: str, records_dir: Path | None = None) -> dict[str, Any]:
    """``key -> record`` (:func:`_key` of path and segment) for every ``(path, segment)``
    (inputs the engine gave no record get an error record). With ``records_dir`` the records
    are kept in ``records_dir/labels.jsonl`` and inputs done there by an earlier run are not
    labelled again (:func:`falv.labeling.engine.label`'s resume)."""
    from falv.labeling.engine import LabelJob, label
    from falv.labeling.records import read_records, record_error
    from falv.labeling.store import LABELS_NAME

    jobs = list({_key(p, seg): LabelJob(os.path.abspath(p), segment=seg) for p, seg in entries}.values())
    records: dict[str, Any] = {}
    if records_dir is not None and (records_dir / LABELS_NAME).exists():
        for record in read_records(records_dir / LABELS_NAME):  # resumed: what an earlier run labelled
            records[_key(record.path, _record_segment(record))] = record
    wanted = {job.key for job in jobs}
    if progress:
        progress(stage, len(wanted & set(records)), len(jobs))
    for record in label(jobs, model.arg, options=options, out_dir=records_dir, resume=records_dir is not None):
        records[_key(record.path, _record_segment(record))] = record
        if progress:
            progress(stage, len(wanted & set(records)), len(jobs))
    for job in jobs:  # e.g. a missing file whose name looks like a glob pattern
        if job.key not in records:
            kind = "not_found" if not os.path.exists(job.path) else "skipped"
            records[job.key] = record_error(job.path, kind,
                                            f"{job.path}: the labeling engine gave no record for this input",
                                            model=model.name)
    return records


def _record_segment(record: Any) -> tuple[float, float] | None:
    segment = record.extra.get("segment")
    if not isinstance(segment, list) or len(segment) != 2:
        return None
    return (float(segment[0]), math.inf if segment[1] is None else float(segment[1]))


def _failure(record: Any) -> dict[str, str]:
    return {"path": record.path, "type": record.error.type, "error": record.error.message}


# -- the trimmed (classification) part --------------------------------------------------------------


@dataclass
class _Dataset:
    entries: list[Any]             # VideoEntry rows with at least one label
    targets: np.ndarray            # (N,) model class indices or (N, K) multi-hot
    multilabel: bool
    class_indices: list[int]       # the source classes, as model indices
    name: str
    split: str | None
    nodes: list[str] | None = None  # a hierarchical model's: each entry's labelled node (a path)


def _default_split(data: Any) -> str | None:
    """The split to evaluate when none is given: test where a layout has splits."""
    path = Path(data)
    if not path.is_dir():
        return None
    if (path / "classInd.txt").is_file() or (path / "ucfTrainTestlist" / "classInd.txt").is_file():
        return "test"
    if (path / "labels.json").is_file() and (path / "validation.json").is_file():
        return "validation"
    if any((path / f"test{ext}").is_file() for ext in (".csv", ".tsv", ".txt")):
        return "test"
    return None


def _load_dataset(data: Any, split: str | None, model: _Model) -> _Dataset:
    from falv.data.sources import DatasetSource, load_source

    if split is None and not isinstance(data, DatasetSource):
        split = _default_split(data)
        if split is not None:
            log.info("evaluating the %r split of %s", split, data)
    source = load_source(data, split=split)
    labelled = [e for e in source.entries if e.labels]
    if len(labelled) < len(source.entries):
        log.warning("%s: %d of %d videos have no label and are not evaluated",
                    source.name or data, len(source.entries) - len(labelled), len(source.entries))
    if not labelled:
        raise EvaluationError(f"{source.name or data}: no labeled video to evaluate"
                              + (f" in split {split!r}" if split else ""))
    nodes = None
    if model.taxonomy is not None:
        labelled, nodes, source = _at_level(labelled, source, model)
    used = list(dict.fromkeys(lab for e in labelled for lab in e.labels))
    mapping = map_classes(used, model.labels)
    unused = [c for c in source.classes if c not in mapping]
    if unused:
        try:
            mapping.update(map_classes(unused, model.labels))
        except ClassMismatchError:
            known = {c: i for c, i in ((c, _try_map(c, model.labels)) for c in unused) if i is not None}
            mapping.update(known)
            log.warning("%d class(es) of the class list have no video here and are unknown to the model: %s",
                        len(unused) - len(known), ", ".join(c for c in unused if c not in known)[:200])
    k = len(model.labels)
    if source.multilabel:
        targets = np.zeros((len(labelled), k), dtype=np.int64)
        for row, entry in enumerate(labelled):
            targets[row, [mapping[lab] for lab in entry.labels]] = 1
    else:
        targets = np.array([mapping[e.labels[0]] for e in labelled], dtype=np.int64)
    class_indices = sorted({mapping[c] for c in source.classes if c in mapping})
    return _Dataset(labelled, targets, bool(source.multilabel), class_indices,
                    str(source.name or data), split, nodes)


def _at_level(entries: list[Any], source: Any, model: _Model) -> tuple[list[Any], list[str], Any]:
    """A hierarchical model's evaluation data: each entry's label resolved to its node in the
    taxonomy and relabelled with its class at the evaluated level (``model.labels``: the leaves, a
    level or a depth cut); entries labelled above that level cannot be judged there and are left out."""
    import dataclasses

    taxonomy, classes = model.taxonomy, set(model.labels)
    if source.multilabel:
        raise EvaluationError("a hierarchical model is single-label: evaluate it on single-label data")
    kept, nodes = [], []
    for entry in entries:
        try:
            node = taxonomy.resolve(entry.labels[0])
        except ConfigError as exc:
            raise ClassMismatchError(f"{source.name}: {exc}") from None
        # its class at the level: its deepest ancestor (or itself) among them; none when labelled above it
        target = next((a for a in reversed(taxonomy.ancestors(node)) if a in classes), None)
        if target is None:
            continue
        kept.append(dataclasses.replace(entry, labels=(target,)))
        nodes.append(node)
    if len(kept) < len(entries):
        log.warning("%d of %d videos are labelled above the level evaluated and are left out of its metrics",
                    len(entries) - len(kept), len(entries))
    if not kept:
        raise EvaluationError("no video is labelled as deep as the level evaluated")
    return kept, nodes, dataclasses.replace(source, entries=kept, classes=list(model.labels),
                                            problems=list(source.problems))


def _try_map(name: str, labels: Sequence[str]) -> int | None:
    try:
        return map_classes([name], labels)[name]
    except ClassMismatchError:
        return None


def _evaluate_view(dataset: _Dataset, model: _Model, options: Any, progress: Progress | None,
                   clips: int, crops: int, records_dir: Path | None = None) -> dict[str, Any]:
    """Label the dataset with one (clips, crops) view and compute its metrics. Entries that
    name a part of their file (Kinetics ``time_start``/``time_end``) are labelled in that part."""
    what = f"{clips} clip(s) x {crops} crop(s)" + (f", {options.perturb.spec}" if options.perturb else "")
    records = _run_engine([(e.path, _segment(e)) for e in dataset.entries], model, options, progress, what,
                          records_dir)
    names = model.record_labels or model.labels  # the classes the records hold
    index = {label: i for i, label in enumerate(names)}
    k = len(names)
    rows, failed, ok_records = [], [], []
    for row, entry in enumerate(dataset.entries):
        record = records[_key(entry.path, _segment(entry))]
        if record.error is not None:
            failed.append(_failure(record))
        else:
            rows.append(row)
            ok_records.append(record)
    scores = np.stack([scores_from_record(r, index, k) for r in ok_records]) if rows else np.zeros((0, k))
    temperature = options.temperature if options.temperature is not None else model.temperature
    raw = (np.stack([raw_scores_from_record(r, index, k, temperature, model.multilabel) for r in ok_records])
           if rows and temperature not in (None, 1.0) else scores)
    leaf_scores = scores
    if model.view is not None:  # a hierarchical model's level: the leaves' scores summed into its nodes
        scores, raw, k = scores @ model.view, raw @ model.view, len(model.labels)
    targets = dataset.targets[rows]
    if dataset.multilabel:
        predictions = (M.predict_multi(scores, model.thresholds) if model.multilabel
                       else np.eye(k, dtype=np.int64)[M.predict_single(scores)])
    else:
        predictions = M.predict_single(scores)
    return {"clips": clips, "crops": crops, "scores": scores, "targets": targets, "predictions": predictions,
            "leaf_scores": leaf_scores, "rows": rows, "records": ok_records, "failed": failed, "raw_scores": raw, "temperature": temperature}


_METRIC_KEYS = ("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "mean_class_accuracy")


def _view_metrics(view: dict[str, Any], multilabel: bool, model_multilabel: bool) -> dict[str, Any]:
    if len(view["rows"]) == 0:
        out: dict[str, Any] = dict.fromkeys(_METRIC_KEYS)
        out["num_videos"] = 0
        if multilabel:
            out["map"] = None
        out["calibration"] = None
        return out
    out = M.classification_metrics(view["scores"], view["targets"], predictions=view["predictions"])
    if multilabel == model_multilabel:  # ECE of the scores as the model means them
        out["calibration"] = calibration_summary(view["scores"], view["targets"], view["temperature"],
                                                 multilabel=multilabel, raw_scores=view["raw_scores"])
    else:
        out["calibration"] = None
    return out


def raw_scores_from_record(record: Any, index: Mapping[str, int], num_classes: int, temperature: float,
                           multilabel: bool) -> np.ndarray:
    """The video's ``(num_classes,)`` scores without the model's temperature: each window's
    scores (a record labeled with ``top_k=num_classes`` holds them all) with the temperature
    undone (:func:`falv.evaluation.calibration.undo_temperature`), averaged over windows as
    the engine averages them. Exact with one crop; with 3 crops the engine averaged the
    crops' calibrated scores first, so this is the raw score of that average."""
    rows = []
    for window in record.windows:
        row = np.zeros(num_classes, dtype=np.float64)
        for item in window.labels:
            row[index[item.label]] = item.score
        rows.append(row)
    if not rows or any(len(w.labels) != num_classes for w in record.windows):
        raise EvaluationError(f"{record.path}: the record's windows do not hold every class score")
    return undo_temperature(np.stack(rows), temperature, multilabel=multilabel).mean(axis=0)


# -- robustness: the same videos, perturbed ----------------------------------------------------------


def _perturbations(perturb: Any, seed: int) -> list[Any]:
    from falv.video.perturb import Perturbation, parse_perturbations

    if perturb is None:
        return []
    if isinstance(perturb, Perturbation):
        return [perturb]
    items = [perturb] if isinstance(perturb, str) else list(perturb)
    if items and all(isinstance(p, Perturbation) for p in items):
        return items
    if any(isinstance(p, Perturbation) for p in items):
        raise ConfigError("perturb: give names (str) or Perturbation objects, not both")
    return parse_perturbations(items, seed) if items else []


def robustness_summary(clean: Mapping[str, Any], perturbed: Sequence[tuple[Any, Mapping[str, Any]]],
                       metric: str, seed: int, clips: int, crops: int) -> dict[str, Any]:
    """The ``robustness`` block of the metrics: for each ``(perturbation, its view metrics)``
    the metrics, ``drop`` (clean - perturbed, in the metric's units) and ``kept`` (perturbed /
    clean; None when the clean value is 0 or missing); ``mean_kept`` over perturbations."""
    base = clean.get(metric)
    rows = []
    for p, numbers in perturbed:
        value = numbers.get(metric)
        rows.append({
            "name": p.name, "strength": p.strength, "spec": p.spec, "description": p.kind.help,
            **{k: numbers.get(k) for k in (*_METRIC_KEYS, "map") if k in numbers},
            "drop": None if value is None or base is None else base - value,
            "kept": None if value is None or not base else value / base,
            "num_videos": numbers.get("num_videos", 0),
        })
    kept = [r["kept"] for r in rows if r["kept"] is not None]
    return {"metric": metric, "seed": seed, "clips": clips, "crops": crops,
            "clean": {metric: base, "num_videos": clean.get("num_videos", 0)},
            "perturbations": rows, "mean_kept": sum(kept) / len(kept) if kept else None}


def _robustness(dataset: _Dataset, model: _Model, options: Any, view: tuple[int, int], clean: Mapping[str, Any],
                perturbations: Sequence[Any], progress: Progress | None, out_dir: Any, resume: bool) -> dict[str, Any]:
    """Evaluate the headline view again under each perturbation (records kept per perturbation)."""
    import dataclasses

    clips, crops = view
    perturbed = []
    for p in perturbations:
        popts = dataclasses.replace(options, perturb=p)
        records_dir = _records_dir(out_dir, f"clips{clips}-crops{crops}-{p.name}-{p.strength:g}", model, popts,
                                   resume)
        result = _evaluate_view(dataset, model, popts, progress, clips, crops, records_dir)
        numbers = _view_metrics(result, dataset.multilabel, model.multilabel)
        numbers["num_failed"] = len(result["failed"])
        perturbed.append((p, numbers))
        log.info("%s: %s", p.spec, {k: numbers.get(k) for k in ("top1", "map") if k in numbers})
    metric = "map" if dataset.multilabel else "top1"
    summary = robustness_summary(clean, perturbed, metric, perturbations[0].seed, clips, crops)
    for row, (_, numbers) in zip(summary["perturbations"], perturbed):
        row["num_failed"] = numbers["num_failed"]
    return summary


# -- the untrimmed (localisation) part --------------------------------------------------------------


def _evaluate_untrimmed(untrimmed: Any, subset: str | None, model: _Model, options: Any,
                        progress: Progress | None, records_dir: Path | None = None,
                        ) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any]]:
    """Localisation metrics, failures and the ActivityNet-format detections of the untrimmed videos."""
    videos = load_ground_truth(untrimmed, subset=subset)
    mapping = map_classes([label for v in videos for label, *_ in v.segments], model.labels,
                          what="ground truth")
    failed: list[dict[str, str]] = []
    for v in videos:
        if v.path is None:
            failed.append({"path": v.video_id, "type": "not_found",
                           "error": f"video {v.video_id!r} of the ground truth: no file found"})
    present = [v for v in videos if v.path is not None]
    records = (_run_engine([(v.path, None) for v in present], model, options, progress, "untrimmed", records_dir)
               if present else {})
    ground_truth: dict[str, list[tuple[str, float, float]]] = {}
    predictions: dict[str, list[Any]] = {}
    for v in present:
        record = records[_key(v.path)]
        if record.error is not None:
            failed.append(_failure(record))
            continue  # like a failed trimmed video: left out of the metrics, listed in `failed`
        ground_truth[v.video_id] = [(model.labels[mapping[label]], s, e) for label, s, e in v.segments]
        predictions[v.video_id] = list(record.segments)
    result = localization_map(ground_truth, predictions, DEFAULT_TIOU_THRESHOLDS)
    result.update(num_videos=len(ground_truth), num_failed=len(failed), subset=subset, window=options.window,
                  stride=options.stride, smoothing=options.smoothing, min_duration=options.min_duration,
                  refine_edges=options.refine_edges,
                  threshold=options.background_threshold)
    detections = {
        "version": "falv-evaluate",
        "results": {vid: [{"label": s.label, "score": s.score, "segment": [s.start, s.end]} for s in segs]
                    for vid, segs in predictions.items()},
        "external_data": {"used": False, "details": f"falv evaluate, model {model.name}"},
    }
    return result, failed, detections


# -- the public function --------------------------------------------------------------------------


def evaluate(
    model: Any,
    data: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    clips: int | str | Iterable[int] = 1,
    crops: int | str | Iterable[int] = 1,
    split: str | None = None,
    untrimmed: str | os.PathLike[str] | None = None,
    untrimmed_subset: str | None = None,
    window: float | None = None,
    stride: float | None = None,
    smoothing: int = 1,
    min_duration: float = 0.0,
    segment_threshold: float = 0.5,
    refine_edges: bool = True,
    workers: int = 2,
    batch_size: int = 4,
    timeout: float = 120.0,
    precision: str = "auto",
    device: str = "auto",
    progress: Progress | None = None,
    runtime: str = "torch",
    clip_seconds: float | None = None,
    temperature: float | None = None,
    resume: bool = True,
    perturb: str | Iterable[str] | Iterable[Any] | None = None,
    perturb_seed: int = 0,
    frame_selection: str | None = None,
    level: int | None = None,
    max_depth: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on the labeled videos of ``data`` and/or untrimmed videos; returns the metrics dict.

    ``model``: a falv directory, a transformers TimeSformer directory or hub id, a
    ``.pyth`` file, or a loaded :class:`falv.FALForVideoClassification`.
    ``data``: any dataset source :func:`falv.data.sources.load_source` reads
    (class folders, a CSV list, a ``falv synth`` folder with ``split``, Kinetics,
    UCF101, SSv2); ``split`` defaults to ``test`` (``validation`` for SSv2) where
    the layout has splits. The source's classes are matched to the model's by name.
    ``clips``/``crops``: one count or several (``"1,2,4"``): every combination is
    a view setting, run in turn; the last is the headline (top-level keys and
    files), each is listed under ``views`` when there are several.
    ``untrimmed``: an ActivityNet-style ``ground_truth.json`` (or its folder); its
    videos are labeled in sliding windows of ``window`` seconds (default
    :func:`default_window`) with ``stride`` (default :func:`default_stride`, an
    eighth of the window), segmented with ``smoothing``, ``min_duration``,
    ``segment_threshold`` and ``refine_edges``, and scored by
    mAP at tIoU 0.3/0.5/0.7 (``localization``). ``workers``, ``batch_size``,
    ``timeout``, ``precision``, ``runtime`` and ``device`` go to the engine.
    Windows have the model's clip duration (its config's sampling; ``clip_seconds``
    overrides it): ``clips=K`` is K such windows spread over each video, a video no
    longer than one window is one window. Scores are calibrated with the model's
    temperature (``temperature`` overrides it; 1: raw); ``calibration`` reports the
    expected calibration error with and without it
    (:func:`falv.evaluation.calibration.expected_calibration_error`, 15 bins).
    With ``out_dir``, writes ``metrics.json``, ``confusion_matrix.csv`` / ``.png``,
    ``per_class.csv``, ``predictions.jsonl`` (and ``detections.json``); see
    ``docs/evaluation.md``. Videos that cannot be decoded are listed in
    ``failed`` and left out of the metrics. Entries that name a part of their file
    (Kinetics ``time_start``/``time_end``) are labelled in that part only.
    With ``out_dir`` the engine's records of each view are kept in
    ``OUT/records/<view>/labels.jsonl``, so a rerun with the same folder, model and
    options (``resume=True``) labels only the inputs an interrupted run had not done
    and gives the same metrics; another model or other options start afresh.
    ``perturb``: perturbations of the test clips (``"blur,noise=0.2"``, a list of such
    names, or :class:`falv.video.perturb.Perturbation` objects; ``"all"``: every one at its
    default strength), drawn with ``perturb_seed``: the labeled videos are evaluated again,
    perturbed, once per perturbation, with the headline view, and ``robustness`` reports
    the metric per perturbation, its drop from the clean value and the share of it kept
    (:func:`robustness_summary`; ``robustness.png`` beside the metrics).
    ``frame_selection``: ``"uniform"`` or ``"key-moments"`` (:class:`falv.labeling.stages.LabelOptions`;
    None: as the model was trained).
    A hierarchical model (trained with a taxonomy) is judged at its leaves, or at ``level`` (the
    nodes that deep) or ``max_depth`` (every leaf's path cut to that depth); videos labelled above
    that level are left out of the headline metrics. ``hierarchy`` adds top-1 and macro F1 per
    level and the hierarchical precision, recall and F1 (:func:`falv.evaluation.metrics.hierarchical_metrics`).
    """
    from falv import __version__
    from falv.labeling.stages import LabelOptions

    if data is None and untrimmed is None:
        raise ConfigError("nothing to evaluate: give a dataset (data) and/or untrimmed ground truth")
    views = check_options(clips, crops, window=window, stride=stride, smoothing=smoothing,
                          min_duration=min_duration, segment_threshold=segment_threshold)
    perturbations = _perturbations(perturb, perturb_seed)
    if perturbations and data is None:
        raise ConfigError("perturbations apply to labeled videos: give a dataset (data) with perturb")
    started = time.monotonic()
    info = _describe_model(model, level, max_depth)
    k = len(info.labels)
    engine = dict(top_k=len(info.record_labels or info.labels), apply_thresholds=False, workers=workers, batch_size=batch_size, timeout=timeout,
                  precision=precision, device=device, runtime=runtime, clip_seconds=clip_seconds,
                  temperature=temperature, frame_selection=frame_selection)
    loc_options = None
    if untrimmed is not None:
        win = float(window) if window is not None else default_window(
            info.num_frames, clip_seconds if clip_seconds is not None else info.clip_seconds)
        # segments come from every window's full scores; the records need no long label lists
        loc_options = LabelOptions(window=win, stride=float(stride) if stride is not None else default_stride(win),
                                   smoothing=smoothing, min_duration=min_duration, refine_edges=refine_edges,
                                   background_threshold=segment_threshold, **dict(engine, top_k=min(k, 5)))
    view_options = [LabelOptions(clips=c, crops=n, **engine) for c, n in views]  # validated before any work

    from falv.export.runtime import check_runtime
    from falv.inference import choose_device

    dev = choose_device(device)
    result: dict[str, Any] = {
        "model": info.name, "device": dev.type, "precision": check_runtime(runtime, precision, device),
        "runtime": runtime,
        "data": None if data is None else _describe_data(data),
        "clip_seconds": clip_seconds if clip_seconds is not None else info.clip_seconds,
        "frame_selection": frame_selection or info.frame_selection,
        "source": None, "split": split, "multilabel": None, "clips": views[-1][0], "crops": views[-1][1],
        "views_per_video": views[-1][0] * views[-1][1],
        **dict.fromkeys(_METRIC_KEYS), "num_videos": 0, "num_failed": 0, "failed": [],
        "classes": [], "num_model_classes": k,
    }
    report: dict[str, Any] = {}
    if data is not None:
        dataset = _load_dataset(data, split, info)
        result["split"], result["source"] = dataset.split, dataset.name
        result["multilabel"] = dataset.multilabel
        summaries = []
        last: dict[str, Any] = {}
        numbers: dict[str, Any] = {}
        for (c, n), options in zip(views, view_options):
            records_dir = _records_dir(out_dir, f"clips{c}-crops{n}", info, options, resume)
            last = _evaluate_view(dataset, info, options, progress, c, n, records_dir)
            numbers = _view_metrics(last, dataset.multilabel, info.multilabel)
            summaries.append({"clips": c, "crops": n, "views_per_video": c * n,
                              **{key: numbers.get(key) for key in (*_METRIC_KEYS, "map", "calibration")
                                 if key in numbers},
                              "num_videos": numbers["num_videos"], "num_failed": len(last["failed"])})
        result.update(numbers)
        if info.taxonomy is not None and dataset.nodes is not None:
            result["hierarchy"] = M.hierarchical_metrics(
                last["leaf_scores"], [dataset.nodes[r] for r in last["rows"]], info.taxonomy)
        report_labels = sorted(set(dataset.class_indices) | _predicted(last["predictions"], dataset.multilabel))
        result["classes"] = [info.labels[i] for i in report_labels]
        result["failed"] = list(last["failed"])
        if dataset.multilabel:
            result["per_class_ap"] = {info.labels[i]: ap for i, ap in enumerate(numbers.get("per_class_ap") or [])
                                      if i in set(report_labels)}
        per_class = M.classification_report(last["targets"], last["predictions"], report_labels, info.labels)
        if dataset.multilabel:
            for row in per_class:
                row["ap"] = result["per_class_ap"].get(row["class"])
        result["per_class"] = {row["class"]: {k2: v for k2, v in row.items() if k2 != "class"} for row in per_class}
        if len(views) > 1:
            result["views"] = summaries
        if perturbations:
            result["robustness"] = _robustness(dataset, info, view_options[-1], views[-1], numbers, perturbations,
                                               progress, out_dir, resume)
        report = {"view": last, "labels": report_labels, "per_class": per_class, "dataset": dataset}
    detections = None
    if untrimmed is not None:
        records_dir = _records_dir(out_dir, "untrimmed", info, loc_options, resume)
        loc, failed, detections = _evaluate_untrimmed(untrimmed, untrimmed_subset, info, loc_options, progress,
                                                      records_dir)
        loc["ground_truth"] = str(untrimmed)
        result["localization"] = loc
        result["failed"].extend(dict(f, set="untrimmed") for f in failed)
    result["num_failed"] = len(result["failed"])
    result["seconds"] = round(time.monotonic() - started, 3)
    result["falv_version"] = __version__
    if out_dir is not None:
        result["files"] = write_report(out_dir, result, report, info.labels, detections)
    return result


def _describe_data(data: Any) -> str:
    from falv.data.sources import DatasetSource

    return str(data.name or data.kind) if isinstance(data, DatasetSource) else str(data)


def _predicted(predictions: np.ndarray, multilabel: bool) -> set[int]:
    if multilabel:
        return set(np.nonzero(np.asarray(predictions).any(axis=0))[0].tolist()) if len(predictions) else set()
    return set(np.asarray(predictions).tolist())


# -- report files ---------------------------------------------------------------------------------


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_report(out_dir: str | os.PathLike[str], result: dict[str, Any], report: Mapping[str, Any],
                 labels: Sequence[str], detections: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write the report files of an :func:`evaluate` result; returns ``{file kind: path}``."""
    from falv.hub.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if report:
        view, report_labels = report["view"], list(report["labels"])
        names = [labels[i] for i in report_labels]
        multilabel = report["dataset"].multilabel
        if multilabel:  # one-vs-rest counts per class
            counts = M.multilabel_confusion_matrix(view["targets"], view["predictions"]) if len(view["rows"]) else \
                np.zeros((len(labels), 2, 2), dtype=np.int64)
            rows = [["class", "tp", "fp", "fn", "tn"]]
            rows += [[labels[i], *(int(x) for x in (counts[i, 1, 1], counts[i, 0, 1], counts[i, 1, 0],
                                                     counts[i, 0, 0]))] for i in report_labels]
            matrix = None
        else:
            matrix = M.confusion_matrix(view["targets"], view["predictions"], report_labels)
            rows = [["true \\ predicted", *names]] + [[name, *map(int, row)] for name, row in zip(names, matrix)]
        atomic_write_text(out / "confusion_matrix.csv", _csv_text(rows))
        files["confusion_matrix"] = str(out / "confusion_matrix.csv")
        if matrix is not None:
            png = _plot_confusion(matrix, names, out / "confusion_matrix.png", result)
            if png is not None:
                files["confusion_matrix_png"] = png
        columns = ["class", "precision", "recall", "f1", "support", "predicted"] + (["ap"] if multilabel else [])
        atomic_write_text(out / "per_class.csv", _csv_text(
            [columns] + [[row.get(c) if row.get(c) is not None else "" for c in columns]
                         for row in report["per_class"]]))
        files["per_class"] = str(out / "per_class.csv")
        atomic_write_text(out / "predictions.jsonl", "".join(
            json.dumps(line, ensure_ascii=False) + "\n" for line in _prediction_lines(view, report["dataset"], labels)))
        files["predictions"] = str(out / "predictions.jsonl")
    if result.get("robustness"):
        png = _plot_robustness(result["robustness"], out / "robustness.png", result)
        if png is not None:
            files["robustness_png"] = png
    if detections is not None:
        atomic_write_text(out / "detections.json", json.dumps(_json_safe(detections), indent=1) + "\n")
        files["detections"] = str(out / "detections.json")
    files["metrics"] = str(out / "metrics.json")
    payload = dict(result, files=files)
    atomic_write_text(out / "metrics.json", json.dumps(_json_safe(payload), indent=1, ensure_ascii=False) + "\n")
    return files


def _prediction_lines(view: Mapping[str, Any], dataset: _Dataset, labels: Sequence[str],
                      top: int = 5) -> Iterable[dict[str, Any]]:
    by_row = dict(zip(view["rows"], range(len(view["rows"]))))
    failed = {_key(f["path"]): f for f in view["failed"]}
    for row, entry in enumerate(dataset.entries):
        if dataset.multilabel:
            target: dict[str, Any] = {"targets": [labels[i] for i in np.nonzero(dataset.targets[row])[0]]}
        else:
            target = {"target": labels[int(dataset.targets[row])]}
        if row not in by_row:
            f = failed.get(_key(entry.path), {})
            yield {"path": entry.path, **target, "error": {"type": f.get("type"), "message": f.get("error")}}
            continue
        i = by_row[row]
        scores = view["scores"][i]
        order = np.argsort(-scores, kind="stable")[:top]
        line = {"path": entry.path, **target, "labels": [{"label": labels[j], "score": float(scores[j])} for j in order]}
        if dataset.multilabel:
            line["predicted"] = [labels[j] for j in np.nonzero(view["predictions"][i])[0]]
            line["correct"] = bool(dataset.targets[row][order[0]])
        else:
            line["correct"] = int(order[0]) == int(dataset.targets[row])
        yield line


def _plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path, result: Mapping[str, Any]) -> str | None:
    """Draw the confusion matrix (row-normalised colours, counts written in small matrices)."""
    try:  # the object API renders with Agg and leaves pyplot's global backend alone
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: confusion_matrix.png not written (pip install 'falv[plots]')")
        return None
    from falv.hub.io import atomic_write_bytes

    n = len(names)
    side = min(4 + 0.35 * n, 40)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 60:
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top1 = result.get("top1")
    ax.set_title(f"{Path(str(result.get('model'))).name}: top-1 {top1:.3f}" if top1 is not None else "")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def _plot_robustness(robustness: Mapping[str, Any], path: Path, result: Mapping[str, Any]) -> str | None:
    """Bars of the metric under each perturbation, the clean value as a line."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: robustness.png not written (pip install 'falv[plots]')")
        return None
    from falv.hub.io import atomic_write_bytes

    metric = robustness["metric"]
    rows = robustness["perturbations"]
    names = [r["spec"] for r in rows]
    values = [r.get(metric) if r.get(metric) is not None else 0.0 for r in rows]
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(rows)))
    ax = fig.subplots()
    ax.barh(range(len(rows)), values, color="#4c72b0")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    clean = robustness["clean"].get(metric)
    if clean is not None:
        ax.axvline(clean, color="#c44e52", linestyle="--", label=f"clean {clean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    for i, r in enumerate(rows):
        if r.get("kept") is not None:
            ax.text(values[i], i, f" {100 * r['kept']:.0f}% kept", va="center", fontsize=7)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("top-1" if metric == "top1" else "mAP")
    ax.set_title(f"{Path(str(result.get('model'))).name}: robustness (seed {robustness['seed']})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)
