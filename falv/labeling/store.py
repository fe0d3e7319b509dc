"""The native output, ``labels.jsonl``: appended one record at a time, resumable.

Each record is one line written with a single ``write`` on an ``O_APPEND``
descriptor and fsynced, so a run killed at any moment (SIGKILL included) leaves
whole records plus at most one partial last line. Opening the store again drops
that partial line, reads which inputs are done, and appends after them: a
restarted run loses nothing and duplicates nothing. Inputs whose record is an
error are not done: a rerun tries them again and appends a newer record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LABELS_NAME = "labels.jsonl"


def record_key(path: str) -> str:
    """The identity of an input across runs: its absolute, normalised path."""
    return os.path.normpath(os.path.abspath(path))


class RecordStore:
    """Append-only JSONL of records with resume support."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self._done: dict[str, dict[str, Any]] = {}
        self.dropped_partial_line = False
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

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
            if line.strip():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    self.dropped_partial_line = True  # never written by falv; skip it
        # Only successes count as done: a rerun retries inputs that failed (a later record
        # for the same input supersedes the earlier one; see falv.labeling.export).
        self._done = {record_key(r["path"]): r for r in self.records if "path" in r and not r.get("error")}

    def done(self, path: str) -> bool:
        return record_key(path) in self._done

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise OSError(f"short write to {self.path}")
        os.fsync(self._fd)
        self.records.append(record)
        if not record.get("error"):
            self._done[record_key(record["path"])] = record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
