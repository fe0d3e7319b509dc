"""falv export on the command line, and --runtime onnxruntime/openvino through falv label and evaluate."""

import json

import pytest
import torch
from click.testing import CliRunner

from falv import FALForVideoClassification, preset
from falv.cli.main import cli, main
from falv.labeling.engine import label
from falv.video.testing import write_test_video

LABELS = {0: "red", 1: "green", 2: "grey"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = FALForVideoClassification(preset("tiny", id2label=LABELS))
    with torch.no_grad():  # margins between classes well above fp32 rounding
        model.head.fc.weight.mul_(50)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return [str(write_test_video(root / f"v{i}.mp4", frames=16 + 8 * i, fps=12, size=(64, 80), texture=True))
            for i in range(3)]


def test_cli_export_writes_the_folder_and_labels_with_it(model_dir, videos, tmp_path):
    out = tmp_path / "exported"
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--out", str(out), "-q"], standalone_mode=False)
    assert result.exception is None, result.output
    assert {"model.onnx", "export.json", "config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    assert "model.onnx" in result.output and "opset 17" in result.output
    # the export folder works as --model, and --runtime onnxruntime runs its model.onnx
    runner = CliRunner()
    args = ["label", *videos, "--model", str(out), "--out", str(tmp_path / "labels"), "--precision", "fp32",
            "--runtime", "onnxruntime", "--clips", "2", "-q"]
    labelled = runner.invoke(cli, args, standalone_mode=False)
    assert labelled.exception is None and labelled.return_value == 0, labelled.output
    rows = [json.loads(line) for line in (tmp_path / "labels" / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r.get("error") is None for r in rows)


def test_label_runtimes_give_torch_fp32_top1(model_dir, videos, tmp_path):
    def run(runtime):
        records = label(videos, str(model_dir), out_dir=tmp_path / runtime, clips=2, precision="fp32",
                        runtime=runtime, embeddings=True, workers=1)
        return {r.path: r for r in records}

    torch_records = run("torch")
    for runtime in ("onnxruntime", "openvino"):
        other = run(runtime)
        assert other.keys() == torch_records.keys()
        for path, ref in torch_records.items():
            got = other[path]
            assert ref.error is None and got.error is None
            assert got.labels[0].label == ref.labels[0].label, runtime  # same top-1
            ref_scores = {x.label: x.score for x in ref.labels}
            got_scores = {x.label: x.score for x in got.labels}
            assert max(abs(ref_scores[k] - got_scores[k]) for k in ref_scores) < 1e-4
            assert len(ref.windows) == len(got.windows) == 2
            for ref_window, got_window in zip(ref.windows, got.windows):
                assert ref_window.labels[0].label == got_window.labels[0].label


@pytest.mark.parametrize("args,code,message", [
    (["--format", "tflite"], 2, "valid formats: onnx, openvino"),
    (["--calibrate", "."], 2, "--calibrate needs --quantize int8"),
    (["--quantize", "int4"], 2, "--quantize"),
])
def test_export_usage_errors_are_one_line(model_dir, tmp_path, args, code, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(model_dir), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == code and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_export_of_a_missing_model_and_bad_runtime_options(tmp_path, videos, model_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 3 and err.startswith("Error:") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["label", videos[0], "-m", str(model_dir), "-o", str(tmp_path / "l"), "--runtime", "onnxruntime",
              "--precision", "bf16"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--runtime onnxruntime runs precision" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["label", videos[0], "-m", str(model_dir), "-o", str(tmp_path / "l"), "--runtime", "tvm"])
    assert exit_.value.code == 2


def test_evaluate_and_bench_take_runtime(tmp_path):
    from falv.cli.bench import run_bench
    from falv.evaluation.runner import evaluate

    result = run_bench("tiny", repeats=1, warmup=0, transformers=False, runtime="onnxruntime",
                       precision="fp32", peak_sizes=(64,))
    assert result["runtime"] == "onnxruntime" and result["precision"] == "fp32"
    assert [r["name"] for r in result["rows"]] == ["onnxruntime fp32", "falv fp32"]
    agreement = result["agreement"]["onnxruntime fp32 vs falv fp32"]
    assert agreement["max_abs_logit_diff"] < 1e-4
    from falv.data.synth import SynthConfig, generate

    manifest = generate(tmp_path / "data", SynthConfig(mode="appearance", classes=3, videos_per_class=1,
                                                       splits=(0, 0, 1), duration=(1.0, 1.0), distractors=0),
                        workers=1)
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label=dict(enumerate(manifest.classes)))).save_pretrained(
        tmp_path / "model")
    metrics = {}
    for runtime in ("torch", "openvino"):
        metrics[runtime] = evaluate(str(tmp_path / "model"), str(tmp_path / "data"), tmp_path / runtime,
                                    precision="fp32",
                                    runtime=runtime, workers=1)
    assert metrics["openvino"]["runtime"] == "openvino" and metrics["openvino"]["precision"] == "fp32"
    assert metrics["openvino"]["top1"] == metrics["torch"]["top1"]
