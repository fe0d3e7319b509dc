"""Experiments 1-5 (benchmarks/paper_experiments.py): the quick mode end to end, the JSON schema,
the run cache shared between experiments, and the pure helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import falv

from . import load_script


@pytest.fixture(scope="module")
def pe():
    return load_script("paper_experiments")


def test_quick_experiments_end_to_end(pe, tmp_path):
    """Table 1 restricted to two schemes, then the views and CNN experiments, which reuse
    Table 1's divided run and add one R(2+1)D run: three short trainings on the temporal set
    (one test, so that pytest-xdist runs them once)."""
    common = ["--quick", "--datasets", "temporal", "--out", str(tmp_path), "--eval-workers", "1"]
    table1 = pe.main(["table1", "--schemes", "space_only,divided_space_time", "--markdown", str(tmp_path / "t.md"),
                      *common])["table1"]
    views = pe.main(["views", *common])["views"]
    cnn = pe.main(["cnn", *common])["cnn"]
    _check_table1(pe, tmp_path, table1)
    _check_views(pe, tmp_path, table1, views)
    _check_cnn(pe, tmp_path, cnn)
    # a rerun trains nothing
    again = pe.main(["table1", "--quick", "--schemes", "space_only", "--datasets", "temporal", "--out", str(tmp_path)])
    (run,) = again["table1"]["results"]["temporal"]["space_only"]["runs"]
    assert run["cached"] is True


def _json(value):
    return json.loads(json.dumps(value))


def _check_summary(summary, n=1):
    assert set(summary) == {"mean", "std", "n", "values"}
    assert summary["n"] == n and len(summary["values"]) == n
    assert 0.0 <= summary["mean"] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in summary["values"])
    assert summary["std"] is None if n == 1 else summary["std"] >= 0


def _check_common(data, pe, experiment, arms):
    assert data["experiment"] == experiment and data["quick"] is True and data["seeds"] == [0]
    assert data["falv_version"] == falv.__version__ and data["wall_seconds"] > 0
    assert data["command"].startswith(f"python benchmarks/paper_experiments.py {experiment} ")
    assert " --quick" in data["command"]
    assert data["model"] == _json(pe.QUICK_MODEL)
    assert data["recipe"]["epochs"] == pe.QUICK_EPOCHS and "seed" not in data["recipe"]
    assert list(data["datasets"]) == ["temporal"]
    counts = data["datasets"]["temporal"]["counts"]
    assert counts["train"] > 0 and counts["test"] > 0
    assert data["datasets"]["temporal"]["synth_config"]["mode"] == "temporal"
    assert [a["key"] for a in data["arms"]] == arms
    assert list(data["results"]["temporal"]) == arms
    for key in arms:
        entry = data["results"]["temporal"][key]
        assert isinstance(entry["params"], int) and entry["params"] > 0
        assert entry["gflops"] > 0
        assert entry["train_config"]["epochs"] == pe.QUICK_EPOCHS and entry["train_config"]["lr"] > 0
        assert set(entry["metrics"]) == set(pe.TEST_METRICS)
        for summary in entry["metrics"].values():
            _check_summary(summary)
        (run,) = entry["runs"]
        assert run["seed"] == 0 and run["test"]["num_videos"] == counts["test"]
        assert run["train"]["epochs_run"] == pe.QUICK_EPOCHS and run["train"]["seconds"] > 0
        assert Path(run["run_dir"], "train", "best", "config.json").is_file()
        assert Path(run["run_dir"], "eval", "metrics.json").is_file()
    return data["results"]["temporal"]


def _check_table1(pe, out, returned):
    data = json.loads((out / "quick-table1.json").read_text())
    assert data["markdown"] == returned["markdown"]
    results = _check_common(data, pe, "table1", ["space_only", "divided_space_time"])
    assert results["space_only"]["model_config"]["attention_type"] == "space_only"
    assert results["divided_space_time"]["model_config"]["attention_type"] == "divided_space_time"
    # divided attention adds a temporal step (parameters and FLOPs) to space-only attention
    assert results["space_only"]["params"] < results["divided_space_time"]["params"]
    assert results["space_only"]["gflops"] < results["divided_space_time"]["gflops"]
    table = (out / "t.md").read_text()
    assert "| S (space only) |" in table and "| T+S (divided) |" in table and "top-1 temporal" in table


def _check_views(pe, out, table1, returned):
    """The views experiment reuses Table 1's T+S run and covers every clip count."""
    data = json.loads((out / "quick-views.json").read_text())
    assert data["markdown"] == returned["markdown"]
    results = _check_common(data, pe, "views", ["divided_space_time"])
    entry = results["divided_space_time"]
    (run,) = entry["runs"]
    assert run["cached"] is True  # the same run as Table 1's T+S row, not trained again
    assert run["run_dir"] == table1["results"]["temporal"]["divided_space_time"]["runs"][0]["run_dir"]
    assert [v["clips"] for v in entry["views"]] == list(pe.QUICK_CLIP_COUNTS)
    for view in entry["views"]:
        for metric in pe.VIEW_METRICS:
            _check_summary(view[metric])
        # the majority action is one of the video's actions
        assert view["top1_majority"]["mean"] <= view["top1_any"]["mean"]
    assert entry["untrimmed"]["videos"] == pe.QUICK_UNTRIMMED["untrimmed"]
    assert entry["untrimmed"]["mean_actions_per_video"] >= 1
    assert "| 1 |" in data["markdown"] and "| 2 |" in data["markdown"]
    assert (out / "quick-views.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # Figure 6 as a picture


def _check_cnn(pe, out, returned):
    data = json.loads((out / "quick-cnn.json").read_text())
    results = _check_common(data, pe, "cnn", ["divided_space_time", "r2plus1d"])
    assert data["cnn"] == _json(pe.QUICK_CNN)
    assert results["r2plus1d"]["kind"] == "cnn"
    assert results["r2plus1d"]["model_config"]["model_type"] == "falv_r2plus1d"
    assert results["divided_space_time"]["runs"][0]["cached"] is True
    assert results["r2plus1d"]["runs"][0]["cached"] is False
    for column in ("precision (macro)", "recall (macro)", "F1 (macro)"):
        assert column in returned["markdown"]


def test_the_full_experiment_model_matches_the_cnn_in_flops(pe):
    from falv.model.baseline import count_flops as cnn_flops
    from falv.model.flops import count_flops

    settings = pe.Settings(out=Path("unused"), seeds=[0])
    classes = [str(i) for i in range(10)]
    fal = count_flops(pe.fal_config(settings, pe.DEFAULT_ARM, classes))
    cnn = cnn_flops(pe.cnn_config(settings, classes))
    assert abs(cnn / fal - 1) < 0.1


def test_plan_runs_each_shared_arm_once(pe):
    settings = pe.Settings(out=Path("unused"), seeds=[0, 1])
    datasets = {name: pe.DatasetInfo(name, Path(name), {"mode": name}, ["a", "b"], {"train": 10, "val": 2, "test": 2})
                for name in pe.DATASETS}
    tasks = pe.plan_tasks(settings, pe.EXPERIMENTS, datasets)
    # per dataset: 5 schemes + 2 embeddings + the CNN + space-then-time (the rest is Table 1's T+S)
    assert len(tasks) == 2 * 2 * 9
    views = [(d.name, arm.key, seed) for d, arm, seed, with_views in tasks if with_views]
    assert sorted(views) == sorted((d, "divided_space_time", s) for d in pe.DATASETS for s in (0, 1))


def test_majority_label_takes_the_longest_action_then_the_earliest(pe):
    def seg(start, end, label):
        return {"segment": [start, end], "label": label}

    assert pe.majority_label([seg(0, 2, "a"), seg(3, 6, "b")]) == "b"
    assert pe.majority_label([seg(0, 2, "a"), seg(3, 4.5, "b"), seg(5, 6, "b")]) == "b"  # 2.5 s in all
    assert pe.majority_label([seg(1, 3, "b"), seg(4, 6, "a")]) == "b"  # tie: the first


def test_summarize_uses_the_sample_std_and_skips_missing_values(pe):
    s = pe.summarize([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2) and s["n"] == 3
    assert pe.summarize([0.4])["std"] is None
    assert pe.summarize([0.4, None, 0.6]) == {"mean": pytest.approx(0.5), "std": pytest.approx(math.sqrt(0.02)),
                                              "n": 2, "values": [0.4, None, 0.6]}
    assert pe.fmt_pct(pe.summarize([0.5, 0.7, 0.9])) == "70.0 ± 20.0"
    assert pe.fmt_pct(pe.summarize([0.25])) == "25.0"


@pytest.mark.parametrize("argv", [["table1", "--datasets", "kinetics"], ["table1", "--arms", "nope"],
                                  ["table1", "--seeds", "0"], ["nope"]])
def test_usage_errors(pe, argv):
    with pytest.raises(SystemExit) as info:
        pe.parse_args(argv)
    assert info.value.code == 2
