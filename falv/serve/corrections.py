"""What people corrected on the review page, as data ``falv train --data`` reads.

:func:`write_training_source` writes, from the saved corrections of the server's jobs:

- ``train.csv``: ``path,label[,label...]`` rows (the ``list`` source of
  :mod:`falv.data.sources`), one per corrected video with its corrected video-level
  labels, with ``labels.txt`` beside it (the model's classes, in its order), so that
  ``falv train --data DATA_DIR/corrections/train.csv --init MODEL`` fine-tunes on them;
- ``segments.json``: the corrected segments as ActivityNet-style ground truth
  (``{"database": {video_id: {"duration", "annotations": [{"segment", "label"}]}}}``),
  the format ``falv evaluate --untrimmed`` reads, for measuring the next model.

Files are written atomically; a video without video-level labels is left out of
``train.csv`` (counted in the summary) but keeps its segments.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from falv.hub.io import atomic_write_text


def write_training_source(folder: Path, docs: list[tuple[Any, dict[str, Any]]], classes: list[str]) -> dict[str, Any]:
    """Write the corrected set into ``folder``; returns ``{"csv", "labels", "segments", "videos", "skipped"}``."""
    from falv.labeling.formats import activitynet_video_id

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "label"])
    database: dict[str, Any] = {}
    used = skipped = 0
    for job, doc in docs:
        labels = list(doc.get("labels") or [])
        if labels:
            writer.writerow([job.path, *labels])
            used += 1
        else:
            skipped += 1
        duration = float((job.record or {}).get("duration") or 0.0)
        key = activitynet_video_id(job.path, strip_v_prefix=False)
        database[key if key not in database else f"{key}-{job.id}"] = {
            "path": job.path, "duration": duration, "subset": "validation",
            "annotations": [{"segment": [s["start"], s["end"]], "label": s["label"]} for s in doc.get("segments") or []],
        }
    csv_path, labels_path, segments_path = folder / "train.csv", folder / "labels.txt", folder / "segments.json"
    atomic_write_text(labels_path, "".join(f"{c}\n" for c in classes))
    atomic_write_text(csv_path, rows.getvalue())
    atomic_write_text(segments_path, json.dumps({"version": "falv corrections", "database": database}, indent=1) + "\n")
    return {"csv": str(csv_path), "labels": str(labels_path), "segments": str(segments_path),
            "videos": used, "skipped": skipped}
