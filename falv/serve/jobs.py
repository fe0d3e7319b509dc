"""The server's job store: SQLite in the data dir, so that jobs outlive the process.

A job moves ``queued -> running -> done | failed``, or to ``cancelled``. Its record (the
``labels.jsonl`` record) and its final status are written in one transaction, so a
server killed at any moment (SIGKILL included) and started again on the same data dir
finds every job either finished (with its record) or still to do: :meth:`JobStore.recover`
puts jobs that were ``running`` back in the queue. Nothing is lost and nothing is done twice.

One connection guarded by a lock serves every thread (the request handlers and the
engine's thread); SQLite's WAL journal keeps readers from waiting on the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    upload INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL,
    record TEXT,
    progress REAL NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS corrections (
    job TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    saved TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    name: str
    path: str
    upload: bool
    options: dict[str, Any]
    record: dict[str, Any] | None
    progress: float
    created: str
    updated: str

    def to_dict(self, *, record: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "status": self.status,
                               "progress": round(self.progress, 4), "created": self.created, "updated": self.updated}
        if record:
            out["record"] = self.record
        return out


class JobStore:
    """Jobs, corrections and small settings in ``data_dir/jobs.sqlite3``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
            self._db.executescript(_SCHEMA)
        self._seq = self._max_seq()

    def _max_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- jobs ---------------------------------------------------------------------------------

    def add(self, name: str, path: str, options: dict[str, Any], *, upload: bool = False,
            job_id: str | None = None) -> Job:
        job_id = job_id or uuid.uuid4().hex[:16]
        stamp = now_iso()
        with self._lock:
            self._seq += 1
            self._db.execute(
                "INSERT INTO jobs (id, seq, status, name, path, upload, options, created, updated) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, self._seq, name, path, int(upload), json.dumps(options), stamp, stamp))
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def list(self, limit: int = 100, status: str | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", []
        if status is not None:
            query += " WHERE status = ?"
            args.append(status)
        query += " ORDER BY seq DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [_job(r) for r in rows]

    def by_ids(self, ids: list[str]) -> list[Job]:
        jobs = []
        for job_id in ids:
            job = self.get(job_id)
            if job is not None:
                jobs.append(job)
        return jobs

    def count(self, *statuses: str) -> int:
        marks = ",".join("?" * len(statuses))
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses).fetchone()[0])

    def claim_next(self) -> Job | None:
        """The oldest queued job, now ``running`` (atomically)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                stamp = now_iso()
                self._db.execute("UPDATE jobs SET status = 'running', updated = ? WHERE id = ?", (stamp, row["id"]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(row["id"])

    def finish(self, job_id: str, record: dict[str, Any]) -> Job | None:
        """Store the record and the final status in one transaction (a cancelled job stays cancelled)."""
        status = "failed" if record.get("error") else "done"
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = CASE WHEN status = 'cancelled' THEN status ELSE ? END, "
                "record = CASE WHEN status = 'cancelled' THEN record ELSE ? END, progress = 1, updated = ? "
                "WHERE id = ?", (status, json.dumps(record, allow_nan=False), now_iso(), job_id))
        return self.get(job_id)

    def set_progress(self, job_id: str, progress: float) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET progress = ?, updated = ? WHERE id = ? AND status = 'running'",
                             (float(progress), now_iso(), job_id))

    def cancel(self, job_id: str) -> Job | None:
        """``queued`` or ``running`` -> ``cancelled``; a finished job is left as it is."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status = 'cancelled', updated = ? "
                             "WHERE id = ? AND status IN ('queued', 'running')", (now_iso(), job_id))
        return self.get(job_id)

    def recover(self) -> int:
        """After a restart: jobs that were running go back to the queue (their work was lost
        with the process; their record was never written)."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = 'queued', progress = 0, updated = ? "
                                   "WHERE status = 'running'", (now_iso(),))
        return cur.rowcount

    # -- corrections and settings -------------------------------------------------------------------

    def save_corrections(self, job_id: str, doc: dict[str, Any]) -> str:
        stamp = now_iso()
        with self._lock:
            self._db.execute("INSERT INTO corrections (job, doc, saved) VALUES (?, ?, ?) "
                             "ON CONFLICT(job) DO UPDATE SET doc = excluded.doc, saved = excluded.saved",
                             (job_id, json.dumps(doc), stamp))
        return stamp

    def corrections(self, job_id: str) -> tuple[dict[str, Any], str] | None:
        with self._lock:
            row = self._db.execute("SELECT doc, saved FROM corrections WHERE job = ?", (job_id,)).fetchone()
        return (json.loads(row["doc"]), row["saved"]) if row is not None else None

    def corrected_jobs(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT job FROM corrections ORDER BY saved").fetchall()
        return [r["job"] for r in rows]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT INTO kv (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def fetch(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row is not None else default


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], status=row["status"], name=row["name"], path=row["path"], upload=bool(row["upload"]),
               options=json.loads(row["options"]), record=json.loads(row["record"]) if row["record"] else None,
               progress=float(row["progress"]), created=row["created"], updated=row["updated"])
