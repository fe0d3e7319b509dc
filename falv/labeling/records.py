"""The label record: one JSON object per input video, one per line of ``labels.jsonl``.

The schema is documented with an example in ``docs/formats.md``. Records are
plain dataclasses with ``to_dict()`` / ``from_dict()``; keys this version does
not know are kept in :attr:`LabelRecord.extra` and written back unchanged, so a
newer writer's records survive a round trip through an older reader.

``record_ok`` and ``record_error`` build records; ``read_records`` reads a JSONL
file written by a run that may have been killed mid-line (it drops and reports a
truncated last line, but refuses damage anywhere else).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from falv.errors import FalvError, error_fields
from falv.hub.io import atomic_write_text
from falv.labeling.segments import Segment

__all__ = [
    "SCHEMA_VERSION",
    "LabelScore",
    "Window",
    "Segment",
    "RecordError",
    "LabelRecord",
    "RecordFormatError",
    "TruncatedRecordWarning",
    "RecordScan",
    "video_id_for",
    "record_ok",
    "record_error",
    "record_from_exception",
    "error_fields",
    "record_to_json_line",
    "scan_records",
    "read_records",
    "write_records",
    "coerce_record",
]

log = logging.getLogger(__name__)

#: Version of the record layout, written as ``"schema"`` in every record.
SCHEMA_VERSION = 1


class RecordFormatError(FalvError, ValueError):
    """A record (or a line of ``labels.jsonl``) does not follow the documented schema."""


class TruncatedRecordWarning(UserWarning):
    """``labels.jsonl`` ends in a partial line (a run was killed mid-write); it was skipped."""


def _falv_version() -> str:
    from falv import __version__

    return __version__


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordFormatError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RecordFormatError(f"{what} must be finite, got {value!r}")
    return number


def _optional_number(value: Any, what: str, *, positive: bool = False) -> float | None:
    """``None`` for a missing/unknown value (``None`` or, when ``positive``, <= 0)."""
    if value is None:
        return None
    number = _finite(value, what)
    if positive and number <= 0:
        return None  # e.g. VideoInfo.fps == 0.0 means "unknown"
    if number < 0:
        raise RecordFormatError(f"{what} must be >= 0, got {value!r}")
    return number


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    number = _finite(value, what)
    if number != int(number) or number < 0:
        raise RecordFormatError(f"{what} must be a whole number >= 0, got {value!r}")
    return int(number) if number > 0 else None


@dataclass(frozen=True)
class LabelScore:
    """A class and its score (probability for softmax/sigmoid heads)."""

    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}

    @classmethod
    def from_any(cls, item: Any) -> LabelScore:
        """From a ``LabelScore``, a ``{"label", "score"}`` mapping or a ``(label, score)`` pair."""
        if isinstance(item, LabelScore):
            return item
        if isinstance(item, Mapping):
            try:
                label, score = item["label"], item["score"]
            except KeyError as err:
                raise RecordFormatError(f"a label entry needs 'label' and 'score', got {dict(item)!r}") from err
        else:
            try:
                label, score = item
            except (TypeError, ValueError):
                raise RecordFormatError(f"a label entry must be (label, score), got {item!r}") from None
        if not isinstance(label, str):
            raise RecordFormatError(f"a label must be a string, got {label!r}")
        return cls(label=label, score=_finite(score, f"score of {label!r}"))


def _label_list(items: Iterable[Any]) -> list[LabelScore]:
    """Labels best first (stable for equal scores)."""
    scored = [LabelScore.from_any(item) for item in items]
    return sorted(scored, key=lambda ls: -ls.score)


@dataclass(frozen=True)
class Window:
    """One analysed window: ``[start, end]`` seconds and its top labels, best first."""

    start: float
    end: float
    labels: list[LabelScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "labels": [ls.to_dict() for ls in self.labels]}

    @classmethod
    def from_any(cls, item: Any) -> Window:
        """From a ``Window``, a ``{"start", "end", "labels"}`` mapping or a ``(start, end, labels)`` triple."""
        if isinstance(item, Window):
            return item
        if isinstance(item, Mapping):
            start, end, labels = item.get("start"), item.get("end"), item.get("labels", [])
        else:
            start, end, labels = item
        start, end = _finite(start, "window start"), _finite(end, "window end")
        if not 0 <= start <= end:
            raise RecordFormatError(f"a window needs 0 <= start <= end, got [{start}, {end}]")
        return cls(start=start, end=end, labels=_label_list(labels))


def _segment(item: Any) -> Segment:
    if isinstance(item, Segment):
        seg = item
    elif isinstance(item, Mapping):
        try:
            seg = Segment(
                label=item["label"],
                start=_finite(item["start"], "segment start"),
                end=_finite(item["end"], "segment end"),
                score=_finite(item["score"], "segment score"),
            )
        except KeyError as err:
            raise RecordFormatError(f"a segment needs label, start, end and score; missing {err}") from None
    else:
        label, start, end, score = item
        seg = Segment(label, _finite(start, "segment start"), _finite(end, "segment end"), _finite(score, "score"))
    if not isinstance(seg.label, str):
        raise RecordFormatError(f"a segment label must be a string, got {seg.label!r}")
    if not 0 <= seg.start <= seg.end:
        raise RecordFormatError(f"a segment needs 0 <= start <= end, got [{seg.start}, {seg.end}]")
    return seg


@dataclass(frozen=True)
class RecordError:
    """Why a video has no labels: a stable short code and a one-line message."""

    type: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


_SLUG = re.compile(r"[^\w-]+")


def video_id_for(path: str | os.PathLike[str]) -> str:
    """A stable id for a video: ``<file stem>-<10 hex digits of sha1(path)>``.

    The stem keeps letters, digits, ``_`` and ``-`` (anything else becomes ``_``,
    so the id holds no ``.``, ``/`` or spaces and is safe as a file name, a
    FiftyOne UUID or a dict key); the hash of the normalised path tells apart
    videos with the same name in different folders. The same path always gives
    the same id; the engine records absolute paths, so ids do not depend on the
    working directory.
    """
    text = os.path.normpath(os.fspath(path))
    stem = _SLUG.sub("_", PurePath(text).stem).strip("_")[:64] or "video"
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{stem}-{digest}"


# Keys LabelRecord reads itself; anything else in a record dict goes to ``extra``.
_KNOWN_KEYS = (
    "schema",
    "path",
    "video_id",
    "duration",
    "fps",
    "num_frames",
    "width",
    "height",
    "labels",
    "windows",
    "segments",
    "embeddings",
    "error",
    "model",
    "falv_version",
    "precision",
    "device",
    "runtime",
    "multilabel",
    "threshold",
)


@dataclass(frozen=True)
class LabelRecord:
    """One input video's result (or failure). See ``docs/formats.md`` for every key."""

    path: str
    video_id: str
    duration: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    labels: list[LabelScore] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    embeddings: dict[str, Any] | None = None
    error: RecordError | None = None
    model: str | None = None
    falv_version: str = ""
    precision: str | None = None
    device: str | None = None
    runtime: str | None = None
    multilabel: bool = False
    threshold: float | None = None
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the video was labeled (``error`` is null)."""
        return self.error is None

    @property
    def top(self) -> LabelScore | None:
        """The best video-level label, if any."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the record, keys in documented order, then ``extra``."""
        out: dict[str, Any] = {
            "schema": self.schema,
            "path": self.path,
            "video_id": self.video_id,
            "duration": self.duration,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "labels": [ls.to_dict() for ls in self.labels],
            "windows": [w.to_dict() for w in self.windows],
            "segments": [s.to_dict() for s in self.segments],
            "embeddings": dict(self.embeddings) if self.embeddings is not None else None,
            "error": self.error.to_dict() if self.error is not None else None,
            "model": self.model,
            "falv_version": self.falv_version,
            "precision": self.precision,
            "device": self.device,
            "runtime": self.runtime,
            "multilabel": self.multilabel,
            "threshold": self.threshold,
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelRecord:
        """Parse and validate a record object; unknown keys are kept in ``extra``."""
        if not isinstance(data, Mapping):
            raise RecordFormatError(f"a record must be a JSON object, got {type(data).__name__}")
        path = data.get("path")
        if not isinstance(path, str) or not path:
            raise RecordFormatError(f"a record needs a non-empty string 'path', got {path!r}")
        schema = data.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise RecordFormatError(
                f"{path}: record schema {schema!r} is newer than this falv understands ({SCHEMA_VERSION}); "
                "upgrade falv"
            )
        error = data.get("error")
        if error is not None:
            if not isinstance(error, Mapping) or "type" not in error:
                raise RecordFormatError(f"{path}: 'error' must be null or {{\"type\", \"message\"}}, got {error!r}")
            error = RecordError(type=str(error["type"]), message=str(error.get("message", "")))
        embeddings = data.get("embeddings")
        if embeddings is not None and not isinstance(embeddings, Mapping):
            raise RecordFormatError(f"{path}: 'embeddings' must be null or an object, got {embeddings!r}")
        threshold = data.get("threshold")
        video_id = data.get("video_id") or video_id_for(path)
        try:
            return cls(
                path=path,
                video_id=str(video_id),
                duration=_optional_number(data.get("duration"), "duration"),
                fps=_optional_number(data.get("fps"), "fps", positive=True),
                num_frames=_optional_int(data.get("num_frames"), "num_frames"),
                width=_optional_int(data.get("width"), "width"),
                height=_optional_int(data.get("height"), "height"),
                labels=_label_list(data.get("labels") or []),
                windows=[Window.from_any(w) for w in data.get("windows") or []],
                segments=[_segment(s) for s in data.get("segments") or []],
                embeddings=dict(embeddings) if embeddings is not None else None,
                error=error,
                model=None if data.get("model") is None else str(data["model"]),
                falv_version=str(data.get("falv_version") or ""),
                precision=_optional_str(data.get("precision")),
                device=_optional_str(data.get("device")),
                runtime=_optional_str(data.get("runtime")),
                multilabel=bool(data.get("multilabel", False)),
                threshold=None if threshold is None else _finite(threshold, "threshold"),
                schema=schema,
                extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
            )
        except RecordFormatError as err:
            raise RecordFormatError(f"{path}: {err}") from None
        except (TypeError, ValueError) as err:
            raise RecordFormatError(f"{path}: malformed record ({err})") from None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def coerce_record(item: LabelRecord | Mapping[str, Any]) -> LabelRecord:
    """A :class:`LabelRecord` from a record or its dict (as read from JSON)."""
    return item if isinstance(item, LabelRecord) else LabelRecord.from_dict(item)


def _info_fields(info: Any) -> dict[str, Any]:
    """duration/fps/num_frames/width/height from a VideoInfo-like object or mapping."""
    if info is None:
        return {}
    get = info.get if isinstance(info, Mapping) else (lambda key: getattr(info, key, None))
    return {key: get(key) for key in ("duration", "fps", "num_frames", "width", "height")}


def _base_fields(
    path: Any, info: Any, overrides: Mapping[str, Any], video_id: str | None, extra: Mapping[str, Any]
) -> dict[str, Any]:
    clash = sorted(set(extra) & set(_KNOWN_KEYS))
    if clash:
        raise RecordFormatError(f"{', '.join(clash)} cannot be set as extra record keys")
    path = os.fspath(path)
    fields = _info_fields(info)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return {
        "path": path,
        "video_id": video_id or video_id_for(path),
        "duration": _optional_number(fields.get("duration"), "duration", positive=True),
        "fps": _optional_number(fields.get("fps"), "fps", positive=True),
        "num_frames": _optional_int(fields.get("num_frames"), "num_frames"),
        "width": _optional_int(fields.get("width"), "width"),
        "height": _optional_int(fields.get("height"), "height"),
    }


def record_ok(
    path: str | os.PathLike[str],
    labels: Iterable[Any],
    *,
    info: Any = None,
    duration: float | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    windows: Iterable[Any] = (),
    segments: Iterable[Any] = (),
    embeddings: Mapping[str, Any] | None = None,
    model: str | None = None,
    multilabel: bool = False,
    threshold: float | None = None,
    video_id: str | None = None,
    precision: str | None = None,
    device: str | None = None,
    runtime: str | None = None,
    **extra: Any,
) -> LabelRecord:
    """A successful record.

    ``labels`` are ``(label, score)`` pairs, ``{"label", "score"}`` dicts or
    :class:`LabelScore` (sorted best first here). Video properties come from
    ``info`` (a :class:`falv.video.VideoInfo` or a dict with the same keys) and
    are overridden by the explicit keywords; an fps of 0 means unknown (null).
    ``windows`` are ``(start, end, labels)``; ``segments`` are
    :class:`~falv.labeling.segments.Segment` or dicts. ``video_id`` defaults to
    :func:`video_id_for` of the path. ``precision``, ``device`` and ``runtime`` say
    what produced the scores (the engine fills them). ``extra`` keys are stored as
    additional JSON keys (they may not shadow documented ones).
    """
    dims = {"duration": duration, "fps": fps, "num_frames": num_frames, "width": width, "height": height}
    base = _base_fields(path, info, dims, video_id, extra)
    segs = sorted((_segment(s) for s in segments), key=lambda s: (s.start, s.end, s.label))
    return LabelRecord(
        **base,
        labels=_label_list(labels),
        windows=[Window.from_any(w) for w in windows],
        segments=segs,
        embeddings=dict(embeddings) if embeddings is not None else None,
        model=None if model is None else str(model),
        falv_version=_falv_version(),
        precision=_optional_str(precision),
        device=_optional_str(device),
        runtime=_optional_str(runtime),
        multilabel=bool(multilabel),
        threshold=None if threshold is None else _finite(threshold, "threshold"),
        extra=dict(extra),
    )


def record_error(
    path: str | os.PathLike[str],
    type: str,  # noqa: A002 - the documented key name
    message: str,
    *,
    info: Any = None,
    model: str | None = None,
    multilabel: bool = False,
    video_id: str | None = None,
    precision: str | None = None,
    device: str | None = None,
    runtime: str | None = None,
    **extra: Any,
) -> LabelRecord:
    """A failure record: ``error = {"type": type, "message": message}``, no labels.

    ``type`` is a short stable code (e.g. a :class:`falv.video.VideoError` code such
    as ``"not_found"`` or ``"corrupt"``); ``message`` is folded onto one line.
    """
    if not type or not isinstance(type, str):
        raise RecordFormatError(f"an error record needs a short string type, got {type!r}")
    one_line = " ".join(str(message).split())
    return LabelRecord(
        **_base_fields(path, info, {}, video_id, extra),
        error=RecordError(type=type, message=one_line),
        model=None if model is None else str(model),
        falv_version=_falv_version(),
        precision=_optional_str(precision),
        device=_optional_str(device),
        runtime=_optional_str(runtime),
        multilabel=bool(multilabel),
        extra=dict(extra),
    )


def record_from_exception(
    path: str | os.PathLike[str], error: BaseException, *, model: str | None = None, stage: str = "labeling",
    **extra: Any,
) -> LabelRecord:
    """An error record for ``error`` (see :func:`error_fields`)."""
    code, message = error_fields(error, path, stage)
    return record_error(path, code, message, model=model, **extra)


def record_to_json_line(record: LabelRecord | Mapping[str, Any]) -> str:
    """One line of ``labels.jsonl``: compact UTF-8 JSON (no NaN/Infinity) and ``"\\n"``."""
    data = coerce_record(record).to_dict()
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as err:
        raise RecordFormatError(f"{data.get('path')}: record is not valid JSON ({err})") from None
    return text + "\n"


@dataclass
class RecordScan:
    """What :func:`scan_records` found: the records and, if any, the partial last line."""

    records: list[LabelRecord]
    truncated_line: int | None = None  # 1-based line number of the dropped partial line
    truncated_text: str = ""

    @property
    def truncated(self) -> bool:
        return self.truncated_line is not None


def scan_records(path: str | os.PathLike[str]) -> RecordScan:
    """Read ``labels.jsonl``; a partial last line is dropped and reported in the result.

    Only the last non-empty line may be unreadable (a run killed mid-write); a bad
    line anywhere else, or a line that is JSON but not a valid record, raises
    :class:`RecordFormatError` naming the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordFormatError(f"{path}: no such labels file") from None
    lines = data.split(b"\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records: list[LabelRecord] = []
    scan = RecordScan(records=records)
    for pos, (number, raw) in enumerate(numbered):
        is_last = pos == len(numbered) - 1
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if is_last:
                scan.truncated_line = number
                scan.truncated_text = raw.decode("utf-8", "replace")[:80]
                break
            raise RecordFormatError(f"{path}:{number}: not a JSON line ({err})") from None
        try:
            records.append(LabelRecord.from_dict(obj))
        except RecordFormatError as err:
            raise RecordFormatError(f"{path}:{number}: {err}") from None
    return scan


def read_records(path: str | os.PathLike[str]) -> list[LabelRecord]:
    """The records of ``labels.jsonl``, tolerating a truncated last line.

    A partial last line (a run killed mid-write) is skipped with a
    :class:`TruncatedRecordWarning` and a log warning naming the line; use
    :func:`scan_records` to get that information as data.
    """
    scan = scan_records(path)
    if scan.truncated:
        message = (
            f"{path}:{scan.truncated_line}: skipped a truncated last record (a run was interrupted); "
            "run the labeling again to redo that video"
        )
        log.warning(message)
        warnings.warn(message, TruncatedRecordWarning, stacklevel=2)
    return scan.records


def write_records(path: str | os.PathLike[str], records: Iterable[LabelRecord | Mapping[str, Any]]) -> Path:
    """Write ``records`` as a whole JSONL file, atomically (e.g. to rewrite a cleaned file)."""
    path = Path(path)
    atomic_write_text(path, "".join(record_to_json_line(r) for r in records))
    return path

