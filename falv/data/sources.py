"""Dataset sources: which videos a dataset holds and what their labels are.

A source is plain data (:class:`VideoEntry` rows and a class list) read from one
of the common on-disk layouts:

- ``folder``: ``root/<class>/<video>`` (class names sorted);
- ``list``: CSV/TSV/space-separated ``path label[,label...]`` files (the format
  :mod:`falv.data.synth` writes), with an optional ``labels.txt`` fixing the order;
- ``kinetics``: the Kinetics annotation CSV
  (``label,youtube_id,time_start,time_end,split[,is_cc]``);
- ``ucf101``: ``classInd.txt`` + ``trainlistNN.txt`` / ``testlistNN.txt``;
- ``ssv2``: Something-Something v2 ``labels.json`` + ``train.json`` / ``validation.json``;
- ``label-studio``: a Label Studio ``JSON`` or ``JSON_MIN`` export (choices as video
  labels, timeline regions as trimmed clips);
- ``fiftyone``: a FiftyOne ``FiftyOneTemporalDetectionDataset`` folder (``labels.json``
  and ``data/`` or a ``data.json`` manifest; each temporal detection a trimmed clip).

:func:`load_source` detects the layout. Nothing here decodes video; only
:meth:`DatasetSource.check` (with ``probe=True``) opens files, to list the ones
that are missing or unreadable before training starts.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from falv.errors import FalvError

logger = logging.getLogger(__name__)

#: File extensions treated as videos (lower case).
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg",
    ".wmv", ".flv", ".3gp", ".ts", ".ogv",
)  # fmt: skip

#: Names accepted for a class-list file next to a list/CSV file.
LABEL_FILE_NAMES: tuple[str, ...] = ("labels.txt", "classes.txt", "classnames.txt")

SOURCE_KINDS: tuple[str, ...] = ("folder", "list", "kinetics", "ucf101", "ssv2", "json", "label-studio", "fiftyone")

_KINETICS_COLUMNS = {"youtube_id", "time_start", "time_end"}
_HEADER_PATH_NAMES = {"path", "video", "video_path", "file", "filename", "file_name", "video_id", "name"}


class DatasetError(FalvError):
    """A dataset description cannot be read or does not make sense.

    ``code`` is a short machine-readable reason: ``not_found``, ``bad_format``,
    ``unknown_label``, ``empty`` or ``unsupported``.
    """

    def __init__(self, message: str, code: str = "bad_format") -> None:
        super().__init__(message)
        self.code = code


class Problem(NamedTuple):
    """A video that was left out of a source, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class VideoEntry:
    """One video (or one segment of a video) and its labels.

    ``start``/``end`` (seconds) restrict sampling to a segment of an untrimmed
    file, as in Kinetics; ``None`` means the file's start/end. ``duration`` and
    ``fps`` are filled in by :meth:`DatasetSource.check` with ``probe=True`` so
    that the dataset need not probe every file again.
    """

    path: str
    labels: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    fps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoEntry:
        return cls(
            path=str(d["path"]),
            labels=tuple(str(x) for x in d.get("labels", ())),
            start=_opt_float(d.get("start")),
            end=_opt_float(d.get("end")),
            duration=_opt_float(d.get("duration")),
            fps=_opt_float(d.get("fps")),
        )


@dataclass
class DatasetSource:
    """The videos of a dataset split, their labels and the ordered class list.

    Label strings map to indices through ``classes``; ``multilabel`` says whether
    a video may carry several labels (targets are then multi-hot vectors).
    """

    entries: list[VideoEntry]
    classes: list[str]
    multilabel: bool = False
    kind: str = "list"
    name: str = ""
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entries = list(self.entries)
        self.classes = [str(c) for c in self.classes]
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise DatasetError(f"duplicate class names in {self.name or self.kind}: {dupes}")
        self._index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({lab for e in self.entries for lab in e.labels if lab not in self._index})
        if unknown:
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise DatasetError(
                f"{self.name or self.kind}: labels not in the class list: {unknown[:10]}{more}",
                code="unknown_label",
            )

    # -- sequence protocol ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> VideoEntry:
        return self.entries[i]

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_index(self) -> dict[str, int]:
        return dict(self._index)

    def label_indices(self, entry: VideoEntry | int) -> list[int]:
        """Class indices of an entry (or of the entry at that position)."""
        e = self.entries[entry] if isinstance(entry, int) else entry
        return [self._index[lab] for lab in e.labels]

    def subset(self, indices: Iterable[int]) -> DatasetSource:
        """A source with the given entries and the same classes."""
        return replace(self, entries=[self.entries[i] for i in indices], problems=list(self.problems))

    def with_classes(self, classes: Sequence[str]) -> DatasetSource:
        """The same entries indexed by another class list, e.g. the training split's
        (a validation split may lack a class, which would shift sorted indices)."""
        return replace(self, classes=list(classes), problems=list(self.problems))

    # -- checking ------------------------------------------------------------
    def check(self, probe: bool = False, *, workers: int = 1, log: bool = True) -> tuple[DatasetSource, list[Problem]]:
        """Drop entries whose file is missing (or, with ``probe``, cannot be opened).

        Returns the source of the usable entries and the list of ``(path, reason)``
        problems; a single warning summarises them. With ``probe=True`` each kept
        entry gets its ``duration`` and ``fps`` from :func:`falv.video.probe`.
        """
        results = _map(lambda e: _check_entry(e, probe), self.entries, workers)
        kept: list[VideoEntry] = []
        problems: list[Problem] = []
        for entry, outcome in zip(self.entries, results):
            if isinstance(outcome, Problem):
                problems.append(outcome)
            else:
                kept.append(outcome)
        if log:
            log_problems(problems, total=len(self.entries), what=self.name or self.kind)
        return replace(self, entries=kept, problems=list(self.problems) + problems), problems

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "multilabel": self.multilabel,
            "classes": list(self.classes),
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = None) -> str:
        """The source as JSON (written to ``path`` too when given); :func:`load_source` reads it back."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSource:
        try:
            return cls(
                entries=[VideoEntry.from_dict(e) for e in d["entries"]],
                classes=list(d["classes"]),
                multilabel=bool(d.get("multilabel", False)),
                kind=str(d.get("kind", "json")),
                name=str(d.get("name", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"not a saved falv dataset source: {exc!r}") from exc

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> DatasetSource:
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = _read_text(Path(path_or_text))
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path_or_text}: invalid JSON ({exc})") from exc


def log_problems(problems: Sequence[Problem], total: int | None = None, what: str = "dataset", limit: int = 10) -> None:
    """Log one warning listing (up to ``limit``) skipped videos and the reasons."""
    if not problems:
        return
    of = f" of {total}" if total is not None else ""
    shown = "; ".join(f"{p.path} ({p.reason})" for p in problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    logger.warning("%s: skipping %d%s videos: %s%s", what, len(problems), of, shown, more)


def _check_entry(entry: VideoEntry, probe: bool) -> VideoEntry | Problem:
    if not os.path.isfile(entry.path):
        return Problem(entry.path, "not_found: no such file")
    if not probe:
        return entry
    from falv.video import probe as probe_video  # lazy: sources stay decoder-free

    try:
        info = probe_video(entry.path)
    except FalvError as exc:
        code = getattr(exc, "code", type(exc).__name__)
        return Problem(entry.path, f"{code}: {getattr(exc, 'detail', None) or exc}")
    except Exception as exc:  # a decoder bug must not stop a whole check
        return Problem(entry.path, f"{type(exc).__name__}: {exc}")
    duration = _opt_float(getattr(info, "duration", None))
    num_frames = getattr(info, "num_frames", None)
    if not duration or duration <= 0 or (num_frames is not None and num_frames <= 0):
        return Problem(entry.path, "no_decodable_frame: the video has no frames")
    if entry.start is not None and entry.start >= duration:
        return Problem(entry.path, f"segment starts at {entry.start:g}s after the end ({duration:g}s)")
    return replace(entry, duration=duration, fps=_opt_float(getattr(info, "fps", None)))


def _map(fn: Any, items: Sequence[Any], workers: int) -> list[Any]:
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


# -- class lists --------------------------------------------------------------
def save_classes(path: str | os.PathLike[str], classes: Sequence[str]) -> None:
    """Write a class list, one name per line (``labels.txt``)."""
    bad = [c for c in classes if "\n" in c or c != c.strip() or not c]
    if bad:
        raise DatasetError(f"class names cannot be empty, contain newlines or surrounding spaces: {bad!r}")
    Path(path).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")


def load_classes(path: str | os.PathLike[str]) -> list[str]:
    """Read a class list written by :func:`save_classes` (blank lines ignored).

    A ``classInd.txt``-style ``"<number> <name>"`` file is accepted too, ordered by number.
    """
    lines = [ln.strip() for ln in _read_text(Path(path)).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DatasetError(f"{path}: empty class list", code="empty")
    numbered = [re.fullmatch(r"(\d+)\s+(.+)", ln) for ln in lines]
    if len(lines) > 1 and all(numbered):
        pairs = sorted((int(m.group(1)), m.group(2).strip()) for m in numbered if m)
        return [name for _, name in pairs]
    return lines


# -- folder per class ----------------------------------------------------------
def from_folder(
    root: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> DatasetSource:
    """``root/<class>/<video>``: every non-hidden subfolder is a class (sorted), videos found recursively.

    A ``labels.txt`` in ``root`` (or ``classes``) fixes the class order; folders
    not in it are an error so that a typo does not silently create a class. A
    ``labels.txt`` one level up that names every class folder is used too (the
    synthetic set's ``OUT/labels.txt`` for ``OUT/videos/<class>/``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory", code="not_found")
    exts = {e.lower() for e in extensions}
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = _folder_classes(root, dirs)
    entries = []
    for name in dirs:
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in exts:
                    entries.append(VideoEntry(os.path.join(dirpath, fn), (name,)))
    if not entries:
        raise DatasetError(f"{root}: no videos found in class folders ({', '.join(sorted(exts))})", code="empty")
    return DatasetSource(entries, list(classes), multilabel=False, kind="folder", name=str(root))


# -- CSV / TSV / space-separated lists ------------------------------------------
def from_list(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    labels_file: str | os.PathLike[str] | None = None,
    multilabel: bool | None = None,
) -> DatasetSource:
    """Read ``path label[,label...]`` rows (comma, tab or whitespace separated).

    - a header row (``path,label`` ...) is skipped; blank lines and ``#`` comments too;
    - comma rows: every field after the path is a label (CSV quoting honoured);
      tab rows: every tab field; whitespace rows: every token. Inside one field,
      ``;`` and ``|`` also separate labels (and ``,`` in whitespace rows);
    - relative paths are resolved against ``root`` or else the list's folder;
    - the class order comes from ``labels_file`` or a ``labels.txt`` beside the
      list, else the sorted label names. Integer labels are class indices into
      that file when there is one;
    - the source is multi-label when any row has more than one label (or when
      ``multilabel=True``).
    """
    path = Path(path)
    text = _read_text(path)
    base = Path(root) if root is not None else path.parent
    rows = _parse_rows(text, path)
    if not rows:
        raise DatasetError(f"{path}: no rows", code="empty")
    label_path = Path(labels_file) if labels_file is not None else _find_label_file(path.parent)
    classes = load_classes(label_path) if label_path is not None else None
    pairs = [(p, labs) for p, labs, _ in rows]
    if classes is not None:
        known = set(classes)
        # "a.mp4 playing guitar": one class with a space, not two labels
        pairs = [(p, [rest] if rest in known else labs) for p, labs, rest in rows]
        if not all(_is_int(x) for x in classes) and all(_is_int(lab) for _, labs in pairs for lab in labs):
            pairs = [(p, [_class_at(classes, int(lab), path) for lab in labs]) for p, labs in pairs]
    entries = [VideoEntry(_resolve(base, p), tuple(dict.fromkeys(labs))) for p, labs in pairs]
    if classes is None:
        names = {lab for e in entries for lab in e.labels}
        key = (lambda s: int(s)) if names and all(_is_int(n) for n in names) else (lambda s: s)
        classes = sorted(names, key=key)
    if multilabel is None:
        multilabel = any(len(e.labels) > 1 for e in entries)
    return DatasetSource(entries, classes, multilabel=multilabel, kind="list", name=str(path))


def _parse_rows(text: str, path: Path) -> list[tuple[str, list[str], str | None]]:
    """``(path, labels, rest)`` per row; ``rest`` is the raw text after the path in
    whitespace rows (a class name with spaces, when a class list says so)."""
    rows: list[tuple[str, list[str], str | None]] = []
    first = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rest = None
        if "\t" in line:
            fields = [f.strip() for f in line.split("\t")]
            labels = [x for f in fields[1:] for x in re.split(r"[;|]", f)]
        elif "," in line and not _looks_space_separated(line):
            fields = [f.strip() for f in next(csv.reader(io.StringIO(line), skipinitialspace=True))]
            labels = [x for f in fields[1:] for x in re.split(r"[;|]", f)]
        else:
            fields = line.split(None, 1)
            rest = fields[1].strip() if len(fields) > 1 else None
            labels = re.split(r"[\s;|,]+", rest or "")
        if not fields or not fields[0]:
            raise DatasetError(f"{path}:{lineno}: no path in row {line!r}")
        if first and fields[0].strip().lower() in _HEADER_PATH_NAMES:
            first = False
            continue  # a header row
        first = False
        rows.append((fields[0], [x.strip() for x in labels if x.strip()], rest))
    return rows


def _looks_space_separated(line: str) -> bool:
    # "dir/a.mp4 cat,dog": the first whitespace comes before the first comma and the
    # path part has a video extension. Paths with commas but no spaces stay CSV.
    head = line.split(None, 1)[0]
    return " " in line.strip() and "," not in head and os.path.splitext(head)[1].lower() in VIDEO_EXTENSIONS


def _class_at(classes: Sequence[str], i: int, path: Path) -> str:
    if not 0 <= i < len(classes):
        raise DatasetError(f"{path}: label index {i} outside the {len(classes)} classes", code="unknown_label")
    return classes[i]


# -- Kinetics -----------------------------------------------------------------
def from_kinetics(
    csv_path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    labels_file: str | os.PathLike[str] | None = None,
) -> DatasetSource:
    """Read a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Videos are looked up anywhere under ``root`` (default: the CSV's folder) by
    file name, so the usual layouts all work:

    - ``<root>[/<split>]/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the
      ActivityNet crawler; labels with spaces or underscores),
    - ``<root>[/<split>]/<youtube_id>_<start:06d>_<end:06d>.mp4`` (cvdfoundation's flat folders),
    - ``<root>/.../<youtube_id>.mp4`` (full, untrimmed videos).

    A file named after the segment is already trimmed, so its entry covers the
    whole file; a full ``<youtube_id>.*`` video gets ``start``/``end`` =
    ``time_start``/``time_end``. Rows whose video is not found keep the expected
    crawler path, so :meth:`DatasetSource.check` lists them as missing. Test-split
    CSVs without a ``label`` column give unlabelled entries.
    """
    csv_path = Path(csv_path)
    text = _read_text(csv_path)
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip() for c in reader.fieldnames or ()}
    if not _KINETICS_COLUMNS <= columns:
        raise DatasetError(
            f"{csv_path}: not a Kinetics CSV (needs columns {sorted(_KINETICS_COLUMNS)}, has {sorted(columns)})"
        )
    base = Path(root) if root is not None else csv_path.parent
    index = _index_videos(base)
    entries = []
    labels_seen: set[str] = set()
    for lineno, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None and not isinstance(v, list)}
        if split is not None and row.get("split") and not _same_split(row["split"], split):
            continue
        try:
            yid, t0, t1 = row["youtube_id"], float(row["time_start"]), float(row["time_end"])
        except ValueError as exc:
            raise DatasetError(f"{csv_path}:{lineno}: bad time in row {row}") from exc
        label = row.get("label", "")
        labels = (label,) if label else ()
        labels_seen.update(labels)
        trimmed = f"{yid}_{int(t0):06d}_{int(t1):06d}"
        found = _pick(index.get(trimmed, ()), label, row.get("split"))
        start = end = None
        if found is None:
            found = _pick(index.get(yid, ()), label, row.get("split"))
            if found is not None:
                start, end = t0, t1
        if found is None:  # the ActivityNet crawler's path, reported missing by check()
            found = str(base / (label or row.get("split") or "test") / f"{trimmed}.mp4")
        entries.append(VideoEntry(found, labels, start, end))
    if not entries:
        raise DatasetError(f"{csv_path}: no rows" + (f" for split {split!r}" if split else ""), code="empty")
    label_path = Path(labels_file) if labels_file is not None else _find_label_file(csv_path.parent)
    classes = load_classes(label_path) if label_path is not None else sorted(labels_seen)
    return DatasetSource(entries, classes, multilabel=False, kind="kinetics", name=str(csv_path))


def _index_videos(root: Path) -> dict[str, list[str]]:
    """``stem -> paths`` of every video under ``root`` (one walk, not one stat per row)."""
    index: dict[str, list[str]] = {}
    if not root.is_dir():
        return index
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            stem, ext = os.path.splitext(fn)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, []).append(os.path.join(dirpath, fn))
    return index


def _pick(paths: Sequence[str], label: str, split: str | None) -> str | None:
    """Among files with the right name, prefer the one in the label's (and split's) folder."""
    if not paths:
        return None
    if len(paths) == 1:
        return paths[0]
    names = {label, label.replace(" ", "_"), label.replace("_", " ")} - {""}

    def score(p: str) -> tuple[int, int, str]:
        parts = Path(p).parts
        in_label = int(len(parts) > 1 and parts[-2] in names)
        in_split = int(bool(split) and any(_same_split(x, split or "") for x in parts[:-1]))
        return (-in_label, -in_split, p)

    return min(paths, key=score)


def _same_split(a: str, b: str) -> bool:
    alias = {"validate": "val", "validation": "val", "valid": "val", "training": "train", "testing": "test"}
    a, b = a.strip().lower(), b.strip().lower()
    return alias.get(a, a) == alias.get(b, b)


# -- UCF101 -------------------------------------------------------------------
def from_ucf101(
    class_ind: str | os.PathLike[str],
    *,
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> DatasetSource:
    """UCF101 (and HMDB-style lists in the same format).

    ``class_ind`` is ``classInd.txt`` or a folder holding it (directly or in
    ``ucfTrainTestlist/``). ``split`` is ``train``/``test`` with an optional fold
    number (``train2``, ``testlist03``; default fold 1) or a list file's path.
    Train lists carry a 1-based class number that must agree with the folder;
    test lists have none and take the class from the folder. Videos are looked
    up under ``root`` (default: the first of the list's folder, its parent,
    ``UCF-101``/``UCF101`` beside it that holds the first video).
    """
    class_ind = Path(class_ind)
    if class_ind.is_dir():
        candidates = (class_ind / "classInd.txt", class_ind / "ucfTrainTestlist" / "classInd.txt")
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DatasetError(f"{class_ind}: no classInd.txt", code="not_found")
        class_ind = found
    classes = load_classes(class_ind)
    list_file = _ucf_list_file(class_ind.parent, split or "train")
    # case-insensitive lookup: UCF101 spells "HandStandPushups" in file names, "HandstandPushups" in folders
    lower = {c.lower(): c for c in classes}
    rows: list[tuple[str, str]] = []
    for lineno, line in enumerate(_read_text(list_file).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else ""
        cls = lower.get(folder.lower())
        if len(parts) > 1:
            if not _is_int(parts[1]):
                raise DatasetError(f"{list_file}:{lineno}: expected '<path> <class number>', got {line!r}")
            by_number = _class_at(classes, int(parts[1]) - 1, list_file)
            if cls is not None and cls != by_number:
                raise DatasetError(
                    f"{list_file}:{lineno}: class number {parts[1]} ({by_number}) disagrees with folder {folder!r}"
                )
            cls = by_number
        if cls is None:
            raise DatasetError(f"{list_file}:{lineno}: cannot tell the class of {rel!r}", code="unknown_label")
        rows.append((rel, cls))
    if not rows:
        raise DatasetError(f"{list_file}: no rows", code="empty")
    base = Path(root) if root is not None else _ucf_video_root(class_ind.parent, rows[0][0])
    entries = [VideoEntry(_resolve(base, rel), (cls,)) for rel, cls in rows]
    return DatasetSource(entries, classes, multilabel=False, kind="ucf101", name=str(list_file))


def _ucf_list_file(folder: Path, split: str) -> Path:
    candidate = Path(split)
    if candidate.suffix == ".txt":
        path = candidate if candidate.is_absolute() or candidate.exists() else folder / candidate
        if not path.is_file():
            raise DatasetError(f"{path}: split list not found", code="not_found")
        return path
    m = re.fullmatch(r"(train|test|val)(?:list)?_?0?(\d)?", split.strip().lower())
    if not m:
        raise DatasetError(f"UCF101 split must be train[1-3], test[1-3] or a list file, got {split!r}")
    kind = "test" if m.group(1) in ("test", "val") else "train"
    path = folder / f"{kind}list0{m.group(2) or 1}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found", code="not_found")
    return path


def _ucf_video_root(folder: Path, first: str) -> Path:
    candidates = [folder, folder.parent, folder.parent / "UCF-101", folder.parent / "UCF101", folder / "UCF-101"]
    for c in candidates:
        if (c / first).exists():
            return c
    for c in candidates:
        if (c / first.split("/")[0]).is_dir():
            return c
    return folder.parent if folder.name == "ucfTrainTestlist" else folder


# -- Something-Something v2 ---------------------------------------------------------
def from_ssv2(
    spec: str | os.PathLike[str],
    *,
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
    extension: str = ".webm",
) -> DatasetSource:
    """Something-Something v2: ``labels.json`` + ``train.json``/``validation.json``/``test.json``.

    ``spec`` is the annotation folder, ``labels.json`` (with ``split``) or a split
    file. ``labels.json`` maps class name to index (``{"Approaching something
    with your camera": "0"}``); a split file lists ``{"id", "label", "template",
    "placeholders"}``. The class is the template without brackets
    (``"Holding [something] next to [something]"`` -> ``"Holding something next
    to something"``), as in the SlowFast and mmaction loaders. Videos are
    ``<root>/<id>.webm`` (root defaults to ``20bn-something-something-v2`` beside
    the annotations, else the annotation folder); another extension of the same id
    is used when the ``.webm`` is absent.
    """
    spec = Path(spec)
    folder = spec if spec.is_dir() else spec.parent
    labels_path = folder / "labels.json"
    if spec.is_file() and spec.name != "labels.json":
        split_path = spec
    else:
        names = {"train": ["train.json"], "val": ["validation.json", "val.json"], "test": ["test.json"]}
        key = "train" if split is None else _canonical_split(split)
        if key not in names:
            raise DatasetError(f"SSv2 split must be train, validation or test, got {split!r}")
        split_path = next((folder / n for n in names[key] if (folder / n).is_file()), folder / names[key][0])
    if not labels_path.is_file():
        raise DatasetError(
            f"{labels_path}: SSv2 labels.json not found (needed for {split_path.name})", code="not_found"
        )
    if not split_path.is_file():
        raise DatasetError(f"{split_path}: SSv2 split file not found", code="not_found")
    mapping = _read_json(labels_path)
    if not isinstance(mapping, dict) or not all(_is_int(str(v)) for v in mapping.values()):
        raise DatasetError(f"{labels_path}: expected {{class name: index}}")
    classes = [name for name, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]
    lower = {c.lower(): c for c in classes}
    items = _read_json(split_path)
    if not isinstance(items, list) or not all(isinstance(x, dict) and "id" in x for x in items):
        raise DatasetError(f"{split_path}: expected a list of {{'id': ..., 'template': ...}}")
    video_dirs = (folder / "20bn-something-something-v2", folder.parent / "20bn-something-something-v2")
    base = Path(root) if root is not None else next((p for p in video_dirs if p.is_dir()), folder)
    available = _list_stems(base)
    entries = []
    for item in items:
        vid = str(item["id"])
        labels: tuple[str, ...] = ()
        template = item.get("template")
        if template:
            name = ssv2_class_name(template)
            cls = name if name in mapping else lower.get(name.lower())
            if cls is None:
                raise DatasetError(
                    f"{split_path}: template {template!r} of video {vid} not in labels.json", code="unknown_label"
                )
            labels = (cls,)
        fname = vid + extension
        if fname not in available[1]:
            fname = available[0].get(vid, fname)
        entries.append(VideoEntry(str(base / fname), labels))
    if not entries:
        raise DatasetError(f"{split_path}: no videos", code="empty")
    return DatasetSource(entries, classes, multilabel=False, kind="ssv2", name=str(split_path))


def ssv2_class_name(template: str) -> str:
    """``"Putting [something] onto [something]"`` -> ``"Putting something onto something"``."""
    return template.replace("[", "").replace("]", "").strip()


def _list_stems(folder: Path) -> tuple[dict[str, str], set[str]]:
    try:
        names = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS]
    except OSError:
        return {}, set()
    return {os.path.splitext(n)[0]: n for n in sorted(names)}, set(names)


def _canonical_split(split: str) -> str:
    s = split.strip().lower()
    return {"validation": "val", "valid": "val", "validate": "val", "training": "train", "testing": "test"}.get(s, s)


# -- detection ------------------------------------------------------------------
def load_source(
    spec: str | os.PathLike[str] | DatasetSource,
    root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    **kwargs: Any,
) -> DatasetSource:
    """Read a dataset source, detecting its layout.

    - a :class:`DatasetSource` is returned as is;
    - a directory: ``classInd.txt`` (or ``ucfTrainTestlist/``) -> UCF101;
      ``labels.json`` + ``train.json``/``validation.json`` -> SSv2; with ``split``,
      a ``<split>.csv``/``.tsv``/``.txt`` list inside (the synthetic set's layout)
      or a ``<split>/`` class-folder tree; else folder-per-class;
    - ``.csv`` with the Kinetics header -> Kinetics; ``classInd.txt`` -> UCF101;
    - ``.json``: a saved source (:meth:`DatasetSource.to_json`) or SSv2 annotations;
    - any other file -> a CSV/TSV/space-separated list.

    ``root`` is where relative video paths start; ``split`` picks a split where
    the layout has several. Extra keyword arguments go to the loader. Anything
    unreadable raises :class:`DatasetError`.
    """
    if isinstance(spec, DatasetSource):
        return spec
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory", code="not_found")
    if path.is_dir():
        if (path / "classInd.txt").is_file() or (path / "ucfTrainTestlist" / "classInd.txt").is_file():
            return from_ucf101(path, split=split, root=root, **kwargs)
        if (path / "labels.json").is_file() and is_fiftyone_temporal_labels(_read_json(path / "labels.json")):
            return from_fiftyone(path, **kwargs)
        ssv2_splits = ("train.json", "validation.json", "test.json")
        if (path / "labels.json").is_file() and any((path / n).is_file() for n in ssv2_splits):
            return from_ssv2(path, split=split, root=root, **kwargs)
        if split is not None:
            for ext in (".csv", ".tsv", ".txt"):
                candidate = path / f"{split}{ext}"
                if candidate.is_file():
                    return load_source(candidate, root=root if root is not None else path, **kwargs)
            if (path / split).is_dir():
                return from_folder(path / split, **kwargs)
            raise DatasetError(f"{path}: no {split}.csv list or {split}/ folder for split {split!r}", code="not_found")
        lists = sorted(p.name for p in path.iterdir() if p.suffix in (".csv", ".tsv") and p.is_file())
        if lists and not any(p.is_dir() and p.name in _classes_of(path) for p in path.iterdir()):
            splits = ", ".join(os.path.splitext(n)[0] for n in lists)
            raise DatasetError(f"{path} holds split lists ({', '.join(lists)}): pass split= one of {splits}")
        return from_folder(path, **kwargs)
    name = path.name.lower()
    if name == "classind.txt":
        return from_ucf101(path, split=split, root=root, **kwargs)
    if name.endswith(".json"):
        data = _read_json(path)
        if isinstance(data, dict) and "entries" in data and "classes" in data:
            return DatasetSource.from_dict(data)
        ssv2_labels = isinstance(data, dict) and all(_is_int(str(v)) for v in data.values())
        ssv2_split = isinstance(data, list) and all(isinstance(x, dict) and "id" in x for x in data)
        if is_label_studio_export(data):
            return from_label_studio(path, root=root, **kwargs)
        if ssv2_labels or ssv2_split:
            return from_ssv2(path, split=split, root=root, **kwargs)
        raise DatasetError(
            f"{path}: JSON that is neither a saved falv source ({{'classes', 'entries'}}), a Label Studio "
            "JSON export, nor Something-Something v2 annotations (labels.json, train.json)"
        )
    if name.endswith(".csv") and _has_kinetics_header(path):
        return from_kinetics(path, root=root, split=split, **kwargs)
    return from_list(path, root=root, **kwargs)


def is_label_studio_export(data: Any) -> bool:
    """A Label Studio ``JSON`` export (tasks with ``data`` and ``annotations``) or ``JSON_MIN``
    export (one flat record per annotation, with ``annotation_id``)."""
    if not (isinstance(data, list) and data and all(isinstance(t, dict) for t in data)):
        return False
    return (all("data" in t and ("annotations" in t or "completions" in t) for t in data)
            or all("annotation_id" in t and "id" in t for t in data))


def is_label_studio_min_export(data: Any) -> bool:
    """A Label Studio ``JSON_MIN`` export: flat records with ``id`` (task), ``annotation_id``."""
    return (isinstance(data, list) and bool(data) and all(isinstance(t, dict) for t in data)
            and all("annotation_id" in t and "id" in t and "annotations" not in t for t in data))


def from_label_studio(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    video_key: str | None = None,
    choices_name: str = "label",
    probe_fps: bool = True,
) -> DatasetSource:
    """A Label Studio ``JSON`` or ``JSON_MIN`` export (``/api/projects/{id}/export?exportType=JSON``
    or ``...=JSON_MIN``).

    Per task, one annotation counts: the newest (by ``updated_at``, then ``created_at``,
    then its id) that is not cancelled (skipped), among the ground-truth ones when any is
    flagged (``JSON`` only: ``JSON_MIN`` carries no ground-truth flag and leaves cancelled
    annotations out). Its ``choices`` are the video's labels (one entry for the whole
    video); each ``timelinelabels`` region becomes a trimmed entry (``start``/``end``
    seconds, from its 1-based inclusive frame range at the task's ``fps``, else the
    video's own probed frame rate). Tasks without a usable annotation are skipped and
    counted (logged, and listed in the source's ``problems``).

    In ``JSON_MIN`` the results sit under their control's name: a single choice is a
    bare string, so the video-level ``<Choices>`` is read from ``choices_name``
    (falv's config calls it ``label``); ``{"choices": [...]}`` values and
    ``timelinelabels`` regions are recognised under any name.

    The video is ``data.path`` when present (falv's own tasks carry it), else the task's
    video URL (``data[video_key]``, default the first of ``video``/``movie``/``url`` or
    the only string value): a local path, or Label Studio's local-files URL
    ``/data/local-files/?d=REL`` resolved against ``root`` (the server's
    ``LOCAL_FILES_DOCUMENT_ROOT``; default: ``$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` or
    ``$LOCAL_FILES_DOCUMENT_ROOT`` when set, then the export's folder). Other URLs cannot
    be read here and are skipped.
    """
    path = Path(path)
    data = _read_json(path)
    if not is_label_studio_export(data):
        raise DatasetError(f"{path}: not a Label Studio JSON or JSON_MIN export (a list of tasks with data and "
                           "annotations, or of records with id and annotation_id)")
    if root is not None:
        bases = [Path(root)]
    else:  # the document root Label Studio serves local files from, as its own variables say
        env = [os.environ.get(k) for k in ("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "LOCAL_FILES_DOCUMENT_ROOT")]
        bases = [Path(e) for e in env if e] + [path.parent]
    tasks = _min_export_tasks(data, choices_name) if is_label_studio_min_export(data) else data
    entries: list[VideoEntry] = []
    skipped: dict[str, list[str]] = {}

    def skip(reason: str, task: dict[str, Any]) -> None:
        skipped.setdefault(reason, []).append(f"task {task.get('id', '?')}")

    for task in tasks:
        annotation = _chosen_annotation(task.get("annotations") or task.get("completions") or [])
        if annotation is None:
            skip("no annotation (or only cancelled ones)", task)
            continue
        task_data = task.get("data") if isinstance(task.get("data"), dict) else {}
        video = next((v for v in (_ls_video_path(task_data, b, video_key) for b in bases) if v), None)
        if video is None:
            skip("video URL not readable here", task)
            continue
        labels: list[str] = []
        regions: list[tuple[str, int, int]] = []
        try:
            for item in annotation.get("result") or []:
                value = item.get("value") or {}
                if item.get("type") == "choices":
                    labels += [str(c) for c in value.get("choices") or []]
                elif item.get("type") == "timelinelabels":
                    for rng in value.get("ranges") or []:
                        for label in value.get("timelinelabels") or []:
                            regions.append((str(label), int(rng["start"]), int(rng["end"])))
        except (AttributeError, KeyError, TypeError, ValueError):
            skip("annotation result not understood", task)
            continue
        if labels:
            entries.append(VideoEntry(video, tuple(dict.fromkeys(labels))))
        if regions:
            fps = _opt_float(task_data.get("fps")) or (_probe_fps(video) if probe_fps else None)
            if not fps:
                skip("timeline regions without a frame rate", task)
            else:
                entries += [VideoEntry(video, (label,), start=(first - 1) / fps, end=last / fps)
                            for label, first, last in regions]
        if not labels and not regions:
            skip("annotation without choices or timeline labels", task)
    problems = []
    for reason, which in skipped.items():
        shown = ", ".join(which[:5]) + (" ..." if len(which) > 5 else "")
        logger.warning("%s: %d task(s) skipped: %s (%s)", path, len(which), reason, shown)
        problems += [Problem(f"{path}#{w}", reason) for w in which]
    if not entries:
        raise DatasetError(f"{path}: no annotated task with a readable video", code="empty")
    label_path = _find_label_file(path.parent)
    classes = load_classes(label_path) if label_path is not None else sorted({l for e in entries for l in e.labels})
    multilabel = any(len(e.labels) > 1 for e in entries)
    return DatasetSource(entries, classes, multilabel=multilabel, kind="label-studio", name=str(path),
                         problems=problems)


#: JSON_MIN keys that are annotation metadata, not results or task data.
_LS_MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement",
                "drafts", "predictions"}


def _min_export_tasks(records: Sequence[dict[str, Any]], choices_name: str) -> list[dict[str, Any]]:
    """``JSON_MIN`` records (one per annotation) regrouped as ``JSON``-like tasks."""
    tasks: dict[Any, dict[str, Any]] = {}
    for record in records:
        task = tasks.setdefault(record["id"], {"id": record["id"], "data": {}, "annotations": []})
        result: list[dict[str, Any]] = []
        for key, value in record.items():
            if key in _LS_MIN_META:
                continue
            items = value if isinstance(value, list) else [value]
            found = False
            for item in items:
                if isinstance(item, dict) and "timelinelabels" in item:
                    result.append({"from_name": key, "type": "timelinelabels", "value": item})
                    found = True
                elif isinstance(item, dict) and "choices" in item:
                    result.append({"from_name": key, "type": "choices", "value": item})
                    found = True
            if not found and key == choices_name and (isinstance(value, str) or (
                    isinstance(value, list) and value and all(isinstance(v, str) for v in value))):
                result.append({"from_name": key, "type": "choices",
                               "value": {"choices": [value] if isinstance(value, str) else list(value)}})
                found = True
            if not found:
                task["data"][key] = value
        task["annotations"].append({"id": record.get("annotation_id"), "created_at": record.get("created_at"),
                                    "updated_at": record.get("updated_at"), "result": result})
    return list(tasks.values())


def _chosen_annotation(annotations: Sequence[Any]) -> dict[str, Any] | None:
    usable = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    truth = [a for a in usable if a.get("ground_truth")]
    pool = truth or usable
    if not pool:
        return None
    return max(pool, key=lambda a: (str(a.get("updated_at") or ""), str(a.get("created_at") or ""),
                                    a.get("id") if isinstance(a.get("id"), int) else 0))


def _ls_video_path(data: dict[str, Any], base: Path, video_key: str | None) -> str | None:
    import urllib.parse

    if isinstance(data.get("path"), str) and Path(data["path"]).is_file():
        return data["path"]
    if video_key is not None:
        url = data.get(video_key)
    else:
        url = next((data[k] for k in ("video", "movie", "url") if isinstance(data.get(k), str)), None)
        if url is None:
            strings = [v for v in data.values() if isinstance(v, str)]
            url = strings[0] if len(strings) == 1 else None
    if not isinstance(url, str) or not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.path.startswith("/data/local-files/"):
        rel = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
        candidate = base / rel
        return str(candidate) if rel and candidate.is_file() else None
    if parts.scheme in ("", "file") and Path(urllib.parse.unquote(parts.path)).is_file():
        return urllib.parse.unquote(parts.path)
    return None


def is_fiftyone_temporal_labels(data: Any) -> bool:
    """The ``labels.json`` of a ``FiftyOneTemporalDetectionDataset``: ``{"classes", "labels": {uuid: [...]}}``."""
    if not (isinstance(data, dict) and isinstance(data.get("labels"), dict)):
        return False
    items = [d for dets in data["labels"].values() if isinstance(dets, list) for d in dets]
    return all(isinstance(d, dict) and "label" in d and ("support" in d or "timestamps" in d) for d in items) and all(
        isinstance(v, list) or v is None for v in data["labels"].values())


def from_fiftyone(folder: str | os.PathLike[str], *, probe_fps: bool = True) -> DatasetSource:
    """A FiftyOne ``FiftyOneTemporalDetectionDataset`` export (``dataset.export(export_dir,
    dataset_type=fo.types.FiftyOneTemporalDetectionDataset)``), or falv's own ``fiftyone``
    format.

    ``labels.json`` is ``{"classes": [...] | null, "labels": {uuid: [{"label": index or
    name, "support": [first, last]} | {"label", "timestamps": [start, stop]}]}}``; the
    videos are ``data/<uuid>.<ext>`` or listed in a ``data.json`` manifest
    (``{"<uuid>.<ext>": path}``). Every temporal detection becomes a trimmed entry:
    ``support`` (1-based inclusive frames) gives ``[(first - 1) / fps, last / fps]`` at
    the video's probed frame rate, ``timestamps`` are seconds. Samples whose video is
    missing, or whose frames cannot be timed, are skipped and counted.
    """
    folder = Path(folder)
    data = _read_json(folder / "labels.json")
    if not is_fiftyone_temporal_labels(data):
        raise DatasetError(f"{folder}: labels.json is not a FiftyOne temporal detection dataset's")
    classes = data.get("classes")
    manifest: dict[str, str] = {}
    if (folder / "data.json").is_file():
        raw = _read_json(folder / "data.json")
        if not isinstance(raw, dict):
            raise DatasetError(f"{folder / 'data.json'}: not a manifest of uuid -> video path")
        manifest = {os.path.splitext(str(k))[0]: _resolve(folder, str(v)) for k, v in raw.items()}
    elif (folder / "data").is_dir():
        manifest = {p.stem: str(p) for p in sorted((folder / "data").iterdir()) if p.is_file()}
    entries: list[VideoEntry] = []
    problems: list[Problem] = []
    for uuid, detections in data["labels"].items():
        video = manifest.get(uuid)
        if video is None or not Path(video).is_file():
            problems.append(Problem(video or f"{folder}#{uuid}", "video not found"))
            continue
        fps: float | None = None
        for det in detections or []:
            label = det["label"]
            if isinstance(label, int) and not isinstance(label, bool):
                if not (isinstance(classes, list) and 0 <= label < len(classes)):
                    problems.append(Problem(video, f"label index {label} outside the classes"))
                    continue
                label = classes[label]
            if "timestamps" in det:
                start, end = (float(x) for x in det["timestamps"])
            else:
                if fps is None:
                    fps = _probe_fps(video) if probe_fps else None
                if not fps:
                    problems.append(Problem(video, "frame support without a known frame rate"))
                    continue
                first, last = (int(x) for x in det["support"])
                start, end = (first - 1) / fps, last / fps
            entries.append(VideoEntry(video, (str(label),), start=start, end=end))
    if problems:
        shown = ", ".join(f"{p.path} ({p.reason})" for p in problems[:5])
        logger.warning("%s: %d detection(s) or sample(s) skipped: %s", folder, len(problems), shown)
    if not entries:
        raise DatasetError(f"{folder}: no temporal detection with a readable video", code="empty")
    if isinstance(classes, list) and classes:
        names = [str(c) for c in classes]
    else:
        label_path = _find_label_file(folder)
        names = load_classes(label_path) if label_path else sorted({l for e in entries for l in e.labels})
    return DatasetSource(entries, names, kind="fiftyone", name=str(folder), problems=problems)


def _probe_fps(path: str) -> float | None:
    from falv.video import VideoError, probe

    try:
        return probe(path, decode_first_frame=False).fps or None
    except VideoError:
        return None


def _folder_classes(root: Path, dirs: Sequence[str]) -> list[str]:
    label_file = _find_label_file(root)
    if label_file is not None:
        return load_classes(label_file)
    parent_file = _find_label_file(root.parent)
    if parent_file is not None:
        parent_classes = load_classes(parent_file)
        if set(dirs) <= set(parent_classes):
            return parent_classes
    return list(dirs)


def _classes_of(folder: Path) -> set[str]:
    label_file = _find_label_file(folder)
    return set(load_classes(label_file)) if label_file else set()


def _has_kinetics_header(path: Path) -> bool:
    first = _read_text(path).split("\n", 1)[0]
    return _KINETICS_COLUMNS <= {c.strip().lower() for c in first.split(",")}


# -- small helpers ----------------------------------------------------------------
def _find_label_file(folder: Path) -> Path | None:
    return next((folder / n for n in LABEL_FILE_NAMES if (folder / n).is_file()), None)


def _resolve(base: Path, p: str) -> str:
    p = os.path.expanduser(p)
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file", code="not_found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from exc


def _is_int(s: str) -> bool:
    return bool(re.fullmatch(r"\d+", s.strip()))


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)
