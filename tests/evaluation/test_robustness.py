"""falv evaluate --perturb: the robustness block, its records, the plot, the report and bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from falv.data.synth import SynthConfig, generate
from falv.evaluation import evaluate
from falv.evaluation.runner import robustness_summary
from falv.labeling.records import read_records
from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, plan_video
from falv.video.perturb import Perturbation


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    manifest = generate(root, SynthConfig(mode="appearance", classes=2, videos_per_class=3, splits=(0, 0, 1),
                                          duration=(1.0, 1.5), distractors=0), workers=2)
    return root, manifest.classes


def _scores(out, view):
    """{video: its label scores} from the engine's records of one view."""
    return {r.path: {x.label: x.score for x in r.labels} for r in read_records(out / "records" / view / "labels.jsonl")}


def test_cli_writes_the_robustness_block_plot_and_summary(synth, model_dir, tmp_path):
    from falv.cli.evaluate import evaluate as command

    root, _ = synth
    out = tmp_path / "out"
    result = CliRunner().invoke(command, ["--model", str(model_dir), "--data", str(root), "--out", str(out),
                                          "--perturb", "noise=0,noise=0.5,shuffle", "--perturb-seed", "3",
                                          "--workers", "1"], standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rob = metrics["robustness"]
    assert rob["metric"] == "top1" and rob["seed"] == 3 and (rob["clips"], rob["crops"]) == (1, 1)
    assert rob["clean"] == {"top1": metrics["top1"], "num_videos": 6}
    assert [r["spec"] for r in rob["perturbations"]] == ["noise=0", "noise=0.5", "shuffle=1"]
    for row in rob["perturbations"]:
        assert row["num_videos"] == 6 and row["num_failed"] == 0 and 0 <= row["top1"] <= 1
        assert row["drop"] == pytest.approx(metrics["top1"] - row["top1"])
        if metrics["top1"]:
            assert row["kept"] == pytest.approx(row["top1"] / metrics["top1"])
    # strength 0 is the clean evaluation, down to every score; noise reaches the model
    clean, zero, noisy = _scores(out, "clips1-crops1"), _scores(out, "clips1-crops1-noise-0"), \
        _scores(out, "clips1-crops1-noise-0.5")
    assert zero.keys() == clean.keys()
    for video in clean:  # the same pixels; batches may differ between runs (float rounding)
        assert zero[video] == pytest.approx(clean[video], abs=1e-5)
    assert rob["perturbations"][0]["drop"] == 0
    assert all(noisy[v] != pytest.approx(clean[v], abs=1e-3) for v in clean)
    assert (out / "robustness.png").stat().st_size > 1000
    assert metrics["files"]["robustness_png"] == str(out / "robustness.png")
    assert "noise=0.5: top-1" in result.output and "% of clean kept" in result.output or metrics["top1"] == 0


def test_perturbed_runs_resume_and_repeat(synth, model_dir, tmp_path):
    root, _ = synth
    out = tmp_path / "out"
    first = evaluate(str(model_dir), str(root), out, perturb="noise=0.3", perturb_seed=1, workers=1)
    records = out / "records" / "clips1-crops1-noise-0.3" / "labels.jsonl"
    stamp = records.stat().st_mtime_ns
    again = evaluate(str(model_dir), str(root), out, perturb="noise=0.3", perturb_seed=1, workers=1)
    assert records.stat().st_mtime_ns == stamp  # resumed: nothing labelled again
    fresh = evaluate(str(model_dir), str(root), tmp_path / "fresh", perturb="noise=0.3",
                     perturb_seed=1, workers=2)  # other workers, same draws
    assert first["robustness"]["perturbations"] == again["robustness"]["perturbations"]
    ours, theirs = _scores(out, "clips1-crops1-noise-0.3"), _scores(tmp_path / "fresh", "clips1-crops1-noise-0.3")
    assert all(ours[v] == pytest.approx(theirs[v], abs=1e-5) for v in ours)
    assert [r["top1"] for r in fresh["robustness"]["perturbations"]] == \
        [r["top1"] for r in first["robustness"]["perturbations"]]
    # another seed: other draws, so the records are not reused
    other = evaluate(str(model_dir), str(root), out, perturb="noise=0.3", perturb_seed=2, workers=1)
    redrawn = _scores(out, "clips1-crops1-noise-0.3")
    assert other["robustness"]["seed"] == 2 and any(redrawn[v] != pytest.approx(theirs[v], abs=1e-4) for v in ours)


def test_the_worker_perturbs_what_it_decodes(synth):
    root, _ = synth
    video = str(sorted((root / "videos").rglob("*.mp4"))[0])
    spec = ModelSpec(num_frames=4, short_side=32, crop=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    plan = plan_video(video, spec, LabelOptions(clips=3))
    stamps = [ts for *_, ts in plan["windows"]]
    clean = decode_chunk(video, stamps, 32, 30.0)["frames"]
    p = Perturbation("jpeg", 10, seed=5)
    # the chunk starting at window 1 of the video perturbs windows 1 and 2 as the whole video does
    assert np.array_equal(decode_chunk(video, stamps[1:], 32, 30.0, None, p, 1)["frames"],
                          p.apply(clean, video, 0)[1:])


def test_fps_perturbation_moves_the_decoded_timestamps(synth):
    from falv.labeling.engine import decode_tasks

    root, _ = synth
    video = str(sorted((root / "videos").rglob("*.mp4"))[0])
    spec = ModelSpec(num_frames=8, short_side=32, crop=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    plan = plan_video(video, spec, LabelOptions())
    [plain] = decode_tasks(video, plan, spec, LabelOptions())
    [held] = decode_tasks(video, plan, spec, LabelOptions(perturb=Perturbation("fps", 0.25)))
    fps = plan["info"]["fps"]
    assert held["args"][1] == Perturbation("fps", 0.25).retime(plain["args"][1], fps) != plain["args"][1]


@pytest.mark.parametrize("args, message", [
    (["--perturb", "wobble"], "unknown perturbation 'wobble'"),
    (["--perturb", "blur=100"], "blur: the strength must be a number in [0, 50]"),
    (["--perturb", "blur", "--data", None], None),
])
def test_usage_errors(synth, model_dir, tmp_path, args, message):
    from falv.cli.main import cli

    root, _ = synth
    base = ["evaluate", "--model", str(model_dir), "--out", str(tmp_path / "o")]
    if None in args:  # no --data: only untrimmed videos, nothing to perturb
        base += ["--untrimmed", str(root), "--perturb", "blur"]
        message = "--perturb perturbs the labeled videos: give --data"
    else:
        base += ["--data", str(root), *args]
    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_the_function_refuses_perturbing_nothing(model_dir, tmp_path):
    from falv.errors import ConfigError

    with pytest.raises(ConfigError, match="give a dataset"):
        evaluate(str(model_dir), None, tmp_path, untrimmed=str(tmp_path), perturb="blur")


@pytest.mark.parametrize("clean, values, drops, kept, mean_kept", [
    (0.8, [0.8, 0.4, 0.0], [0.0, 0.4, 0.8], [1.0, 0.5, 0.0], 0.5),
    (0.0, [0.0, 0.5], [0.0, -0.5], [None, None], None),
    (None, [0.5], [None], [None], None),
    (0.5, [None], [None], [None], None),
])
def test_robustness_summary_table(clean, values, drops, kept, mean_kept):
    perturbed = [(Perturbation("blur", i + 1.0), {"top1": v, "num_videos": 4}) for i, v in enumerate(values)]
    out = robustness_summary({"top1": clean, "num_videos": 4}, perturbed, "top1", 7, 2, 3)
    assert [r["drop"] for r in out["perturbations"]] == pytest.approx(drops) if clean is not None else \
        all(r["drop"] is None for r in out["perturbations"])
    assert [r["kept"] for r in out["perturbations"]] == pytest.approx(kept) if None not in kept else \
        [r["kept"] for r in out["perturbations"]] == kept
    assert out["mean_kept"] == (pytest.approx(mean_kept) if mean_kept is not None else None)
    assert (out["seed"], out["clips"], out["crops"]) == (7, 2, 3)


def test_report_shows_the_robustness_table_and_plot(synth, model_dir, tmp_path):
    from falv.report.html import evaluation_section

    root, _ = synth
    out = tmp_path / "out"
    evaluate(str(model_dir), str(root), out, perturb="blur=1", workers=1)
    html = evaluation_section(out, gallery=0)
    assert "<h3>Robustness</h3>" in html and "blur=1" in html and 'alt="robustness"' in html
