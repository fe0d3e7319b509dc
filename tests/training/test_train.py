"""End-to-end training on generated videos with a very small FAL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from falv import FALForVideoClassification
from falv.errors import ConfigError
from falv.training import TrainConfig, TrainingInterrupted, train

from .conftest import SMALL


def _config(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=3, batch_size=4, lr=3e-3, seed=1, log_every=1,
                precision="fp32", model_overrides=dict(SMALL), num_frames=SMALL["num_frames"],
                image_size=SMALL["image_size"])
    base["model_overrides"] = {k: v for k, v in SMALL.items() if k not in ("num_frames", "image_size")}
    base.update(kw)
    return TrainConfig(**base)


def model_train_entries(data):
    """The training entries with their probed durations."""
    from falv.data.sources import load_source
    from falv.video import probe

    class Entry:
        def __init__(self, path):
            self.duration = probe(path).duration

    return [Entry(e.path) for e in load_source(str(data), split="train").entries]


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


def test_train_writes_a_run_that_label_and_evaluate_can_use(synth_set, tmp_path):
    run = tmp_path / "run"
    result = train(_config(synth_set, run, epochs=4), echo=None)
    assert result.best_dir == run / "best" and result.epochs_run == 4
    # the best model is a falv directory
    model = FALForVideoClassification.from_pretrained(result.best_dir)
    assert model.config.labels == (synth_set / "labels.txt").read_text().split()
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in result.best_dir.iterdir()}
    # logs: step lines, epoch lines with the documented keys, an end line
    epochs = _events(run, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert {"train_loss", "train_top1", "val_loss", "val_top1", "lr", "step", "time"} <= set(epochs[0])
    assert len(_events(run, "step")) == result.steps
    assert _events(run, "end")[0]["best_epoch"] == result.best_epoch
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["epochs"] == 4 and saved["lr"] == 3e-3
    split = json.loads((run / "split.json").read_text())
    assert split["how"]["kind"] == "split"  # the synth set's own val list
    assert {p.name for p in (run / "plots").iterdir()} >= {"loss.png", "accuracy.png", "lr.png"}
    # how the model saw time: TSN over whole training clips of 1.0-1.5 s (the 90th percentile)
    sampling = model.config.sampling
    assert (sampling.mode, sampling.source) == ("uniform", "falv train")
    durations = [e.duration for e in model_train_entries(synth_set)]
    assert min(durations) <= sampling.clip_seconds <= max(durations)
    assert sampling.clip_seconds == pytest.approx(float(np.quantile(durations, 0.9)), abs=1e-3)
    # scores calibrated on the validation split: the temperature of the best epoch, logged with its ECE
    best = next(e for e in epochs if e["epoch"] == result.best_epoch)
    assert model.config.temperature == best["temperature"] > 0
    assert 0 <= best["val_ece"] <= 1 and 0 <= best["val_ece_raw"] <= 1


def test_learns_an_easy_set_above_chance(synth_set, tmp_path):
    result = train(_config(synth_set, tmp_path / "run", epochs=8, lr=3e-3), echo=None)
    assert result.best_metric == "val_top1"
    assert result.best_value > 0.5  # two classes: chance is 0.5


def test_holdout_split_without_val(synth_set, tmp_path):
    run = tmp_path / "run"
    train(_config(synth_set / "train.csv", run, epochs=1, val_fraction=0.25), echo=None)
    how = json.loads((run / "split.json").read_text())["how"]
    assert how["kind"] == "holdout" and how["fraction"] == 0.25 and len(how["val"]) >= 2


def test_resume_is_exact(synth_set, tmp_path):
    """Interrupted mid-epoch and resumed, a run ends with the same weights as one that was not."""
    whole = train(_config(synth_set, tmp_path / "whole", epochs=3, mixup=0.5, drop_path=0.1), echo=None)

    def stop_at(step):
        if step == 4:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(_config(synth_set, cut, epochs=3, mixup=0.5, drop_path=0.1), on_step=stop_at, echo=None)
    resumed = train(TrainConfig(out=str(cut)), resume=True, echo=None)
    assert resumed.steps == whole.steps
    a = load_file(str(whole.best_dir / "model.safetensors"))
    b = load_file(str(resumed.best_dir / "model.safetensors"))
    final_a = load_file(str(next((tmp_path / "whole" / "checkpoint").glob("step-*")) / "model.safetensors"))
    final_b = load_file(str(next((cut / "checkpoint").glob("step-*")) / "model.safetensors"))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log has no duplicated steps after the resume
    steps = [e["step"] for e in _events(cut, "step")]
    assert steps == sorted(set(steps)) and len(steps) == whole.steps


def test_refuses_to_overwrite_a_run(synth_set, tmp_path):
    run = tmp_path / "run"
    train(_config(synth_set, run, epochs=1), echo=None)
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(synth_set, run, epochs=1), echo=None)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(TrainConfig(out=str(tmp_path / "empty")), resume=True, echo=None)


def test_accumulation_ema_early_stopping(synth_set, tmp_path):
    run = tmp_path / "run"
    # min_delta too large to ever beat: the first epoch stays best and patience 1 stops at epoch 2
    result = train(_config(synth_set, run, epochs=6, accumulate=2, ema=0.9, patience=1, metric="val_loss",
                           min_delta=10.0), echo=None)
    assert result.best_metric == "val_loss" and result.best_epoch == 1
    assert result.epochs_run == 2
    assert result.steps == 2 * 2  # 16 training videos / (batch 4 x 2 micro-batches) = 2 steps an epoch
    ckpt = load_file(str(next((run / "checkpoint").glob("step-*")) / "ema.safetensors"))
    weights = load_file(str(next((run / "checkpoint").glob("step-*")) / "model.safetensors"))
    assert ckpt.keys() == weights.keys() and not all(torch.equal(ckpt[k], weights[k]) for k in ckpt)


def test_multilabel_trains_with_bce_and_map(multilabel_set, tmp_path):
    run = tmp_path / "run"
    result = train(_config(multilabel_set, run, epochs=2), echo=None)
    assert result.best_metric == "val_map"
    model = FALForVideoClassification.from_pretrained(result.best_dir)
    assert model.config.problem_type == "multi_label_classification"
    epoch = _events(run, "epoch")[-1]
    assert epoch["val_map"] is not None and epoch["train_top1"] is None
    # per-class thresholds tuned on the validation split, stored with the model
    assert len(model.config.thresholds) == model.config.num_labels
    assert all(0 <= t <= 1 for t in model.config.thresholds) and model.config.temperature > 0


def test_fine_tune_from_a_falv_directory_with_new_classes(synth_set, tmp_path):
    first = train(_config(synth_set, tmp_path / "a", epochs=1), echo=None)
    result = train(_config(synth_set, tmp_path / "b", epochs=1, init=str(first.best_dir), freeze_backbone=True,
                           model_overrides={}), echo=None)
    a = FALForVideoClassification.from_pretrained(first.best_dir).state_dict()
    b = FALForVideoClassification.from_pretrained(result.best_dir).state_dict()
    backbone = [k for k in a if not k.startswith("head.")]
    assert all(torch.equal(a[k], b[k]) for k in backbone)  # frozen
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("head."))


def test_cli_train_and_usage_errors(synth_set, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "falv", "train", "--data", str(synth_set), "--out", str(tmp_path / "run"),
            "--epochs", "1", "--batch-size", "4", "--frames", "4", "--image-size", "32", "--patch-size", "8",
            "--precision", "fp32"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(summary["best_dir"]).is_dir() and "val_top1" in summary
    best = json.loads((Path(summary["best_dir"]) / "config.json").read_text())
    assert (best["patch_size"], best["image_size"], best["num_frames"]) == (8, 32, 4)  # 4x4 tokens per frame
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 3 and "--resume" in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run([sys.executable, "-m", "falv", "train", "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "--data" in missing.stderr
    bad_preset = subprocess.run([*args[:6], "--preset", "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert bad_preset.returncode == 2 and "valid presets" in bad_preset.stderr and "Traceback" not in bad_preset.stderr
    patch_init = subprocess.run([*args[:6], "--out", str(tmp_path / "p"), "--init", summary["best_dir"], "--patch-size", "4"],
                                capture_output=True, text=True, env=env, timeout=60)
    assert patch_init.returncode == 2 and "--patch-size" in patch_init.stderr and "Traceback" not in patch_init.stderr


def test_fine_tune_from_a_transformers_timesformer(synth_set, tmp_path):
    """A TimeSformer checkpoint of 5 classes and 4 frames fine-tuned on 2 classes at 6 frames."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                         num_labels=5)
    transformers.TimesformerForVideoClassification(cfg).save_pretrained(tmp_path / "hf")
    result = train(TrainConfig(data=str(synth_set), out=str(tmp_path / "run"), init=str(tmp_path / "hf"),
                               num_frames=6, epochs=1, batch_size=4, precision="fp32"), echo=None)
    model = FALForVideoClassification.from_pretrained(result.best_dir)
    assert model.config.num_frames == 6 and model.config.num_labels == 2
    assert model.config.labels == (synth_set / "labels.txt").read_text().split()
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["lr"] == pytest.approx(1e-3 * 4 / 16 / 10)  # linear scaling, a tenth when fine-tuning


@pytest.mark.parametrize("scheduler,expected", [
    ("step", [1.0, 0.5, 0.25, 0.125]),     # halved every epoch
    ("plateau", [1.0, 1.0, 0.5, 0.25]),    # epoch 1 is the best; every later validation is a plateau
])
def test_step_and_plateau_schedulers_drive_the_run_and_survive_a_resume(synth_set, tmp_path, scheduler, expected):
    kw = dict(epochs=4, scheduler=scheduler, warmup_epochs=0, min_lr=0.0, step_epochs=1, step_gamma=0.5,
              plateau_patience=0, plateau_factor=0.5, metric="val_loss", min_delta=10.0)

    def stop_at(step):
        if step == 9:  # mid-epoch 3, after the plateau reduction
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(_config(synth_set, tmp_path / "run", **kw), on_step=stop_at, echo=None)
    train(TrainConfig(out=str(tmp_path / "run")), resume=True, echo=None)
    steps = _events(tmp_path / "run", "step")
    assert len(steps) == 16  # 4 steps an epoch
    for event in steps:
        assert event["lr"] == pytest.approx(3e-3 * expected[event["epoch"] - 1]), event


def test_untrimmed_videos_train_a_background_class_that_labeling_never_emits(tmp_path):
    """falv train --untrimmed: windows of annotated untrimmed videos join the training data (gaps train
    'background'); the model's config flags it, and labeling, evaluation and exports skip it."""
    from click.testing import CliRunner

    from falv.cli.main import cli
    from falv.data.synth import SynthConfig, generate
    from falv.evaluation import evaluate
    from falv.labeling.engine import label
    from falv.labeling.export import export_formats

    classes = ("red-solid-circle", "green-striped-cross")
    data = tmp_path / "data"
    generate(data, SynthConfig(mode="appearance", classes=classes, videos_per_class=6, seed=3, width=32,
                               height=32, splits=(0.5, 0.25, 0.25), duration=(1.0, 1.5), distractors=0,
                               noise=0.0, untrimmed=2, untrimmed_duration=(8.0, 8.0)), overwrite=True)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(data), "--out", str(run), "--untrimmed", str(data / "untrimmed"),
        "--untrimmed-window", "1.0", "--untrimmed-stride", "0.5", "--epochs", "1", "--batch-size", "8",
        "--frames", str(SMALL["num_frames"]), "--image-size", str(SMALL["image_size"]), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    model = FALForVideoClassification.from_pretrained(run / "best")
    assert model.config.labels == [*classes, "background"] and model.config.background_label == "background"
    how = json.loads((run / "split.json").read_text())["how"]["untrimmed"]
    assert how["videos"] == 2 and how["window"] == 1.0 and how["windows"] == 2 * 15
    assert 0 < how["background_windows"] < how["windows"]
    # labeling: no 'background' anywhere in the records, the exports or the evaluation's classes
    untrimmed = sorted(str(p) for p in (data / "untrimmed").glob("*.mp4"))
    records = list(label(untrimmed, str(run / "best"), out_dir=tmp_path / "labels", window=1.0, stride=0.25,
                         workers=1, top_k=5))
    assert all(r.error is None for r in records)
    for r in records:
        assert [x.label for x in r.labels] and "background" not in {x.label for x in r.labels}
        assert all("background" not in {x.label for x in w.labels} for w in r.windows)
        assert all(s.label in classes for s in r.segments)
    written = export_formats(tmp_path / "labels", ["label-studio", "activitynet"], classes=model.config.action_labels)
    for path in written.values():
        assert "background" not in Path(path).read_text()
    metrics = evaluate(str(run / "best"), str(data), tmp_path / "eval", untrimmed=str(data / "untrimmed"),
                       window=1.0, workers=1)
    assert metrics["num_model_classes"] == 2 and metrics["top1"] is not None
    assert metrics["localization"]["num_videos"] == 2 and metrics["localization"]["stride"] == 0.125


def test_a_model_trained_on_key_moments_is_labelled_the_same_way(synth_set, tmp_path):
    """--frame-selection key-moments: training clips keep the frames where the picture changes,
    the model's sampling says so, and labeling then plans key-moment candidates by default."""
    from falv.labeling.engine import Engine
    from falv.labeling.stages import LabelOptions, plan_video

    result = train(_config(synth_set, tmp_path / "run", epochs=1, frame_selection="key-moments"), echo=None)
    model = FALForVideoClassification.from_pretrained(result.best_dir)
    assert model.config.sampling.frame_selection == "key-moments"
    engine = Engine(model, LabelOptions(), None, "m")
    assert engine.spec.frame_selection == "key-moments"
    video = str(next((synth_set / "videos").rglob("*.mp4")))
    [(_, _, times), *_] = plan_video(video, engine.spec, LabelOptions(clips=1))["windows"]
    assert len(times) > model.config.num_frames  # candidates, of which the decode stage keeps num_frames


def test_motion_input_from_scratch_and_added_to_a_checkpoint(synth_set, tmp_path):
    """--motion-input frame_diff: a model from scratch has it; added to a checkpoint without it, the
    checkpoint's pixel weights are kept and the difference weights start at zero (same function)."""
    first = train(_config(synth_set, tmp_path / "plain", epochs=1), echo=None)
    plain = FALForVideoClassification.from_pretrained(first.best_dir).eval()
    tuned = train(_config(synth_set, tmp_path / "motion", epochs=1, init=str(first.best_dir), lr=1e-9,
                          motion_input="frame_diff"), echo=None)
    moving = FALForVideoClassification.from_pretrained(tuned.best_dir).eval()
    assert moving.config.motion_input == "frame_diff" and plain.config.motion_input == "none"
    x = torch.randn(2, plain.config.num_frames, 3, plain.config.image_size, plain.config.image_size)
    with torch.no_grad():
        torch.testing.assert_close(moving(x).logits, plain(x).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="motion_input"):
        _config(synth_set, tmp_path / "bad", motion_input="flow")
