"""`falv features`: one vector per bucket of the model's clip duration, the last bucket from the
last frames, the bucket times and the manifest; resumable; broken files are their own lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.cli.main import main
from falv.config import ClipSampling
from falv.errors import ConfigError
from falv.labeling.features import bucket_seconds, read_features
from falv.video.testing import write_test_video

FPS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    cfg = preset("tiny", id2label={0: "a", 1: "b"})
    cfg.sampling = ClipSampling(mode="dense", frame_stride=2, fps=float(FPS))  # 8 x 2 frames: 4/3 s
    FALForVideoClassification(cfg).save_pretrained(root / "model")
    videos = {
        "long": write_test_video(root / "long.mp4", frames=50, fps=FPS, size=(64, 80)),  # 3.125 buckets
        "exact": write_test_video(root / "exact.mp4", frames=32, fps=FPS, size=(64, 64)),  # 2 buckets
        "short": write_test_video(root / "short.mp4", frames=10, fps=FPS, size=(64, 64)),  # under one bucket
    }
    bad = root / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    out = root / "out"
    args = ["features", *map(str, videos.values()), str(bad), "--model", str(root / "model"), "--out", str(out),
            "--precision", "fp32", "--workers", "1", "-q"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    entries = [json.loads(line) for line in (out / "features.jsonl").read_text().splitlines()]
    return dict(root=root, videos=videos, bad=bad, out=out, args=args, code=exit_info.value.code, entries=entries)


def _entry(setup, name):
    path = str(setup["videos"][name]) if name != "bad" else str(setup["bad"])
    (entry,) = [e for e in setup["entries"] if e["path"] == path]
    return entry


def test_one_manifest_line_per_input_in_input_order_and_a_failure_exit_code(setup):
    assert setup["code"] == 1  # the broken file failed
    paths = [e["path"] for e in setup["entries"]]
    assert paths == [*map(str, setup["videos"].values()), str(setup["bad"])]
    bad = _entry(setup, "bad")
    assert bad["error"]["type"] == "not_a_video" and "features" not in bad


@pytest.mark.parametrize("name, n", [("long", 4), ("exact", 2), ("short", 1)])
def test_buckets_of_the_clip_duration_the_last_one_ending_at_the_video_end(setup, name, n):
    entry = _entry(setup, name)
    seconds = 8 * 2 / FPS
    assert entry["bucket_seconds"] == pytest.approx(seconds)
    assert entry["num_features"] == n
    times = np.asarray(entry["times"])
    duration = entry["duration"]
    if duration > seconds:
        full = np.arange(n - 1)
        np.testing.assert_allclose(times[:-1, 0], full * seconds, atol=1e-6)
        np.testing.assert_allclose(times[:-1, 1], (full + 1) * seconds, atol=1e-6)
        np.testing.assert_allclose(times[-1], [duration - seconds, duration], atol=1e-6)  # from the last frames
    else:
        np.testing.assert_allclose(times, [[0.0, duration]], atol=1e-6)
    assert entry["tau"] == {"formula": "t * n * fps / l", "n": n, "fps": FPS, "l": entry["num_frames"]}
    arrays = read_features(setup["out"], entry)
    assert arrays["windows"].shape == (n, entry["dim"]) and arrays["windows"].dtype == np.float32
    np.testing.assert_allclose(arrays["times"], times)
    np.testing.assert_allclose(arrays["video"], arrays["windows"].mean(axis=0), rtol=1e-6)


def test_vectors_are_the_models_pooled_features_of_each_bucket(setup):
    """Recomputed outside the engine: decode each bucket's frames, preprocess, forward_features."""
    from falv.hub.families import load_model
    from falv.processing import FALImageProcessor
    from falv.video import plan_windows, probe, read_frames

    model = load_model(setup["root"] / "model")
    processor = FALImageProcessor.from_config(model.config)
    entry = _entry(setup, "long")
    info = probe(setup["videos"]["long"])
    windows = plan_windows(info.duration, info.fps, 8, window=entry["bucket_seconds"], stride=entry["bucket_seconds"])
    clips = [processor(read_frames(setup["videos"]["long"], list(w.timestamps), size=processor.resize_target))
             ["pixel_values"] for w in windows]
    with torch.no_grad():
        expected = model.forward_features(torch.cat(clips)).numpy()
    np.testing.assert_allclose(read_features(setup["out"], entry)["windows"], expected, atol=1e-4, rtol=1e-4)


def test_label_with_embeddings_in_the_same_windows_gives_the_same_vectors(setup, tmp_path):
    seconds = _entry(setup, "long")["bucket_seconds"]
    with pytest.raises(SystemExit) as exit_info:
        main(["label", str(setup["videos"]["long"]), "--model", str(setup["root"] / "model"), "--out", str(tmp_path),
              "--window", str(seconds), "--stride", str(seconds), "--embeddings", "--precision", "fp32",
              "--workers", "1", "-q"])
    assert exit_info.value.code == 0
    record = json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])
    from safetensors.numpy import load_file

    labelled = load_file(str(tmp_path / record["embeddings"]["file"]))["windows"]
    np.testing.assert_allclose(labelled, read_features(setup["out"], _entry(setup, "long"))["windows"], atol=1e-5)


def test_a_rerun_resumes_and_keeps_every_manifest_line(setup):
    before = (setup["out"] / "features.jsonl").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(setup["args"])
    assert exit_info.value.code == 1  # the broken file is still failed
    assert (setup["out"] / "features.jsonl").read_text() == before
    lines = (setup["out"] / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 4  # nothing extracted twice


@pytest.mark.parametrize("sampling, override, expected", [
    (ClipSampling(mode="dense", frame_stride=32, fps=30.0), None, 8 * 32 / 30),
    (ClipSampling(mode="uniform", clip_seconds=2.5), None, 2.5),
    (ClipSampling(mode="dense", frame_stride=32, fps=30.0), 1.0, 1.0),
    (ClipSampling(mode="uniform", clip_seconds=None), 3.0, 3.0),
    (None, 2.0, 2.0),
])
def test_bucket_seconds_table(sampling, override, expected):
    cfg = preset("tiny", num_labels=2)
    cfg.sampling = sampling
    assert bucket_seconds(cfg, override) == pytest.approx(expected)


@pytest.mark.parametrize("sampling", [None, ClipSampling(mode="uniform", clip_seconds=None)])
def test_a_model_without_a_clip_duration_needs_bucket_seconds(setup, tmp_path, sampling):
    cfg = preset("tiny", num_labels=2)
    cfg.sampling = sampling
    with pytest.raises(ConfigError, match="--bucket-seconds"):
        bucket_seconds(cfg)
    FALForVideoClassification(cfg).save_pretrained(tmp_path / "m")
    with pytest.raises(SystemExit) as exit_info:
        main(["features", str(setup["videos"]["short"]), "--model", str(tmp_path / "m"), "--out",
              str(tmp_path / "o"), "-q"])
    assert exit_info.value.code == 2
