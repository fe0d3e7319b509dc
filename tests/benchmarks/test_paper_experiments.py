"""Experiments 1-5 and issue 21's data, resolution, frames, depth and features
(benchmarks/paper_experiments.py): the quick mode end to end, the JSON schema, the run cache
shared between experiments, and the pure helpers."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
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
    # issue 21, on the same cache (their default datasets are tested in test_plan_*): the
    # fraction-1, 32 px, 4-frame and 1-layer arms are the runs above; six short trainings more
    checks = {"data": _check_data, "resolution": _check_resolution, "frames": _check_frames, "depth": _check_depth,
              "features": _check_features}
    for name, check in checks.items():
        data = pe.main([name, *common])[name]
        assert json.loads((tmp_path / f"quick-{name}.json").read_text())["markdown"] == data["markdown"]
        check(pe, tmp_path, table1, cnn, data)


def _run_dirs(data, key):
    return [r["run_dir"] for r in data["results"]["temporal"][key]["runs"]]


def _check_data(pe, out, table1, cnn, data):
    arms = [a.key for a in pe.fraction_arms(pe.QUICK_DATA_FRACTIONS)]
    results = _check_common(data, pe, "data", arms)
    assert data["subset_rule"] == pe.SUBSET_RULE
    # the whole split: the very runs (same fingerprint) of Table 1 and the CNN comparison
    for key, source in (("divided_space_time", table1), ("space_only", table1), ("r2plus1d", cnn)):
        assert results[key]["fraction"] == 1.0 and results[key]["subset_csv"] is None
        assert _run_dirs(data, key) == _run_dirs(source, key)
        assert results[key]["runs"][0]["cached"] is True
    train = list(csv.reader((out / "data" / "quick-temporal" / "train.csv").open()))
    full = Counter(label for _, label in train)
    for key in arms[::2]:  # the half-data arms
        entry = results[key]
        assert entry["fraction"] == 0.5 and entry["runs"][0]["cached"] is False
        assert entry["runs"][0]["fingerprint"] != results[key.rsplit("_frac", 1)[0]]["runs"][0]["fingerprint"]
        rows = list(csv.reader(Path(entry["subset_csv"]).open()))[1:]
        assert len(rows) == entry["train_videos"] < data["datasets"]["temporal"]["counts"]["train"]
        # stratified: half of each class (rounded), every video one of the training split's
        assert Counter(label for _, label in rows) == {c: pe.subset_take(n, 0.5) for c, n in full.items()}
        root = out / "data" / "quick-temporal"
        assert {str((Path(entry["subset_csv"]).parent / p).resolve()) for p, _ in rows} <= {
            str((root / p).resolve()) for p, _ in train}
    assert "1/2 of the videos" in data["markdown"]


def _check_setting(pe, data, name, key, field, value):
    """A one-setting sweep: the changed arm has ``field == value``, the default arm is Table 1's run."""
    results = _check_common(data, pe, name, [a.key for a in pe.EXPERIMENT_SPECS[name].quick_arms])
    assert results[key]["model_config"][field] == value and results[key]["runs"][0]["cached"] is False
    assert results["divided_space_time"]["model_config"][field] == pe.QUICK_MODEL["overrides"][field]
    assert results["divided_space_time"]["runs"][0]["cached"] is True
    return results[key], results["divided_space_time"]


def _check_resolution(pe, out, table1, cnn, data):
    small, default = _check_setting(pe, data, "resolution", "image_size_16", "image_size", 16)
    assert small["gflops"] < default["gflops"] / 3  # a quarter of the patches per frame
    assert _run_dirs(data, "divided_space_time") == _run_dirs(table1, "divided_space_time")


def _check_frames(pe, out, table1, cnn, data):
    few, default = _check_setting(pe, data, "frames", "frames_2", "num_frames", 2)
    assert few["gflops"] < default["gflops"] < 2.5 * few["gflops"]


def _check_depth(pe, out, table1, cnn, data):
    deep, default = _check_setting(pe, data, "depth", "layers_2", "num_hidden_layers", 2)
    assert deep["params"] > default["params"] and deep["gflops"] > default["gflops"]
    assert "| 2 layers |" in data["markdown"] and "| 1 layer |" in data["markdown"]


def _check_features(pe, out, table1, cnn, data):
    import numpy as np

    results = _check_common(data, pe, "features", ["space_only", "divided_space_time"])
    assert data["metrics"][-2:] == list(pe.FEATURE_METRICS) and data["probe"] == pe.PROBE
    counts = data["datasets"]["temporal"]["counts"]
    for key in ("space_only", "divided_space_time"):
        entry = results[key]
        assert _run_dirs(data, key) == _run_dirs(table1, key) and entry["runs"][0]["cached"] is True
        for metric in pe.FEATURE_METRICS:
            _check_summary(entry["features"][metric])  # fractions in [0, 1], one seed
        feats = entry["runs"][0]["features"]
        assert feats["train_videos"] == counts["train"] and feats["test_videos"] == counts["test"]
        assert feats["dim"] == pe.QUICK_MODEL["overrides"]["hidden_size"]
        arrays = np.load(feats["embeddings"])
        assert arrays["train_x"].shape == (counts["train"], feats["dim"]) and len(arrays["test_y"]) == counts["test"]
        assert np.isfinite(arrays["train_x"]).all()
    png = Path(data["tsne"]["temporal"])
    assert png == out / "quick-features-tsne-temporal.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| nearest centroid | linear probe |" in data["markdown"]


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


def _fake_datasets(pe):
    return {name: pe.DatasetInfo(name, Path(name), {"mode": name}, ["a", "b"], {"train": 10, "val": 2, "test": 2})
            for name in pe.DATASETS}


def test_plan_runs_each_shared_arm_once(pe):
    settings = pe.Settings(out=Path("unused"), seeds=[0, 1])
    tasks = pe.plan_tasks(settings, ("table1", "table4", "cnn", "order", "views"), _fake_datasets(pe))
    # per dataset: 5 schemes + 2 embeddings + the CNN + space-then-time (the rest is Table 1's T+S)
    assert len(tasks) == 2 * 2 * 9
    views = [(d.name, arm.key, seed) for d, arm, seed, extras in tasks if extras]
    assert sorted(views) == sorted((d, "divided_space_time", s) for d in pe.DATASETS for s in (0, 1))
    assert all(extras == ("views",) for *_, extras in tasks if extras)


def test_plan_of_issue_21_adds_only_its_new_settings_on_their_default_datasets(pe):
    settings = pe.Settings(out=Path("unused"), seeds=[0, 1])
    assert settings.datasets_for("data") == ("temporal",) and settings.datasets_for("depth") == ("appearance",)
    assert settings.datasets_for("features") == pe.DATASETS
    tasks = pe.plan_tasks(settings, pe.EXPERIMENTS, _fake_datasets(pe))
    new = sorted({(d.name, arm.key) for d, arm, _, _ in tasks} - {
        (d.name, arm.key) for d, arm, _, _ in pe.plan_tasks(settings, pe.EXPERIMENTS[:5], _fake_datasets(pe))})
    # data: 3 models x the 1/4 and 1/2 fractions on temporal; 2 new settings each of resolution,
    # frames and depth on appearance; features only reads Table 1's runs; motion (issue 18): 3 arms on temporal
    assert new == sorted([("temporal", f"{m}_frac{p}") for m in ("divided_space_time", "space_only", "r2plus1d")
                          for p in (25, 50)] + [("appearance", k) for k in (
                              "image_size_32", "image_size_48", "frames_4", "frames_16", "layers_2", "layers_8")]
                         + [("temporal", k) for k in ("motion_frame_diff", "one_frame_tokens",
                                                      "one_frame_tokens_motion")])
    assert len(tasks) == 2 * (2 * 9 + 6 + 6 + 3)
    features = sorted((d.name, arm.key) for d, arm, seed, extras in tasks if "features" in extras and seed == 0)
    assert features == sorted((d, k) for d in pe.DATASETS for k in ("space_only", "divided_space_time"))
    both = [extras for d, arm, *_, extras in tasks if arm.key == "divided_space_time"]
    assert all(extras == ("views", "features") for extras in both)
    # --datasets overrides every experiment's default
    assert pe.Settings(out=Path("unused"), seeds=[0], datasets=("longrange",)).datasets_for("data") == ("longrange",)


def test_the_fraction_enters_the_fingerprint_only_below_one(pe):
    settings = pe.Settings(out=Path("unused"), seeds=[0])
    dataset = pe.DatasetInfo("temporal", Path("t"), {"mode": "temporal"}, ["a", "b"],
                             {"train": 400, "val": 88, "test": 84}, {"a": 200, "b": 200})
    name, basis, _ = pe.run_key(settings, dataset, pe.DEFAULT_ARM)
    assert pe.run_key(settings, dataset, dataclasses.replace(pe.DEFAULT_ARM, fraction=1.0))[0] == name
    assert "subset" not in basis and basis["resolved"]["epochs"] == 30
    quarter, half = (a for a in pe.fraction_arms(pe.DATA_FRACTIONS) if a.key.startswith("divided_space_time_"))
    q_name, q_basis, _ = pe.run_key(settings, dataset, quarter)
    assert q_name.startswith("divided_space_time_frac25-") and q_name.split("-")[1] != name.split("-")[1]
    assert q_basis["subset"] == {"fraction": 0.25, "train_videos": 100, "rule": pe.SUBSET_RULE}
    # the recipe's epochs follow the data: ceil(12000 / videos), clamped to [30, 100]
    assert q_basis["resolved"]["epochs"] == 100 and pe.run_key(settings, dataset, half)[1]["resolved"]["epochs"] == 60


def test_time_init_changes_only_the_fal_arms_time_embedding_and_their_cache_key(pe):
    """The tables were run with EXPERIMENT_MODEL's zero time init; --time-init reruns them with the
    tiny preset's random one, in runs of their own (the fingerprint holds the model config)."""
    assert pe.EXPERIMENT_MODEL["overrides"]["time_embedding_init_std"] == 0.0
    dataset = pe.DatasetInfo("longrange", Path("l"), {"mode": "longrange"}, ["a", "b"],
                             {"train": 400, "val": 88, "test": 84}, {"a": 200, "b": 200})
    plain = pe.Settings(out=Path("unused"), seeds=[0])
    random_time = pe.Settings(out=Path("unused"), seeds=[0], time_init=1.0)
    assert pe.parse_args(["table1", "--time-init", "1"]).time_init == 1.0
    assert pe.fal_config(random_time, pe.DEFAULT_ARM, ["a", "b"]).time_embedding_init_std == 1.0
    assert pe.fal_config(plain, pe.DEFAULT_ARM, ["a", "b"]).time_embedding_init_std == 0.0
    changed = {k for k, v in random_time.model["overrides"].items() if plain.model["overrides"].get(k) != v}
    assert changed == {"time_embedding_init_std"}
    assert pe.run_key(plain, dataset, pe.DEFAULT_ARM)[0] != pe.run_key(random_time, dataset, pe.DEFAULT_ARM)[0]


def test_subsets_are_stratified_nested_and_deterministic(pe):
    rows = [(f"v/{c}_{i}.mp4", c) for c in ("a", "b", "c") for i in range({"a": 100, "b": 34, "c": 7}[c])]
    quarter, half, whole = (pe.select_subset(rows, f) for f in (0.25, 0.5, 1.0))
    assert whole == rows
    assert Counter(c for _, c in quarter) == {"a": 25, "b": 9, "c": 2}  # round(n / 4), per class
    assert Counter(c for _, c in half) == {"a": 50, "b": 17, "c": 4}  # 3.5 -> 4
    assert set(quarter) < set(half) < set(whole)
    assert [r for r in rows if r in set(half)] == half  # the list's order is kept
    assert pe.select_subset(rows, 0.5) == half and pe.select_subset(rows, 0.5, seed=1) != half
    assert pe.subset_take(3, 0.1) == 1  # never an empty class


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
                                  ["table1", "--seeds", "0"], ["nope"], ["data", "--datasets", ""],
                                  ["table1", "--time-init", "-1"]])
def test_usage_errors(pe, argv):
    with pytest.raises(SystemExit) as info:
        pe.parse_args(argv)
    assert info.value.code == 2
