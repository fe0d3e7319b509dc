"""Exporters from label records into the files labeling and evaluation tools import.

Every format is a pure function ``records -> JSON-able structure`` (or text) plus
a writer that writes it atomically (:func:`falv.hub.io.atomic_open`).
:func:`write_formats` dispatches by name. Field names and conventions follow each
tool's own documentation and importer source; ``docs/formats.md`` lists them with
the pages they were checked against.

========================  ======================================================
format                    files under ``out_dir``
========================  ======================================================
``jsonl``                 ``labels.jsonl`` (the records themselves)
``csv``                   ``labels.csv`` (video-level labels, error rows) and
                          ``segments.csv``
``label-studio``          ``label_studio_tasks.json`` (tasks with predictions)
                          and ``label_studio_config.xml`` (labeling config)
``fiftyone``              ``fiftyone/labels.json`` and ``fiftyone/data.json``
                          (FiftyOneTemporalDetectionDataset with a media manifest)
``activitynet``           ``activitynet_results.json`` (detection results)
``webvtt``                ``webvtt/<video stem>.vtt``, one per labeled video
========================  ======================================================

Error records are exported only where a format has room for them (JSONL; CSV as
an error row); elsewhere they are skipped. Records whose fps is unknown get no
frame-based output: Label Studio tasks keep the video-level choice but no
timeline regions, FiftyOne detections fall back to ``timestamps`` (seconds).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import math
import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from falv.errors import FalvError
from falv.hub.io import atomic_open, atomic_write_text
from falv.labeling.records import LabelRecord, coerce_record, record_to_json_line
from falv.labeling.segments import Segment, frame_span

__all__ = [
    "FORMATS",
    "FormatError",
    "UnknownFormatError",
    "record_to_json_line",
    "write_jsonl",
    "LABELS_CSV_COLUMNS",
    "SEGMENTS_CSV_COLUMNS",
    "records_to_csv_rows",
    "write_csv",
    "URL_MODES",
    "video_url",
    "records_to_label_studio",
    "label_studio_config",
    "write_label_studio",
    "FIFTYONE_MODES",
    "records_to_fiftyone",
    "write_fiftyone",
    "activitynet_video_id",
    "records_to_activitynet",
    "write_activitynet",
    "format_vtt_timestamp",
    "escape_vtt_text",
    "vtt_cues",
    "record_to_webvtt",
    "write_webvtt",
    "write_formats",
    "normalize_format",
]


class FormatError(FalvError, ValueError):
    """Records cannot be exported as asked (bad option, label outside the classes, ...)."""


class UnknownFormatError(FormatError):
    """An export format name falv does not know."""


RecordLike = LabelRecord | Mapping[str, Any]


def _records(records: Iterable[RecordLike]) -> list[LabelRecord]:
    return [coerce_record(r) for r in records]


def _ok(records: Iterable[LabelRecord]) -> list[LabelRecord]:
    return [r for r in records if r.ok]


def _all_labels(records: Sequence[LabelRecord]) -> list[str]:
    """Every label that occurs in the records (video level and segments), sorted."""
    seen = {ls.label for r in records for ls in r.labels} | {s.label for r in records for s in r.segments}
    return sorted(seen)


def _classes(records: Sequence[LabelRecord], classes: Sequence[str] | None) -> list[str]:
    """The class list to export: ``classes`` when given (checked to cover the records), else all labels seen."""
    if classes is None:
        return _all_labels(records)
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise FormatError("classes must be unique")
    missing = sorted(set(_all_labels(records)) - set(classes))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FormatError(f"labels not in the given classes: {shown}; pass classes=None to use the labels found")
    return classes


def _num(value: float, digits: int = 6) -> float:
    """A float rounded for export (keeps files small and diffs stable)."""
    return round(float(value), digits)


def _frame_count(record: LabelRecord) -> int | None:
    if record.num_frames:
        return record.num_frames
    if record.fps and record.duration:
        return max(1, math.ceil(record.duration * record.fps - 1e-6))
    return None


def _dump_json(path: Path, data: Any, *, indent: int | None = None) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, allow_nan=False, indent=indent)
        handle.write("\n")
    return path


# --------------------------------------------------------------------------- JSONL


def write_jsonl(records: Iterable[RecordLike], out_dir: str | os.PathLike[str]) -> Path:
    """``labels.jsonl``, written whole (the engine appends the same lines one by one)."""
    path = Path(out_dir) / "labels.jsonl"
    atomic_write_text(path, "".join(record_to_json_line(r) for r in records))
    return path


# --------------------------------------------------------------------------- CSV

#: Columns of ``labels.csv``: one row per (video, rank); one row per failed video.
LABELS_CSV_COLUMNS = ("path", "video_id", "rank", "label", "score", "error_type", "error_message")
#: Columns of ``segments.csv``: one row per segment, times in seconds.
SEGMENTS_CSV_COLUMNS = ("path", "video_id", "label", "start", "end", "score")


def records_to_csv_rows(records: Iterable[RecordLike]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of ``labels.csv`` and ``segments.csv`` (dicts keyed by the column names).

    ``rank`` is 1 for the best label. A failed video gives one ``labels.csv`` row
    with empty rank/label/score and the error filled in; a labeled video leaves
    the error columns empty.
    """
    label_rows: list[dict[str, Any]] = []
    segment_rows: list[dict[str, Any]] = []
    for record in _records(records):
        base = {"path": record.path, "video_id": record.video_id}
        if not record.ok:
            error = {"error_type": record.error.type, "error_message": record.error.message}
            label_rows.append({**base, "rank": "", "label": "", "score": "", **error})
            continue
        for rank, ls in enumerate(record.labels, start=1):
            ranked = {"rank": rank, "label": ls.label, "score": _num(ls.score)}
            label_rows.append({**base, **ranked, "error_type": "", "error_message": ""})
        for seg in record.segments:
            segment_rows.append(
                {**base, "label": seg.label, "start": _num(seg.start), "end": _num(seg.end), "score": _num(seg.score)}
            )
    return label_rows, segment_rows


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(records: Iterable[RecordLike], out_dir: str | os.PathLike[str]) -> Path:
    """``labels.csv`` and ``segments.csv`` (UTF-8, RFC 4180 quoting); returns ``labels.csv``."""
    out_dir = Path(out_dir)
    label_rows, segment_rows = records_to_csv_rows(records)
    for name, columns, rows in (
        ("segments.csv", SEGMENTS_CSV_COLUMNS, segment_rows),
        ("labels.csv", LABELS_CSV_COLUMNS, label_rows),
    ):
        with atomic_open(out_dir / name, "w", encoding="utf-8", newline="") as handle:
            handle.write(_csv_text(columns, rows))
    return out_dir / "labels.csv"


# --------------------------------------------------------------------------- Label Studio

#: How a video path becomes the task's ``data.video`` URL.
URL_MODES = ("path", "local-files", "prefix")

LS_VIDEO_NAME = "video"  # <Video name=...>, the results' to_name
LS_CHOICES_NAME = "label"  # <Choices name=...>
LS_TIMELINE_NAME = "timeline"  # <TimelineLabels name=...>


def _relative(path: str, root: str | os.PathLike[str]) -> str:
    abs_path = os.path.abspath(path)
    abs_root = os.path.abspath(os.fspath(root))
    try:
        rel = os.path.relpath(abs_path, abs_root)
    except ValueError:  # pragma: no cover - different drives on Windows
        rel = os.pardir
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise FormatError(f"{path}: not under the document root {abs_root}; set document_root to a folder holding it")
    return PurePath(rel).as_posix()


def video_url(
    path: str,
    *,
    url_mode: str = "path",
    document_root: str | os.PathLike[str] = "/",
    url_prefix: str | None = None,
) -> str:
    """The URL Label Studio loads a video from.

    - ``"path"``: the path as recorded (for an importer that rewrites it, or a URL).
    - ``"local-files"``: ``/data/local-files/?d=<path relative to document_root>``,
      Label Studio's local-files serving; ``document_root`` must be the server's
      ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (Label Studio's default is ``/``).
    - ``"prefix"``: ``url_prefix`` + the path relative to ``document_root``, e.g. a
      static file server or a bucket (``https://host/videos/`` + ``a/b.mp4``).

    Path components are percent-encoded (UTF-8), so commas, spaces and non-ASCII
    names survive.
    """
    if url_mode == "path":
        return path
    if url_mode == "local-files":
        return "/data/local-files/?d=" + urllib.parse.quote(_relative(path, document_root), safe="/")
    if url_mode == "prefix":
        if not url_prefix:
            raise FormatError("url_mode='prefix' needs url_prefix (e.g. 'https://host/videos/')")
        return url_prefix.rstrip("/") + "/" + urllib.parse.quote(_relative(path, document_root), safe="/")
    raise FormatError(f"unknown url_mode {url_mode!r}; use one of {', '.join(URL_MODES)}")


def _result_id(record: LabelRecord, n: int) -> str:
    # Label Studio needs distinct ids for the results of a task; make them reproducible.
    return hashlib.sha1(f"{record.video_id}/{n}".encode()).hexdigest()[:10]


def _video_choices(record: LabelRecord, threshold: float | None) -> list[tuple[str, float]]:
    """The video-level labels a labeling tool should pre-select."""
    if not record.labels:
        return []
    if not record.multilabel:
        return [(record.labels[0].label, record.labels[0].score)]
    cut = threshold if threshold is not None else (record.threshold if record.threshold is not None else 0.5)
    return [(ls.label, ls.score) for ls in record.labels if ls.score >= cut]


def records_to_label_studio(
    records: Iterable[RecordLike],
    *,
    classes: Sequence[str] | None = None,
    model_version: str | None = None,
    url_mode: str = "path",
    document_root: str | os.PathLike[str] = "/",
    url_prefix: str | None = None,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Label Studio tasks with one prediction each (error records are skipped).

    Each task is ``{"data": {"video", "path", "video_id", ["fps"], ["duration"]},
    "predictions": [{"model_version", "score", "result"}]}``. The result holds one
    ``choices`` item (``from_name`` ``"label"``, ``to_name`` ``"video"``, value
    ``{"choices": [...]}``: the top label, or every label scoring at least
    ``threshold`` for a multi-label record) and one ``timelinelabels`` item per
    segment (``from_name`` ``"timeline"``, value ``{"ranges": [{"start", "end"}],
    "timelinelabels": [label]}``), whose ranges are 1-based inclusive frame
    numbers at the video's own fps. Without a known fps a task has no timeline
    items (Label Studio numbers frames by the fps it is given). Every result item
    carries a ``score``; the prediction ``score`` is the top video-level score.
    """
    records = _records(records)
    classes_set = set(_classes(records, classes))
    tasks = []
    for record in _ok(records):
        data: dict[str, Any] = {
            "video": video_url(record.path, url_mode=url_mode, document_root=document_root, url_prefix=url_prefix),
            "path": record.path,
            "video_id": record.video_id,
        }
        if record.fps:
            data["fps"] = record.fps  # read by <Video frameRate="$fps">
        if record.duration is not None:
            data["duration"] = record.duration
        result = label_studio_result(record, classes=classes_set, threshold=threshold)
        prediction = {
            "model_version": model_version or record.model or "falv",
            "score": _num(record.labels[0].score) if record.labels else 0.0,
            "result": result,
        }
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


def label_studio_result(
    record: LabelRecord,
    *,
    classes: Iterable[str] | None = None,
    threshold: float | None = None,
    choices_name: str | None = LS_CHOICES_NAME,
    timeline_name: str | None = LS_TIMELINE_NAME,
    video_name: str = LS_VIDEO_NAME,
    fps: float | None = None,
) -> list[dict[str, Any]]:
    """The ``result`` list of one record's Label Studio prediction: a ``choices`` item for
    the video-level label(s) (when ``choices_name``) and a ``timelinelabels`` item per
    segment (when ``timeline_name`` and a frame rate are known), with 1-based inclusive
    frame ranges at ``fps`` (default: the video's own). Only labels in ``classes`` (default:
    all) are kept: a project's config may name fewer classes than the model has."""
    allowed = None if classes is None else set(classes)
    result: list[dict[str, Any]] = []
    chosen = [(label, score) for label, score in _video_choices(record, threshold)
              if allowed is None or label in allowed]
    if chosen and choices_name:
        result.append(
            {
                "id": _result_id(record, 0),
                "type": "choices",
                "from_name": choices_name,
                "to_name": video_name,
                "value": {"choices": [label for label, _ in chosen]},
                "score": _num(max(score for _, score in chosen)),
            }
        )
    rate = fps or record.fps
    if rate and timeline_name:
        frames = _frame_count(record) if not fps or fps == record.fps else None
        if frames is None and record.duration:
            frames = max(1, int(round(record.duration * rate)))
        for n, seg in enumerate(record.segments, start=1):
            if allowed is not None and seg.label not in allowed:
                continue
            first, last = frame_span(seg.start, seg.end, rate, frames)
            result.append(
                {
                    "id": _result_id(record, n),
                    "type": "timelinelabels",
                    "from_name": timeline_name,
                    "to_name": video_name,
                    "value": {"ranges": [{"start": first, "end": last}], "timelinelabels": [seg.label]},
                    "score": _num(seg.score),
                }
            )
    return result


def label_studio_config(classes: Sequence[str], *, multilabel: bool = False) -> str:
    """The labeling config matching :func:`records_to_label_studio`'s tasks.

    A ``<Video>`` reading ``$video`` at ``frameRate="$fps"``, a ``<Choices>`` for the
    video-level label (``choice="multiple"`` for multi-label) and a
    ``<TimelineLabels>`` for segments, both listing ``classes``.
    """
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    timeline = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    choice_mode = "multiple" if multilabel else "single"
    return (
        "<View>\n"
        f'  <Video name="{LS_VIDEO_NAME}" value="$video" frameRate="$fps"/>\n'
        f'  <Choices name="{LS_CHOICES_NAME}" toName="{LS_VIDEO_NAME}" choice="{choice_mode}" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <TimelineLabels name="{LS_TIMELINE_NAME}" toName="{LS_VIDEO_NAME}">\n'
        f"{timeline}\n"
        "  </TimelineLabels>\n"
        "</View>\n"
    )


def write_label_studio(
    records: Iterable[RecordLike],
    out_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    model_version: str | None = None,
    url_mode: str = "path",
    document_root: str | os.PathLike[str] = "/",
    url_prefix: str | None = None,
    threshold: float | None = None,
) -> Path:
    """``label_studio_tasks.json`` and ``label_studio_config.xml``; returns the tasks file."""
    records = _records(records)
    out_dir = Path(out_dir)
    tasks = records_to_label_studio(
        records, classes=classes, model_version=model_version, url_mode=url_mode,
        document_root=document_root, url_prefix=url_prefix, threshold=threshold,
    )
    multilabel = any(r.multilabel for r in records)
    config = label_studio_config(_classes(records, classes), multilabel=multilabel)
    atomic_write_text(out_dir / "label_studio_config.xml", config)
    return _dump_json(out_dir / "label_studio_tasks.json", tasks, indent=1)


# --------------------------------------------------------------------------- FiftyOne

#: ``support``: ``[first, last]`` frames (1-based, inclusive); ``timestamps``: ``[start, stop]`` seconds.
FIFTYONE_MODES = ("support", "timestamps")


def records_to_fiftyone(
    records: Iterable[RecordLike],
    *,
    classes: Sequence[str] | None = None,
    fiftyone_mode: str = "support",
) -> tuple[dict[str, Any], dict[str, str]]:
    """``labels.json`` and ``data.json`` of a ``FiftyOneTemporalDetectionDataset``.

    ``labels.json`` is ``{"classes": [...], "labels": {uuid: [{"label": class index,
    "support" | "timestamps": [a, b], "confidence": score}]}}`` and ``data.json``
    (the media manifest) maps ``uuid + extension`` to the video's absolute path.
    The uuid is the record's ``video_id``. Records with unknown fps get
    ``timestamps`` even in ``support`` mode (FiftyOne converts them with the
    video's metadata when importing). Error records are not samples.
    """
    if fiftyone_mode not in FIFTYONE_MODES:
        raise FormatError(f"unknown fiftyone_mode {fiftyone_mode!r}; use one of {', '.join(FIFTYONE_MODES)}")
    records = _records(records)
    class_list = _classes(records, classes)
    index = {c: i for i, c in enumerate(class_list)}
    labels: dict[str, list[dict[str, Any]]] = {}
    manifest: dict[str, str] = {}
    for record in _ok(records):
        uuid = record.video_id
        frames = _frame_count(record)
        detections = []
        for seg in record.segments:
            det: dict[str, Any] = {"label": index[seg.label]}
            if fiftyone_mode == "support" and record.fps:
                det["support"] = list(frame_span(seg.start, seg.end, record.fps, frames))
            else:
                det["timestamps"] = [_num(seg.start), _num(seg.end)]
            det["confidence"] = _num(seg.score)
            detections.append(det)
        labels[uuid] = detections
        manifest[uuid + PurePath(record.path).suffix] = os.path.abspath(record.path)
    return {"classes": class_list, "labels": labels}, manifest


def write_fiftyone(
    records: Iterable[RecordLike],
    out_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    fiftyone_mode: str = "support",
) -> Path:
    """``fiftyone/labels.json`` and ``fiftyone/data.json``; returns the ``fiftyone`` folder.

    Load with ``fo.Dataset.from_dir(dataset_dir=<folder>, dataset_type=
    fo.types.FiftyOneTemporalDetectionDataset, data_path="data.json")``.
    """
    labels, manifest = records_to_fiftyone(records, classes=classes, fiftyone_mode=fiftyone_mode)
    folder = Path(out_dir) / "fiftyone"
    _dump_json(folder / "data.json", manifest)
    _dump_json(folder / "labels.json", labels)
    return folder


# --------------------------------------------------------------------------- ActivityNet

ACTIVITYNET_TASKS = ("detection", "classification")
ACTIVITYNET_IDS = ("stem", "video_id")


def activitynet_video_id(path: str, *, strip_v_prefix: bool = True) -> str:
    """The ActivityNet id of a video file: its stem, without the ``v_`` of ``v_<YouTube id>.mp4``."""
    stem = PurePath(path).stem
    if strip_v_prefix and stem.startswith("v_") and len(stem) > 2:
        stem = stem[2:]
    return stem


def records_to_activitynet(
    records: Iterable[RecordLike],
    *,
    activitynet_task: str = "detection",
    activitynet_id: str = "stem",
    strip_v_prefix: bool = True,
    version: str = "VERSION 1.3",
    external_data_used: bool = False,
    external_data_details: str = "",
) -> dict[str, Any]:
    """An ActivityNet results file (the prediction file of Evaluation/eval_*.py).

    ``{"version", "results": {video id: [{"label", "score", "segment": [start, end]}]},
    "external_data": {"used", "details"}}``, seconds; ``activitynet_task=
    "classification"`` drops ``segment`` and lists the video-level labels. Video ids
    are file stems without the ``v_`` prefix (``activitynet_id="video_id"`` uses
    falv's ids instead). Error records are skipped.
    """
    if activitynet_task not in ACTIVITYNET_TASKS:
        raise FormatError(f"unknown activitynet_task {activitynet_task!r}; use one of {', '.join(ACTIVITYNET_TASKS)}")
    if activitynet_id not in ACTIVITYNET_IDS:
        raise FormatError(f"unknown activitynet_id {activitynet_id!r}; use one of {', '.join(ACTIVITYNET_IDS)}")
    results: dict[str, list[dict[str, Any]]] = {}
    owner: dict[str, str] = {}
    for record in _ok(_records(records)):
        if activitynet_id == "stem":
            vid = activitynet_video_id(record.path, strip_v_prefix=strip_v_prefix)
        else:
            vid = record.video_id
        if vid in owner:
            raise FormatError(
                f"{record.path} and {owner[vid]} get the same ActivityNet id {vid!r}; "
                "use activitynet_id='video_id' for unique ids"
            )
        owner[vid] = record.path
        if activitynet_task == "detection":
            entries = [
                {"label": s.label, "score": _num(s.score), "segment": [_num(s.start), _num(s.end)]}
                for s in record.segments
            ]
        else:
            entries = [{"label": ls.label, "score": _num(ls.score)} for ls in record.labels]
        results[vid] = entries
    return {
        "version": version,
        "results": results,
        "external_data": {"used": bool(external_data_used), "details": str(external_data_details)},
    }


def write_activitynet(
    records: Iterable[RecordLike],
    out_dir: str | os.PathLike[str],
    *,
    activitynet_task: str = "detection",
    activitynet_id: str = "stem",
    strip_v_prefix: bool = True,
    external_data_used: bool = False,
    external_data_details: str = "",
) -> Path:
    """``activitynet_results.json``."""
    data = records_to_activitynet(
        records, activitynet_task=activitynet_task, activitynet_id=activitynet_id, strip_v_prefix=strip_v_prefix,
        external_data_used=external_data_used, external_data_details=external_data_details,
    )
    return _dump_json(Path(out_dir) / "activitynet_results.json", data)


# --------------------------------------------------------------------------- WebVTT


def format_vtt_timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (hours at least two digits, more past 99 h), rounded to the millisecond."""
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise FormatError(f"a WebVTT time must be a finite number >= 0, got {seconds!r}")
    ms = int(round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def escape_vtt_text(text: str) -> str:
    """Cue text with ``&``, ``<`` and ``>`` escaped and line breaks folded to spaces.

    WebVTT cue text treats ``<`` as a tag, ``&`` as a character reference and a
    blank line as the end of the cue; escaping ``>`` also keeps ``-->`` out.
    """
    return xml_escape(" ".join(str(text).split()))


def vtt_cues(segments: Sequence[Segment]) -> list[tuple[float, float, list[Segment]]]:
    """Ordered, non-overlapping cues ``(start, end, active segments)`` covering ``segments``.

    Overlapping (multi-label) segments are cut at every boundary; each piece lists
    the segments active in it, best score first. Neighbouring pieces with the same
    active segments are joined again, so non-overlapping input gives one cue per
    segment.
    """
    segs = [s for s in segments if s.end > s.start]
    cuts = sorted({t for s in segs for t in (s.start, s.end)})
    cues: list[tuple[float, float, list[Segment]]] = []
    keys: list[tuple[int, ...]] = []
    for a, b in zip(cuts, cuts[1:]):
        active = [i for i, s in enumerate(segs) if s.start <= a and s.end >= b]
        if not active:
            continue
        key = tuple(active)
        if cues and keys[-1] == key and cues[-1][1] == a:
            cues[-1] = (cues[-1][0], b, cues[-1][2])
            continue
        keys.append(key)
        cues.append((a, b, sorted((segs[i] for i in active), key=lambda s: (-s.score, s.label))))
    return cues


def record_to_webvtt(record: RecordLike, *, vtt_scores: bool = True) -> str:
    """The WebVTT text of one record's segments: one cue per stretch, one line per label.

    Cue text is ``label (0.91)`` (``label`` alone with ``vtt_scores=False``);
    identifiers are cue numbers. Cues shorter than a millisecond vanish in rounding
    and are left out.
    """
    record = coerce_record(record)
    lines = ["WEBVTT", ""]
    number = 0
    for start, end, active in vtt_cues(record.segments):
        if round(end * 1000) <= round(start * 1000):
            continue
        t0, t1 = format_vtt_timestamp(start), format_vtt_timestamp(end)
        number += 1
        lines.append(str(number))
        lines.append(f"{t0} --> {t1}")
        for seg in active:
            text = escape_vtt_text(seg.label)
            lines.append(f"{text} ({seg.score:.2f})" if vtt_scores else text)
        lines.append("")
    return "\n".join(lines) + ("\n" if lines[-1] else "")


def _vtt_names(records: Sequence[LabelRecord]) -> dict[str, str]:
    """``video_id -> file name``: ``<stem>.vtt``, or ``<video_id>.vtt`` where stems collide."""
    stems: dict[str, int] = {}
    for r in records:
        stems[PurePath(r.path).stem] = stems.get(PurePath(r.path).stem, 0) + 1
    names = {}
    for r in records:
        stem = PurePath(r.path).stem
        safe = stem if stems[stem] == 1 and stem not in ("", ".", "..") else r.video_id
        names[r.video_id] = f"{safe}.vtt"
    return names


def write_webvtt(records: Iterable[RecordLike], out_dir: str | os.PathLike[str], *, vtt_scores: bool = True) -> Path:
    """``webvtt/<video stem>.vtt`` per labeled video; returns the ``webvtt`` folder."""
    records = _ok(_records(records))
    folder = Path(out_dir) / "webvtt"
    folder.mkdir(parents=True, exist_ok=True)
    names = _vtt_names(records)
    for record in records:
        atomic_write_text(folder / names[record.video_id], record_to_webvtt(record, vtt_scores=vtt_scores))
    return folder


# --------------------------------------------------------------------------- dispatcher

_WRITERS: dict[str, Callable[..., Path]] = {
    "jsonl": write_jsonl,
    "csv": write_csv,
    "label-studio": write_label_studio,
    "fiftyone": write_fiftyone,
    "activitynet": write_activitynet,
    "webvtt": write_webvtt,
}
#: The export format names :func:`write_formats` accepts.
FORMATS = tuple(_WRITERS)
_ALIASES = {"labelstudio": "label-studio", "vtt": "webvtt"}


def normalize_format(name: str) -> str:
    """The canonical format name (case, ``_`` and a few aliases tolerated)."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _WRITERS:
        raise UnknownFormatError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}")
    return key


def _options_of(writer: Callable[..., Path]) -> set[str]:
    return {p.name for p in inspect.signature(writer).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def write_formats(
    records: Iterable[RecordLike],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str],
    **options: Any,
) -> dict[str, Path]:
    """Write ``records`` in every format of ``formats``; returns ``{format: path}``.

    The path is the main file (``labels.jsonl``, ``labels.csv``,
    ``label_studio_tasks.json``, ``activitynet_results.json``) or the folder
    (``fiftyone/``, ``webvtt/``). Each writer receives the ``options`` it takes
    (``classes``, ``model_version``, ``url_mode``, ``document_root``,
    ``url_prefix``, ``threshold``, ``fiftyone_mode``, ``activitynet_task``,
    ``activitynet_id``, ``strip_v_prefix``, ``external_data_used``,
    ``external_data_details``, ``vtt_scores``); an option no format takes is an error.
    """
    names = [normalize_format(f) for f in formats]
    known = set().union(*(_options_of(w) for w in _WRITERS.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise FormatError(f"unknown export option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
    records = _records(records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in dict.fromkeys(names):  # keep order, drop repeats
        writer = _WRITERS[name]
        accepted = _options_of(writer)
        written[name] = writer(records, out_dir, **{k: v for k, v in options.items() if k in accepted})
    return written
