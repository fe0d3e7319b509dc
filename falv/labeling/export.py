"""Write the other formats from ``labels.jsonl`` once a run (or a resumed run) ends."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from falv.labeling.formats import FormatError, write_formats
from falv.labeling.records import LabelRecord, read_records
from falv.labeling.store import LABELS_NAME, newest_per_input


def latest_records(out_dir: str | os.PathLike) -> list[LabelRecord]:
    """The records of ``out_dir/labels.jsonl``, one per input (a later record for the same
    input, e.g. a retried failure, replaces the earlier one), in first-seen order."""
    path = Path(out_dir) / LABELS_NAME
    if not path.exists():
        return []
    # a run compacts the file when it ends; one killed before that may have left duplicates
    return newest_per_input(read_records(path))


def export_formats(out_dir: str | os.PathLike, formats: list[str], *,
                   failures: list[tuple[str, str, str]] | None = None, **options: Any) -> dict[str, Path]:
    """Write every format but JSONL (the native file, already written) from the run's records.

    The writers are part of the per-video boundary: a record that a writer cannot
    convert (a bug, or a ``labels.jsonl`` edited by hand) is left out of that format and
    appended to ``failures`` as ``(path, format, message)`` (without ``failures`` it is
    raised); every other record is still written. A folder that cannot be written stops
    the export (OSError).
    """
    out_dir = Path(out_dir)
    written = {"jsonl": out_dir / LABELS_NAME}
    others = [f for f in formats if f != "jsonl"]
    if not others:
        return written
    records = latest_records(out_dir)
    for name in others:
        try:
            written.update(write_formats(records, out_dir, [name], **options))
        except (OSError, FormatError):
            raise
        except Exception:
            if failures is None:
                raise
            good = _convertible(records, name, options, failures)
            written.update(write_formats(good, out_dir, [name], **options))
    return written


def _convertible(records: list[LabelRecord], name: str, options: dict[str, Any],
                 failures: list[tuple[str, str, str]]) -> list[LabelRecord]:
    """The records that the ``name`` writer converts alone; the others go to ``failures``."""
    good = []
    with tempfile.TemporaryDirectory(prefix="falv-export-") as scratch:
        for record in records:
            try:
                write_formats([record], scratch, [name], **options)
            except (OSError, FormatError):
                raise
            except Exception as exc:
                failures.append((record.path, name, f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
            else:
                good.append(record)
    return good
