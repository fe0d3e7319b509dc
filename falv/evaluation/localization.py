"""Temporal action localisation: mAP at temporal IoU thresholds (the ActivityNet detection protocol).

Ground truth and predictions are per-video lists of labeled segments. For each
class, following ActivityNet's ``Evaluation/eval_detection.py``
(``compute_average_precision_detection``):

1. the class's predicted segments of all videos are sorted by score, highest
   first (equal scores keep their input order);
2. each prediction, in that order, is matched to the ground-truth segment of the
   same class and video with the highest temporal IoU that is still unmatched and
   has ``tIoU >= threshold`` (a ground-truth segment matches at most once, so a
   duplicate detection of an action already found is a false positive); a
   prediction with no such segment is a false positive;
3. precision and recall after each prediction give the class's AP as the
   VOC-2011 interpolated area (ActivityNet's ``interpolated_prec_rec``: precision
   made monotonically non-increasing from the right, summed over recall steps);
4. mAP at a threshold is the mean AP over the classes with ground truth (a class
   with ground truth and no prediction has AP 0; predictions of classes without
   ground truth are not scored); the reported ``mAP`` is the mean over thresholds.

Temporal IoU is :func:`falv.labeling.segments.iou_matrix` (ActivityNet's
``segment_iou``). Everything here is pure; :func:`load_ground_truth` reads an
ActivityNet-style ``ground_truth.json`` (what ``falv synth --untrimmed`` writes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falv.errors import FalvError
from falv.labeling.segments import iou_matrix

__all__ = [
    "DEFAULT_TIOU_THRESHOLDS",
    "GroundTruthError",
    "GroundTruthVideo",
    "interpolated_average_precision",
    "average_precision_detection",
    "localization_map",
    "load_ground_truth",
]

#: The thresholds falv reports (THUMOS/ActivityNet practice); their mean is ``mAP``.
DEFAULT_TIOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)

Span = tuple[float, float]


class GroundTruthError(FalvError):
    """A ground-truth file cannot be read or is not in the ActivityNet layout."""


@dataclass
class GroundTruthVideo:
    """One untrimmed video of a ground-truth file: its id, file (if found) and labeled segments."""

    video_id: str
    segments: list[tuple[str, float, float]]  # (label, start, end) in seconds
    subset: str | None = None
    duration: float | None = None
    path: str | None = None  # the video file, resolved; None when it cannot be found
    extra: dict[str, Any] = field(default_factory=dict)


def interpolated_average_precision(precision: Any, recall: Any) -> float:
    """VOC-2011 interpolated AP, as ActivityNet's ``interpolated_prec_rec``.

    ``precision``/``recall`` are the values after each ranked prediction. The curve
    is padded with (recall 0, precision 0) and (recall 1, precision 0), precision
    is replaced by its maximum to the right, and ``sum (R_i - R_{i-1}) P_i`` is
    taken over the points where recall changes.
    """
    mprec = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision_detection(
    ground_truth: Sequence[tuple[str, float, float]],
    predictions: Sequence[tuple[str, float, float, float]],
    thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
) -> np.ndarray:
    """AP of one class at each tIoU threshold (see the module docstring).

    ``ground_truth``: ``(video_id, start, end)``; ``predictions``: ``(video_id,
    start, end, score)``. Returns a ``(len(thresholds),)`` array; ``nan`` when
    there is no ground truth (AP undefined).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    npos = len(ground_truth)
    if npos == 0:
        return np.full(len(thresholds), np.nan)
    if not predictions:
        return np.zeros(len(thresholds))
    by_video: dict[str, list[int]] = {}
    for j, (video, _, _) in enumerate(ground_truth):
        by_video.setdefault(video, []).append(j)
    gt_spans = np.array([(s, e) for _, s, e in ground_truth], dtype=np.float64).reshape(-1, 2)
    order = sorted(range(len(predictions)), key=lambda i: -float(predictions[i][3]))  # stable
    matched = np.zeros((len(thresholds), npos), dtype=bool)
    tp = np.zeros((len(thresholds), len(order)))
    for rank, i in enumerate(order):
        video, start, end, _ = predictions[i]
        candidates = by_video.get(video, [])
        if not candidates:
            continue  # a false positive at every threshold
        ious = iou_matrix([(start, end)], gt_spans[candidates])[0]
        by_iou = np.argsort(-ious, kind="stable")  # best overlap first
        for t, threshold in enumerate(thresholds):
            for c in by_iou:
                if ious[c] < threshold:
                    break  # every further candidate overlaps less
                if matched[t, candidates[c]]:
                    continue  # already found by a higher-scored prediction
                matched[t, candidates[c]] = True
                tp[t, rank] = 1.0
                break
    tp_cum = np.cumsum(tp, axis=1)
    seen = np.arange(1, len(order) + 1, dtype=np.float64)
    return np.array([interpolated_average_precision(tp_cum[t] / seen, tp_cum[t] / npos)
                     for t in range(len(thresholds))])


def _segments_of(items: Iterable[Any]) -> list[tuple[str, float, float, float]]:
    """``(label, start, end, score)`` from Segment objects, dicts or tuples (score 1 if absent)."""
    out = []
    for item in items:
        if isinstance(item, Mapping):
            if "segment" in item:  # ActivityNet: {"label", "segment": [s, e], "score"}
                start, end = item["segment"]
            else:
                start, end = item["start"], item["end"]
            out.append((str(item["label"]), float(start), float(end), float(item.get("score", 1.0))))
        elif hasattr(item, "label") and hasattr(item, "start"):
            out.append((str(item.label), float(item.start), float(item.end), float(getattr(item, "score", 1.0))))
        else:
            label, start, end, *rest = item
            out.append((str(label), float(start), float(end), float(rest[0]) if rest else 1.0))
    return out


def localization_map(
    ground_truth: Mapping[str, Iterable[Any]],
    predictions: Mapping[str, Iterable[Any]],
    thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
) -> dict[str, Any]:
    """Detection mAP over every class with ground truth, at each tIoU threshold.

    ``ground_truth`` and ``predictions`` map a video id to its segments: ``Segment``
    objects, ``{"label", "start", "end"[, "score"]}`` or ActivityNet's
    ``{"label", "segment": [s, e], "score"}`` dicts, or ``(label, start, end[,
    score])`` tuples. Predictions of videos not in ``ground_truth`` are false
    positives. Returns ``{"mAP@0.3": ..., "mAP@0.5": ..., "mAP@0.7": ..., "mAP":
    mean of those, "per_class": {label: {"0.3": AP, ...}}, "thresholds": [...],
    "num_ground_truth": n, "num_predictions": m}``; the mAPs are ``None`` when
    there is no ground truth at all.
    """
    thresholds = [float(t) for t in thresholds]
    gt_by_class: dict[str, list[tuple[str, float, float]]] = {}
    for video, items in ground_truth.items():
        for label, start, end, _ in _segments_of(items):
            gt_by_class.setdefault(label, []).append((str(video), start, end))
    pred_by_class: dict[str, list[tuple[str, float, float, float]]] = {}
    num_predictions = 0
    for video, items in predictions.items():
        for label, start, end, score in _segments_of(items):
            pred_by_class.setdefault(label, []).append((str(video), start, end, score))
            num_predictions += 1
    per_class = {
        label: average_precision_detection(gt, pred_by_class.get(label, []), thresholds)
        for label, gt in sorted(gt_by_class.items())
    }
    out: dict[str, Any] = {}
    if per_class:
        table = np.stack(list(per_class.values()))  # (classes, thresholds)
        maps = table.mean(axis=0)
        for t, value in zip(thresholds, maps):
            out[f"mAP@{t:g}"] = float(value)
        out["mAP"] = float(maps.mean())
    else:
        for t in thresholds:
            out[f"mAP@{t:g}"] = None
        out["mAP"] = None
    out["per_class"] = {label: {f"{t:g}": float(ap) for t, ap in zip(thresholds, aps)}
                        for label, aps in per_class.items()}
    out["thresholds"] = thresholds
    out["num_ground_truth"] = sum(len(v) for v in gt_by_class.values())
    out["num_predictions"] = num_predictions
    return out


# -- ground-truth files ---------------------------------------------------------------------------


def load_ground_truth(path: str | os.PathLike[str], subset: str | None = None) -> list[GroundTruthVideo]:
    """The videos of an ActivityNet-style ground-truth file, with their files located.

    ``path`` is the JSON file (``{"database": {id: {"subset", "duration",
    "annotations": [{"segment": [s, e], "label"}], "path"?}}}``) or a folder holding
    ``ground_truth.json`` (or a single ``.json``). ``subset`` keeps one subset
    (``validation``, ``testing``...); without it every video with at least one
    annotation is kept (ActivityNet's test videos carry none). A video's file is
    its ``path`` key (relative to the JSON's folder or an ancestor of it, as
    ``falv synth`` writes ``untrimmed/<id>.mp4`` relative to its output folder),
    else ``<id>.*`` or ``v_<id>.*`` anywhere under the JSON's folder; a video whose
    file is not found keeps ``path=None``.
    """
    from falv.data.sources import VIDEO_EXTENSIONS

    path = Path(path)
    if path.is_dir():
        candidates = [path / "ground_truth.json"] if (path / "ground_truth.json").is_file() else sorted(
            path.glob("*.json"))
        if len(candidates) != 1:
            raise GroundTruthError(
                f"{path}: expected ground_truth.json (or exactly one .json file) in the folder, "
                f"found {len(candidates)} .json files; pass the file itself")
        path = candidates[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GroundTruthError(f"{path}: no such ground-truth file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroundTruthError(f"{path}: cannot read the ground truth ({exc})") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise GroundTruthError(f"{path}: not an ActivityNet ground-truth file (needs a 'database' object)")
    folder = path.parent
    stems: dict[str, str] | None = None
    videos = []
    for video_id, entry in database.items():
        if not isinstance(entry, dict):
            raise GroundTruthError(f"{path}: database entry {video_id!r} is not an object")
        if subset is not None and entry.get("subset") != subset:
            continue
        try:
            segments = [(str(a["label"]), float(a["segment"][0]), float(a["segment"][1]))
                        for a in entry.get("annotations") or []]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise GroundTruthError(f"{path}: video {video_id!r} has a malformed annotation ({exc!r}); "
                                   "expected {'segment': [start, end], 'label': ...}") from None
        if subset is None and not segments:
            continue
        file = _locate(folder, entry.get("path"))
        if file is None:
            if stems is None:
                stems = _video_stems(folder, VIDEO_EXTENSIONS)
            file = stems.get(str(video_id)) or stems.get(f"v_{video_id}")
        duration = entry.get("duration")
        videos.append(GroundTruthVideo(
            video_id=str(video_id), segments=segments, subset=entry.get("subset"),
            duration=None if duration is None else float(duration), path=file,
            extra={k: v for k, v in entry.items() if k not in ("annotations", "subset", "duration", "path")},
        ))
    if not videos:
        which = f" of subset {subset!r}" if subset is not None else " with annotations"
        raise GroundTruthError(f"{path}: no videos{which}")
    return videos


def _locate(folder: Path, relative: Any) -> str | None:
    if not isinstance(relative, str) or not relative:
        return None
    candidate = Path(relative).expanduser()
    if candidate.is_absolute():
        return str(candidate) if candidate.is_file() else None
    for base in (folder, *folder.parents[:2]):
        if (base / candidate).is_file():
            return str(base / candidate)
    return None


def _video_stems(folder: Path, extensions: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in extensions:
                found.setdefault(stem, os.path.join(dirpath, name))
    return found
