"""falv evaluate end to end on a few generated videos with a tiny random model, and its helpers."""

import csv
import json
import logging
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from falv import FALForVideoClassification, preset
from falv.data.synth import SynthConfig, generate
from falv.evaluation import ClassMismatchError, EvaluationError, evaluate
from falv.evaluation.runner import (
    _default_split,
    _plot_confusion,
    map_classes,
    parse_counts,
    plan_views,
    scores_from_record,
)
from falv.errors import ConfigError
from falv.labeling.engine import aggregate
from falv.labeling.records import record_ok
from falv.labeling.stages import LabelOptions

METRIC_KEYS = {"top1", "top5", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
               "f1_weighted", "mean_class_accuracy", "num_videos", "failed", "clips", "crops", "model", "data",
               "classes"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    manifest = generate(root, SynthConfig(mode="appearance", classes=2, videos_per_class=4, splits=(0, 0, 1),
                                          duration=(1.0, 1.5), untrimmed=1, untrimmed_duration=(8.0, 8.0),
                                          distractors=0), workers=2)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with open(root / "test.csv", "a", encoding="utf-8") as f:
        f.write(f"videos/broken.mp4,{manifest.classes[0]}\n")
    return root, manifest.classes


def test_cli_end_to_end_with_views_untrimmed_and_a_broken_video(synth, model_dir, tmp_path):
    from falv.cli.evaluate import evaluate as command

    root, classes = synth
    out = tmp_path / "out"
    result = CliRunner().invoke(command, ["--model", str(model_dir), "--data", str(root), "--out", str(out),
                                          "--clips", "1,2", "--untrimmed", str(root / "untrimmed"), "--workers", "1"],
                                standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 1  # the broken video failed
    assert "top-1" in result.output and "mAP@0.5" in result.output and str(out / "metrics.json") in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["data"] == str(root) and metrics["split"] == "test" and metrics["classes"] == classes and not metrics["multilabel"]
    assert metrics["num_videos"] == 8 and metrics["clips"] == 2 and metrics["crops"] == 1
    assert metrics["device"] in ("cpu", "cuda") and metrics["precision"] in ("fp32", "bf16")  # auto, resolved
    [failed] = metrics["failed"]
    assert failed["path"].endswith("broken.mp4") and failed["type"] in ("corrupt", "not_a_video") and failed["error"]
    for key in ("top1", "f1_macro", "mean_class_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["top5"] == 1.0  # two classes: top-5 is clipped to 2
    # one entry per view setting; the top level is the last one
    assert [(v["clips"], v["crops"]) for v in metrics["views"]] == [(1, 1), (2, 1)]
    assert all(metrics["views"][-1][k] == metrics[k] for k in ("top1", "f1_macro", "num_videos"))
    loc = metrics["localization"]
    assert {"mAP@0.3", "mAP@0.5", "mAP@0.7", "mAP"} <= set(loc) and loc["num_videos"] == 1
    assert loc["mAP"] == pytest.approx(np.mean([loc["mAP@0.3"], loc["mAP@0.5"], loc["mAP@0.7"]]))
    assert loc["window"] == 2.0 and loc["stride"] == 0.25  # the defaults for an 8-frame model
    assert loc["refine_edges"] is True

    rows = list(csv.reader((out / "confusion_matrix.csv").open()))
    assert rows[0][1:] == classes and [r[0] for r in rows[1:]] == classes
    matrix = np.array([[int(x) for x in r[1:]] for r in rows[1:]])
    assert matrix.sum() == metrics["num_videos"] and matrix.sum(axis=1).tolist() == [4, 4]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class"] for r in per_class] == classes and sum(int(r["support"]) for r in per_class) == 8
    assert np.mean([float(r["f1"]) for r in per_class]) == pytest.approx(metrics["f1_macro"])
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 9 and sum("error" in line for line in lines) == 1
    ok = [line for line in lines if "error" not in line]
    assert np.mean([line["correct"] for line in ok]) == pytest.approx(metrics["top1"])
    assert all(len(line["labels"]) == 2 and line["target"] in classes for line in ok)
    detections = json.loads((out / "detections.json").read_text())
    assert list(detections["results"]) == ["untrimmed_00000"]


def test_multilabel_data_with_a_thresholded_model(synth, tmp_path):
    root, classes = synth
    videos = sorted((root / "videos").glob("*/*.mp4"))[:3]
    listing = tmp_path / "multi.csv"
    listing.write_text(f"{videos[0]},{classes[0]},{classes[1]}\n{videos[1]},{classes[0]}\n{videos[2]},{classes[1]}\n")
    torch.manual_seed(1)
    config = preset("tiny", id2label=dict(enumerate(classes)), problem_type="multi_label_classification",
                    thresholds=[1.1, 1.1])  # no class ever reaches its threshold
    model = FALForVideoClassification(config).eval()
    result = evaluate(model, listing, tmp_path / "out", workers=1)
    assert result["multilabel"] and result["num_videos"] == 3 and result["failed"] == []
    assert 0.0 < result["map"] <= 1.0 and set(result["per_class_ap"]) == set(classes)
    assert result["precision_macro"] == 0.0 and result["recall_macro"] == 0.0  # nothing predicted
    rows = list(csv.DictReader((tmp_path / "out" / "confusion_matrix.csv").open()))
    assert [r["class"] for r in rows] == classes and sum(int(r["tp"]) + int(r["fn"]) for r in rows) == 4
    assert not (tmp_path / "out" / "confusion_matrix.png").exists()  # no square matrix for multi-label data
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert lines[0]["targets"] == classes and lines[0]["predicted"] == [] and len(lines[0]["labels"]) == 2


def test_unknown_classes_stop_with_one_line(synth, tmp_path, monkeypatch, capsys):
    import falv.cli.main as cli_main

    root, classes = synth
    other = tmp_path / "model"
    FALForVideoClassification(preset("tiny", id2label={0: classes[0], 1: "something-else"})).save_pretrained(other)
    with pytest.raises(ClassMismatchError, match=classes[1]):
        evaluate(str(other), root)
    monkeypatch.setitem(cli_main.COMMANDS, "evaluate", "falv.cli.evaluate:evaluate")
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["evaluate", "-m", str(other), "-d", str(root), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 3 and "does not know" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--crops", "2"], "crops must be 1 or 3"),
    (["--clips", "0"], "clips must be >= 1"),
    (["--clips", "two"], "whole numbers"),
    (["--window", "1", "--stride", "2"], "must not exceed --window"),
    ([], "--data"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, message):
    import falv.cli.main as cli_main

    monkeypatch.setitem(cli_main.COMMANDS, "evaluate", "falv.cli.evaluate:evaluate")
    data = ["-d", str(tmp_path)] if args else []
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["evaluate", "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "out"), *data, *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


# -- helpers --------------------------------------------------------------------------------------


def test_engine_keeps_every_class_score_when_asked():
    scores = np.array([[0.9, 0.2, 0.05], [0.7, 0.4, 0.15]])
    args = ("v.mp4", {"duration": 2.0}, [(0.0, 1.0), (1.0, 2.0)], scores, ["a", "b", "c"])
    kw = dict(multilabel=True, thresholds=[0.5, 0.5, 0.5], model_id="m")
    kept = aggregate(*args, LabelOptions(top_k=3), **kw)
    assert [x.label for x in kept.labels] == ["a"]  # the default: only classes over their threshold
    every = aggregate(*args, LabelOptions(top_k=3, apply_thresholds=False), **kw)
    assert [(x.label, x.score) for x in every.labels] == [("a", pytest.approx(0.8)), ("b", pytest.approx(0.3)),
                                                          ("c", pytest.approx(0.1))]
    assert every.segments == kept.segments  # segments do not depend on the option


def test_scores_from_record():
    index = {"a": 0, "b": 1, "c": 2}
    record = record_ok("v.mp4", [("b", 0.5), ("a", 0.3), ("c", 0.2)])
    np.testing.assert_allclose(scores_from_record(record, index, 3), [0.3, 0.5, 0.2])
    with pytest.raises(EvaluationError, match="top_k"):
        scores_from_record(record_ok("v.mp4", [("b", 0.5)]), index, 3)


def test_map_classes():
    labels = ["playing guitar", "Abseiling", "jump-rope"]
    assert map_classes(["Abseiling", "playing_guitar", "jump rope"], labels) == {
        "Abseiling": 1, "playing_guitar": 0, "jump rope": 2}
    with pytest.raises(ClassMismatchError, match="'swimming', 'diving'"):
        map_classes(["swimming", "Abseiling", "diving"], labels)
    with pytest.raises(ClassMismatchError):  # ambiguous loose match
        map_classes(["a b"], ["a_b", "a-b"])


def test_views_and_counts():
    assert parse_counts("1, 2,4,2", "clips") == [1, 2, 4]
    assert parse_counts(3, "clips") == [3] and parse_counts([1, 3], "crops") == [1, 3]
    assert plan_views("1,2", "1,3") == [(1, 1), (2, 1), (1, 3), (2, 3)]
    with pytest.raises(ConfigError, match="crops must be 1 or 3"):
        plan_views(1, "1,2")
    with pytest.raises(ConfigError, match=">= 1"):
        plan_views("0", 1)


def test_default_split(tmp_path):
    assert _default_split(tmp_path) is None
    (tmp_path / "test.csv").write_text("")
    assert _default_split(tmp_path) == "test"
    assert _default_split(tmp_path / "test.csv") is None


def test_no_data_and_no_untrimmed_is_an_error():
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate("model")


def test_png_is_skipped_without_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with caplog.at_level(logging.WARNING):
        assert _plot_confusion(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm.png", {}) is None
    assert "matplotlib is not installed" in caplog.text and not (tmp_path / "cm.png").exists()


class ColourOracle:
    """Stands in for a trained model: the share of clearly red / blue pixels of a clip.

    Logits come in the model's order (blue first), the reverse of the dataset's class
    list, so a perfect score also shows that scores are mapped to classes by name.
    """

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 1, 3, 1, 1)

    def predict(self, pixels):  # (B, T, C, H, W), normalised
        rgb = (pixels * self.std + self.mean) * 255
        r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
        red = ((r - torch.maximum(g, b)) > 80).float().mean(dim=(1, 2, 3))
        blue = ((b - torch.maximum(r, g)) > 80).float().mean(dim=(1, 2, 3))
        return torch.stack([blue, red], dim=1) * 400, torch.zeros(pixels.shape[0], 4)


def test_a_perfect_model_scores_one(tmp_path, monkeypatch):
    import falv.inference

    classes = ("red-solid-circle", "blue-solid-circle")
    generate(tmp_path / "synth", SynthConfig(mode="appearance", classes=classes, videos_per_class=3, splits=(0, 0, 1),
                                             duration=(1.0, 1.5), untrimmed=1, untrimmed_duration=(10.0, 10.0),
                                             distractors=0), workers=2)
    config = preset("tiny", id2label={0: classes[1], 1: classes[0]})
    FALForVideoClassification(config).save_pretrained(tmp_path / "model")
    oracle = ColourOracle(config.image_mean, config.image_std)
    monkeypatch.setattr(falv.inference, "prepare_for_inference", lambda *a, **k: oracle)
    result = evaluate(str(tmp_path / "model"), tmp_path / "synth", tmp_path / "out",
                      untrimmed=tmp_path / "synth" / "untrimmed", window=0.5, stride=0.25, segment_threshold=0.9,
                      workers=1)
    assert result["top1"] == result["f1_macro"] == result["mean_class_accuracy"] == 1.0
    assert result["classes"] == [classes[1], classes[0]]  # the model's order
    rows = list(csv.reader((tmp_path / "out" / "confusion_matrix.csv").open()))
    assert rows[1:] == [[classes[1], "3", "0"], [classes[0], "0", "3"]]
    loc = result["localization"]
    assert loc["num_ground_truth"] == 2 and loc["mAP@0.3"] == 1.0 and loc["mAP@0.5"] == 1.0


def test_an_interrupted_evaluation_resumes_and_gives_the_same_metrics(synth, model_dir, tmp_path, monkeypatch):
    from falv.labeling.engine import Engine
    from falv.labeling.records import read_records

    root, _ = synth
    rows = (root / "test.csv").read_text().splitlines()
    data = root / "resume.csv"  # three good videos and the broken one: a small, quick set
    data.write_text("\n".join(rows[:3] + [r for r in rows if "broken" in r]) + "\n")
    out = tmp_path / "out"
    kw = dict(workers=1, clips=1)
    first = evaluate(str(model_dir), str(data), out, **kw)
    labels = out / "records" / "clips1-crops1" / "labels.jsonl"
    assert len(read_records(labels)) == 4  # one per input, the broken one included
    # as if the first run had been killed after two videos
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:2]))
    kept_done = {r.path for r in read_records(labels)
                 if r.error is None or r.error.type in ("not_a_video", "no_video_stream")}
    labelled = []
    original = Engine.run_jobs

    def counting(self, jobs, **kwargs):
        jobs = list(jobs)
        labelled.extend(j.path for j in jobs)
        return original(self, jobs, **kwargs)

    monkeypatch.setattr(Engine, "run_jobs", counting)
    second = evaluate(str(model_dir), str(data), out, **kw)
    # only what the first run had not done is labelled (a failure that can recur is retried)
    assert len(labelled) == 4 - len(kept_done) and not set(labelled) & kept_done
    for key in ("top1", "top5", "f1_macro", "num_videos", "failed"):
        assert second[key] == first[key]
    assert len(read_records(labels)) == 4


def test_records_of_another_model_or_other_options_are_never_reused(synth, model_dir, tmp_path):
    from falv.evaluation.runner import _describe_model, _records_dir, model_fingerprint

    info = _describe_model(str(model_dir))
    options = LabelOptions(clips=2, top_k=2)
    folder = _records_dir(tmp_path, "clips2-crops1", info, options, resume=True)
    (folder / "labels.jsonl").write_text("{}\n")
    assert _records_dir(tmp_path, "clips2-crops1", info, LabelOptions(clips=2, top_k=2, workers=4), True) == folder
    assert (folder / "labels.jsonl").exists()  # the same model and options (workers do not matter): resumed
    assert _records_dir(tmp_path, "clips2-crops1", info, options, resume=False) == folder
    assert not (folder / "labels.jsonl").exists()  # resume=False starts afresh
    (folder / "labels.jsonl").write_text("{}\n")
    _records_dir(tmp_path, "clips2-crops1", info, LabelOptions(clips=2, top_k=2, precision="fp32"), True)
    assert not (folder / "labels.jsonl").exists()  # other options
    (folder / "labels.jsonl").write_text("{}\n")
    torch.manual_seed(1)
    other = FALForVideoClassification(preset("tiny", id2label=dict(enumerate(synth[1]))))
    _records_dir(tmp_path, "clips2-crops1", _describe_model(other), options, True)
    assert not (folder / "labels.jsonl").exists()  # another model
    assert model_fingerprint(other) == model_fingerprint(other) != info.fingerprint
    other.save_pretrained(tmp_path / "saved")
    assert model_fingerprint(str(tmp_path / "saved")) != info.fingerprint


def test_kinetics_segments_are_evaluated_inside_time_start_and_end(model_dir, synth, tmp_path):
    from falv.labeling.records import read_records
    from falv.video.testing import write_test_video

    _, classes = synth
    videos = tmp_path / "videos"
    videos.mkdir()
    write_test_video(videos / "AAAAAAAAAAA.mp4", frames=48, fps=12, size=(64, 64))  # 4 s, untrimmed
    write_test_video(videos / "BBBBBBBBBBB.mp4", frames=24, fps=12, size=(64, 64))  # 2 s
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        f"{classes[0]},AAAAAAAAAAA,1.0,3.0,test\n"
                        f"{classes[1]},BBBBBBBBBBB,5.0,9.0,test\n")  # past the end of its 2 s video
    out = tmp_path / "out"
    result = evaluate(str(model_dir), str(csv_path), out, workers=1, clips=2)
    assert result["num_videos"] == 1
    [failed] = result["failed"]
    assert failed["type"] == "segment_outside_video" and "BBBBBBBBBBB" in failed["path"]
    records = {r.path.rsplit("/", 1)[1]: r for r in read_records(out / "records" / "clips2-crops1" / "labels.jsonl")}
    segment = records["AAAAAAAAAAA.mp4"]
    assert segment.extra["segment"] == [1.0, 3.0]
    assert [t for w in segment.windows for t in (w.start, w.end)] == pytest.approx([1.0, 2.0, 2.0, 3.0])
