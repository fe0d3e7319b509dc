"""Fake output folders of `falv label`, `falv evaluate` and a training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falv.labeling.records import record_error, record_ok, write_records
from falv.labeling.segments import Segment
from falv.video.testing import write_test_video

EVIL = "<script>alert('x')</script>"


@pytest.fixture
def labels_dir(tmp_path: Path) -> Path:
    out = tmp_path / "labels"
    out.mkdir()
    good = write_test_video(tmp_path / "good.mp4", frames=20, fps=10, size=(48, 64))
    records = [
        record_ok(good, [("stir", 0.7), (EVIL, 0.2), ("pour", 0.1)], duration=2.0, fps=10.0, width=64, height=48,
                  windows=[(0.0, 1.0, [("stir", 0.8)]), (1.0, 2.0, [(EVIL, 0.6)])],
                  segments=[Segment("stir", 0.0, 1.0, 0.8), Segment(EVIL, 1.0, 2.0, 0.6)], model="models/tiny"),
        # labelled once, but the file has gone since: the report shows a placeholder
        record_ok(tmp_path / "gone.mp4", [("pour", 0.9)], duration=4.0, windows=[(0.0, 4.0, [("pour", 0.9)])]),
        record_error(tmp_path / "broken.mp4", "corrupt", f"{tmp_path / 'broken.mp4'}: moov atom not found {EVIL}"),
    ]
    write_records(out / "labels.jsonl", records)
    return out


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    out = tmp_path / "eval"
    out.mkdir()
    classes = ["stir", "pour", EVIL]
    metrics = {
        "top1": 0.75, "top5": 1.0, "precision_macro": 0.7, "recall_macro": 0.71, "f1_macro": 0.69,
        "precision_weighted": 0.74, "recall_weighted": 0.75, "f1_weighted": 0.73, "mean_class_accuracy": 0.72,
        "num_videos": 8, "failed": [{"path": "/data/x.mp4", "error": "x.mp4: not a video file"}],
        "clips": 1, "crops": 1, "model": "models/tiny", "data": "synth/test.csv", "classes": classes,
        "map": 0.8, "per_class_ap": {"stir": 0.9, "pour": 0.8, EVIL: 0.7},
        "localization": {"mAP@0.3": 0.6, "mAP@0.5": 0.5, "mAP@0.7": 0.3, "mAP": 0.47},
        "views": [{"clips": 1, "crops": 1, "top1": 0.75}],
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(out / "confusion_matrix.png")
    rows = [["true\\pred", *classes], ["stir", 3, 0, 0], ["pour", 1, 2, 0], [EVIL, 0, 1, 1]]
    (out / "confusion_matrix.csv").write_text("\n".join(",".join(f'"{c}"' if "," in str(c) else str(c) for c in r)
                                                        for r in rows) + "\n")
    (out / "per_class.csv").write_text(
        "class,precision,recall,f1,support\nstir,0.75,1.0,0.857,3\npour,0.667,0.667,0.667,3\n"
        f"\"{EVIL}\",1.0,0.5,0.667,2\n")
    return out


def write_log(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    lines = []
    step = 0
    for epoch in range(3):
        for _ in range(4):
            step += 1
            lines.append({"event": "step", "epoch": epoch, "step": step, "loss": 2.0 / step, "lr": 1e-3 * step / 12,
                          "time": step * 0.5})
        lines.append({"event": "epoch", "epoch": epoch, "step": step, "lr": 1e-3, "train_loss": 1.0 / (epoch + 1),
                      "train_top1": 0.3 * (epoch + 1), "val_loss": 1.2 / (epoch + 1),
                      "val_top1": 0.25 * (epoch + 1), "val_map": None, "time": step * 0.5})
    lines.append({"event": "end", "best_epoch": 2, "best_metric": "val_top1", "best_value": 0.75, "time": 7.0})
    write_log(out / "log.jsonl", lines)
    (out / "train_config.json").write_text(json.dumps({"epochs": 3, "lr": 1e-3, "note": EVIL}))
    return out
