"""The native output, ``labels.jsonl``: one record per input, appended during a run, compacted at its end.

During a run each record is one line written with a single ``write`` on an
``O_APPEND`` descriptor and fsynced, so a run killed at any moment (SIGKILL
included) leaves whole records plus at most one partial last line: nothing
already written is ever lost. Opening the store again drops that partial line
and reads which inputs are done.

When the store is closed (the run ended, normally or not) the file is
**compacted**: rewritten atomically (a temporary file, fsynced, renamed over it)
with exactly one record per input, the newest, in the order inputs were first
recorded. A retried failure therefore leaves no trace of its old record. A
crash during compaction leaves the previous file whole; the next run compacts it.

Which inputs count as done (skipped by a resumed run): those with a successful
record, and those whose failure is **deterministic** (:data:`DETERMINISTIC_ERRORS`:
the file is not a video, or has no video stream: the same bytes fail the same
way). Other failures (a timeout, a crashed decoder, a missing file, a corrupt
read...) are tried again; ``retry_failed=True`` (``falv label --retry-failed``)
tries every failure again.

One process writes a store at a time: it holds an advisory lock
(``flock``) on the output folder, and a second writer gets a
:class:`~falv.errors.RunError` naming the folder instead of racing the rewrite.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from falv.errors import RunError
from falv.hub.io import atomic_open

LABELS_NAME = "labels.jsonl"

#: Error codes that describe the file itself, not this attempt to read it: a resumed run
#: keeps these records instead of trying the input again (``retry_failed`` forces it).
DETERMINISTIC_ERRORS = frozenset({"not_a_video", "no_video_stream"})

log = logging.getLogger(__name__)


def record_key(path: str) -> str:
    """The identity of an input across runs: its absolute, normalised path."""
    return os.path.normpath(os.path.abspath(path))


def segment_key(path: str, segment: tuple[float, float] | list[float] | None = None) -> str:
    """The identity of an input that may be a segment of a file: :func:`record_key`, and
    ``#start-end`` for a segment (records of segments carry ``"segment": [start, end]``)."""
    key = record_key(path)
    if segment is None:
        return key
    end = "end" if segment[1] is None or segment[1] == float("inf") else f"{float(segment[1]):g}"
    return f"{key}#{float(segment[0]):g}-{end}"


def _key_of(record: dict[str, Any]) -> str:
    segment = record.get("segment")
    ok = isinstance(segment, list) and len(segment) == 2
    return segment_key(record["path"], segment if ok else None)


def newest_per_input(records: Iterable[Any]) -> list[Any]:
    """One record per input from ``records`` in the order they were made (dicts or
    :class:`~falv.labeling.records.LabelRecord`): the newest of each input, at the place of
    its input's first record. The rule of ``labels.jsonl``, for readers of any record list."""
    latest: dict[str, Any] = {}
    for record in records:
        latest[_key_of(record if isinstance(record, dict) else record.to_dict())] = record
    return list(latest.values())


def is_deterministic_failure(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a failure that would recur on the same file (see :data:`DETERMINISTIC_ERRORS`)."""
    error = record.get("error")
    return isinstance(error, dict) and error.get("type") in DETERMINISTIC_ERRORS


class RecordStore:
    """``labels.jsonl`` of one output folder: append records, ask what is done, compact on close.

    ``retry_failed``: no failure counts as done (by default deterministic ones do).
    ``compact``: rewrite the file with one record per input when closed (the default).
    """

    def __init__(self, path: str | os.PathLike, *, retry_failed: bool = False, compact: bool = True) -> None:
        self.path = Path(path)
        self.retry_failed = retry_failed
        self.compact_on_close = compact
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.latest: dict[str, dict[str, Any]] = {}  # key -> newest record, in first-recorded order
        self._lines: dict[str, bytes] = {}           # key -> that record's line, as written
        self._lines_on_disk = 0                      # record lines in the file (duplicates included)
        self._foreign = 0                            # lines that are not falv records (never dropped)
        self.dropped_partial_line = False
        self._fd = -1
        self._lock_fd = self._lock(self.path.parent)
        try:
            self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self._unlock()
            raise

    # -- reading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a partial last line from a killed run: drop it
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
            self.dropped_partial_line = True
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                self._foreign += 1  # not written by falv: kept, and the file is then left uncompacted
                continue
            self._remember(record, line + b"\n")
            self._lines_on_disk += 1

    def _remember(self, record: dict[str, Any], line: bytes) -> None:
        key = _key_of(record)
        self.latest[key] = record  # a later record replaces the earlier one, keeping its place
        self._lines[key] = line

    @property
    def records(self) -> list[dict[str, Any]]:
        """The newest record of every input, in the order inputs were first recorded."""
        return list(self.latest.values())

    def get(self, path: str, segment: tuple[float, float] | None = None) -> dict[str, Any] | None:
        """The newest record of ``path`` (of its ``segment``, if given), if any."""
        return self.latest.get(segment_key(path, segment))

    def done(self, path: str, segment: tuple[float, float] | None = None) -> bool:
        """Whether a resumed run skips ``path`` (its ``segment``): labelled, or failed
        deterministically (unless ``retry_failed``)."""
        record = self.get(path, segment)
        if record is None:
            return False
        if not record.get("error"):
            return True
        return not self.retry_failed and is_deterministic_failure(record)

    # -- writing ----------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (one ``write`` + fsync); it supersedes any earlier one of its input."""
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise OSError(f"short write to {self.path}")
        os.fsync(self._fd)
        self._remember(record, line)
        self._lines_on_disk += 1

    def compact(self) -> bool:
        """Rewrite the file atomically with one record per input (the newest); returns whether it
        was rewritten (not when it already holds one line per input). A file with lines that are
        not falv records is left as it is (with a warning) rather than losing them."""
        if self._foreign:
            log.warning("%s: %d line(s) are not falv records; the file was not compacted (one input may "
                        "have several records; readers take the newest)", self.path, self._foreign)
            return False
        if self._lines_on_disk == len(self.latest):
            return False
        with atomic_open(self.path, "wb") as handle:
            for line in self._lines.values():
                handle.write(line)
        self._lines_on_disk = len(self.latest)
        # later appends go to the new file (the descriptor still points at the replaced one)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return True

    def close(self) -> None:
        """Compact (unless ``compact=False``) and release the file and the folder's lock.

        A compaction that fails (e.g. a full disk) raises :class:`RunError`; the file is then
        left as it was, whole.
        """
        try:
            if self._fd >= 0 and self.compact_on_close:
                try:
                    self.compact()
                except OSError as exc:
                    raise RunError(f"cannot rewrite {self.path} with one record per input: {exc}") from exc
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._unlock()

    # -- one writer per folder --------------------------------------------------------------------
    @staticmethod
    def _lock(folder: Path) -> int:
        import fcntl

        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:  # pragma: no cover - a folder we cannot open is reported by the writes
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"{folder}: another falv run is writing {LABELS_NAME} here; wait for it "
                               "or choose another output folder") from None
            return -1  # a filesystem without flock: run unlocked
        return fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
