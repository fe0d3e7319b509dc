"""Write the other formats from ``labels.jsonl`` once a run (or a resumed run) ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from falv.labeling.formats import write_formats
from falv.labeling.records import LabelRecord, read_records
from falv.labeling.store import LABELS_NAME, record_key


def latest_records(out_dir: str | os.PathLike) -> list[LabelRecord]:
    """The records of ``out_dir/labels.jsonl``, one per input (a later record for the same
    input, e.g. a retried failure, replaces the earlier one), in first-seen order."""
    path = Path(out_dir) / LABELS_NAME
    if not path.exists():
        return []
    by_key: dict[str, LabelRecord] = {}
    for record in read_records(path):
        by_key[record_key(record.path)] = record
    return list(by_key.values())


def export_formats(out_dir: str | os.PathLike, formats: list[str], **options: Any) -> dict[str, Path]:
    """Write every format but JSONL (the native file, already written) from the run's records."""
    out_dir = Path(out_dir)
    written = {"jsonl": out_dir / LABELS_NAME}
    others = [f for f in formats if f != "jsonl"]
    if others:
        written.update(write_formats(latest_records(out_dir), out_dir, others, **options))
    return written
