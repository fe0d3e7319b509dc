"""``falv features``: per-time-segment features of whole videos (the extractor of seed 003).

A video is cut into *buckets*: consecutive windows of the model's clip duration (its frame
count at its sampling rate: ``num_frames * frame_stride / fps`` seconds for dense sampling),
each giving one feature vector, the model's pooled features before its head
(``forward_features``). When the video is not a whole number of buckets long, the last bucket
is filled from the last frames: it ends at the video's end (it overlaps the one before), so
every vector sees a full clip. A video shorter than one bucket gives one bucket over all of it.

Feature index ``i`` of ``n`` maps to time as in the seed: a moment ``t`` seconds into a video
of ``l`` frames at ``fps`` is at position ``tau = t * n * fps / l`` (in ``[0, n]``); the exact
start and end seconds of every bucket are stored beside the vectors (``times``), so nothing
depends on that approximation for the overlapping last bucket.

It runs on the labeling engine (:func:`falv.labeling.engine.label` with windows of one bucket,
stride one bucket and embeddings on): resumable, crash-isolated, one record per input in
``labels.jsonl`` (the buckets' labels come with it), ``embeddings/<video_id>.safetensors``
per video (``windows``: (n, D) float32 features, ``times``: (n, 2) seconds, ``video``: their
mean), and ``features.jsonl``, the manifest, written atomically from the newest records when
the run ends: one line per input with its feature file, ``n``, ``dim``, bucket seconds, the
tau map's numbers, or its error. ``falv label --embeddings --window W --stride W`` writes the
same vectors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from falv.errors import ConfigError

MANIFEST_NAME = "features.jsonl"


def bucket_seconds(config: Any, override: float | None = None) -> float:
    """Seconds of one bucket: ``override``, else the model's clip duration (its config's
    sampling). A model that does not record one (e.g. TSN/TSM segments over whole videos)
    needs ``override``."""
    if override is not None:
        if not override > 0:
            raise ConfigError(f"bucket seconds must be > 0, got {override!r}")
        return float(override)
    seconds = getattr(config, "clip_seconds", None)
    if seconds is None:
        sampling = getattr(config, "sampling", None)
        what = ("clips over whole videos" if sampling is not None else "no clip sampling")
        raise ConfigError(f"the model records {what}, so its bucket has no duration: give --bucket-seconds "
                          f"(e.g. {config.num_frames} frames at 30 fps: {config.num_frames / 30:.3g})")
    return float(seconds)


def manifest_entry(record: Any, seconds: float, model: str, family: str) -> dict[str, Any]:
    """The manifest line of one input: its features, their times, or its error."""
    entry: dict[str, Any] = {"path": record.path, "video_id": record.video_id, "model": model, "family": family,
                             "bucket_seconds": seconds}
    if record.error is not None:
        entry["error"] = record.error.to_dict()
        return entry
    embeddings = record.embeddings or {}
    n = len(record.windows)
    entry.update(
        features=embeddings.get("file"), keys=embeddings.get("keys"), dim=embeddings.get("dim"), num_features=n,
        duration=record.duration, fps=record.fps, num_frames=record.num_frames,
        times=[[w.start, w.end] for w in record.windows],
        # the seed's map from seconds to feature position: tau = t * n * fps / l
        tau={"formula": "t * n * fps / l", "n": n, "fps": record.fps, "l": record.num_frames},
        error=None,
    )
    return entry


def write_manifest(out_dir: Path, entries: list[dict[str, Any]]) -> Path:
    from falv.hub.io import atomic_write_text

    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, "".join(json.dumps(e, sort_keys=False) + "\n" for e in entries))
    return path


def extract_features(
    inputs: Iterable[str] | str,
    model: Any,
    out_dir: str | os.PathLike,
    *,
    seconds: float | None = None,
    options: Any = None,
    resume: bool = True,
    retry_failed: bool = False,
    processor: Any = None,
    copy_model: bool = True,
    **option_overrides: Any,
) -> Iterator[Any]:
    """Label ``inputs`` in buckets with embeddings on; yields each new record as it is written,
    then writes ``features.jsonl`` (every input's entry, newest record each)."""
    import dataclasses

    from falv.hub.families import family_of, load_model
    from falv.labeling.engine import label
    from falv.labeling.export import latest_records
    from falv.labeling.stages import LabelOptions
    from falv.labeling.store import record_key

    out = Path(out_dir)
    net = load_model(model) if not hasattr(model, "forward") else model
    size = bucket_seconds(net.config, seconds)
    base = options or LabelOptions(**option_overrides)
    if base.clips is not None:
        raise ConfigError("features are per bucket: --clips does not apply")
    opts = dataclasses.replace(base, window=size, stride=size, clips=None, embeddings=True)
    model_id = str(getattr(net, "name_or_path", None) or model)
    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    yield from label(paths, net, out_dir=out, options=opts, resume=resume, retry_failed=retry_failed,
                     processor=processor, copy_model=copy_model)
    newest = {record_key(r.path): r for r in latest_records(out)}
    keys = dict.fromkeys(record_key(p) for p in paths)  # input order, each once
    entries = [manifest_entry(newest[k], size, model_id, family_of(net)) for k in keys if k in newest]
    write_manifest(out, entries)


def read_features(out_dir: str | os.PathLike, entry: dict[str, Any]) -> dict[str, Any]:
    """The arrays of one manifest entry (``windows`` (n, D), ``times`` (n, 2), ``video`` (D,))."""
    from safetensors.numpy import load_file

    return load_file(str(Path(out_dir) / entry["features"]))


__all__ = ["MANIFEST_NAME", "bucket_seconds", "extract_features", "manifest_entry", "read_features", "write_manifest"]
