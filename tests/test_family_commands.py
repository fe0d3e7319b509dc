"""Every model family works in every falv command: label, features, convert, evaluate, train
(fine-tuning with a new head), export and presets. Each family's checkpoint is written in its
original format (a transformers directory, a PySlowFast ``.pyth``, a TSM ``.pth.tar`` ...) by
the builders below; its numbers against the reference implementations are in tests/model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from falv.cli.main import main
from falv.hub.families import family_of, load_model
from falv.video.testing import write_test_video

SIZE, FRAMES, CLASSES = 32, 4, 3


def _videomae(path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VideoMAEConfig(image_size=SIZE, patch_size=16, num_frames=FRAMES, tubelet_size=2,
                                      hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, num_labels=CLASSES)
    torch.manual_seed(0)
    transformers.VideoMAEForVideoClassification(cfg).eval().save_pretrained(path)
    return path


def _baseline(path: Path) -> Path:
    from falv.model.baseline import R2Plus1DForVideoClassification, baseline_preset

    torch.manual_seed(0)
    cfg = baseline_preset("tiny", num_frames=FRAMES, image_size=SIZE, num_labels=CLASSES)
    R2Plus1DForVideoClassification(cfg).save_pretrained(path)
    return path


def _fal(path: Path) -> Path:
    from falv import FALForVideoClassification, preset

    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", num_frames=FRAMES, image_size=SIZE, num_labels=CLASSES)).save_pretrained(path)
    return path


def _x3d(path: Path) -> Path:
    from tests.model.test_x3d import _write

    path.mkdir()
    return _write(path, "pyslowfast", "plain")[0]  # a PySlowFast .pyth with its cfg


def _tsm(path: Path) -> Path:
    from tests.model.test_tsm import _write

    path.mkdir()
    return _write(path, "r50")[0]  # TSM's main.py checkpoint (DataParallel names, new_fc)


def _pyslowfast(path: Path) -> Path:
    from tests.model.test_slowfast import _write

    path.mkdir()
    return _write(path, layout="pyslowfast", variant="slowfast_8x8", frames=8, size=32)[0]  # .pyth with its cfg


def _mvit(path: Path) -> Path:
    from tests.model.test_mvit import _write_v2

    path.mkdir()
    return _write_v2(path, "cls_rel_pos")[0]  # an MViTv2 PySlowFast .pyth with its cfg


#: family -> writer of a tiny checkpoint in the family's original format
BUILDERS = {"fal": _fal, "r2plus1d": _baseline, "videomae": _videomae, "x3d": _x3d, "tsm": _tsm,
            "pyslowfast": _pyslowfast, "mvit": _mvit}


def _clips(model, batch: int = 1) -> torch.Tensor:
    cfg = model.config
    return torch.randn(batch, cfg.num_frames, cfg.num_channels, cfg.image_size, cfg.image_size)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-videos")
    return [write_test_video(root / f"v{i}.mp4", frames=24, fps=12, size=(48, 64)) for i in range(2)]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"family-{request.param}")
    return request.param, BUILDERS[request.param](root / "source")


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_the_checkpoint_is_recognised_as_its_family(checkpoint):
    family, source = checkpoint
    model = load_model(source)
    assert family_of(model) == family
    x = _clips(model, 2)
    with torch.no_grad():
        out = model(x)
        assert out.logits.shape == (2, model.config.num_labels)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)
        assert out.embeddings.shape == model.forward_features(x).shape


def test_loading_builds_no_throw_away_weights(checkpoint):
    """A checkpoint loads into a meta-device skeleton that is not initialised first: torch's
    meta ``normal_`` would import ``torch._dynamo``, about 2 s of every start-up (issue 19).
    Checked in a fresh interpreter, through the inference path a run takes."""
    import subprocess
    import sys

    _family, source = checkpoint
    code = ("import sys\nfrom falv.hub.families import load_model\nfrom falv.inference import prepare_for_inference\n"
            f"prepare_for_inference(load_model({str(source)!r}), precision='fp32')\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_label_writes_one_record_per_video(checkpoint, videos, tmp_path):
    _family, source = checkpoint
    code = _run(["label", *map(str, videos), "--model", str(source), "--out", str(tmp_path), "--workers", "1",
                 "--precision", "fp32", "--format", "jsonl,csv", "-q"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] is None and r["labels"] for r in records)


def test_features_match_label_embeddings(checkpoint, videos, tmp_path):
    _family, source = checkpoint
    code = _run(["features", str(videos[0]), "--model", str(source), "--out", str(tmp_path / "f"),
                 "--bucket-seconds", "0.5", "--workers", "1", "--precision", "fp32", "-q"])
    assert code == 0
    (entry,) = [json.loads(line) for line in (tmp_path / "f" / "features.jsonl").read_text().splitlines()]
    model = load_model(source)
    assert entry["num_features"] == 4 and entry["dim"] == model.forward_features(_clips(model)).shape[-1]


def test_convert_writes_a_falv_directory_with_the_same_outputs(checkpoint, tmp_path):
    _family, source = checkpoint
    assert _run(["convert", str(source), str(tmp_path / "out")]) == 0
    original, converted = load_model(source), load_model(tmp_path / "out")
    assert family_of(converted) == family_of(original)
    x = _clips(original)
    with torch.no_grad():
        torch.testing.assert_close(converted(x).logits, original(x).logits, atol=1e-5, rtol=1e-5)


def test_fine_tuning_gives_a_new_head_and_a_model_of_the_same_family(checkpoint, tmp_path):
    from falv.data.synth import SynthConfig, generate
    from falv.training import TrainConfig, train

    family, source = checkpoint
    data = tmp_path / "data"
    generate(data, SynthConfig(mode="appearance", classes=("red-solid-circle", "green-striped-cross"),
                               videos_per_class=4, seed=3, width=SIZE, height=SIZE, duration=(0.6, 0.8),
                               distractors=0, noise=0.0), overwrite=True)
    result = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), init=str(source), epochs=1, batch_size=4,
                               precision="fp32", workers=0), echo=None)
    tuned = load_model(result.best_dir)
    assert family_of(tuned) == family
    assert tuned.config.labels == (data / "labels.txt").read_text().split()


def test_export_runs_in_onnxruntime_with_the_same_logits(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from falv.export.onnx import export_model
    from falv.export.runtime import prepare_runtime

    _family, source = checkpoint
    model = load_model(source)
    export_model(model, tmp_path / "export")
    runtime = prepare_runtime(tmp_path / "export", "onnxruntime", "fp32", "cpu")
    x = _clips(model, 2)
    with torch.no_grad():
        expected = model(x).logits
    torch.testing.assert_close(runtime.predict(x)[0], expected, atol=1e-4, rtol=1e-4)


def test_presets_list_every_family_with_presets(capsys):
    from falv.hub.families import families

    assert _run(["presets", "--family", "all"]) in (0, None)
    out = capsys.readouterr().out
    for fam in families():
        for name in fam.presets or {}:
            assert name in out


def test_the_inference_path_folds_batch_norms_and_matches_the_plain_forward(checkpoint):
    """prepare_for_inference folds every BatchNorm the family declares and keeps the logits."""
    import copy

    from falv.inference import prepare_for_inference

    _family, source = checkpoint
    model = load_model(source)
    norms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    declared = len(list(model.conv_bn_pairs())) if hasattr(model, "conv_bn_pairs") else 0
    runner = prepare_for_inference(copy.deepcopy(model), "cpu", "fp32")
    assert runner.options["folded_batch_norms"] == declared
    left = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in runner.model.modules())
    assert left == norms - declared
    if declared:
        assert left == 0, "a family with BatchNorms should declare every conv -> BatchNorm pair"
    x = _clips(model, 2)
    with torch.no_grad():
        expected = model(x).logits
    got = runner.predict(x)[0]
    assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("args, message", [
    (["--family", "nope"], "unknown model family 'nope'"),
    (["--family", "videomae", "--preset", "tiny"], "videomae has no preset 'tiny'"),
    (["--preset", "videomae-small"], "unknown preset 'videomae-small'"),
])
def test_bench_names_unknown_families_and_presets(args, message, capsys):
    assert _run(["bench", *args]) == 2
    assert message in capsys.readouterr().err


def test_serve_labels_a_job_with_the_family(checkpoint, videos, tmp_path):
    pytest.importorskip("fastapi")
    import time

    from fastapi.testclient import TestClient

    from falv.serve.app import create_app
    from falv.serve.service import LabelService, ServeSettings

    _family, source = checkpoint
    settings = ServeSettings(model=str(source), data_dir=tmp_path / "data", allow_roots=(videos[0].parent,), workers=1)
    with TestClient(create_app(LabelService(settings))) as client:
        health = client.get("/health").json()
        assert health["model_class"] == type(load_model(source)).__name__
        job_id = client.post("/v1/jobs", json={"path": str(videos[0])}).json()["id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert job["status"] == "done" and job["record"]["labels"]


def test_explain_says_it_shows_attention_of_fal_models_only(checkpoint, videos, tmp_path, capsys):
    family, source = checkpoint
    if family == "fal":
        pytest.skip("FAL models are explained (tests/explain)")
    assert _run(["explain", str(videos[0]), "--model", str(source), "--out", str(tmp_path)]) == 2
    assert "where FAL/TimeSformer models attend" in capsys.readouterr().err
