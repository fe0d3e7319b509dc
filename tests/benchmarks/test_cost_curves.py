"""Experiment 6 (benchmarks/cost_curves.py): the quick mode end to end, the fit check, failures."""

from __future__ import annotations

import json

import pytest

from . import load_script


@pytest.fixture(scope="module")
def cost_curves():
    return load_script("cost_curves")


@pytest.fixture(scope="module")
def quick_run(cost_curves, tmp_path_factory):
    """One quick run for the module: a few seconds (one child process for all its runs)."""
    out = tmp_path_factory.mktemp("cost_curves")
    cost_curves.main(["--quick", "--json", str(out / "quick.json"), "--plot", str(out / "quick.png")])
    return json.loads((out / "quick.json").read_text()), out / "quick.png"


def _row(result, sweep, scheme, frames, size):
    (row,) = [r for r in result["rows"] if (r["sweep"], r["scheme"], r["num_frames"], r["image_size"])
              == (sweep, scheme, frames, size)]
    return row


def test_quick_mode_json(quick_run):
    result, png = quick_run
    assert result["quick"] and result["complete"] and result["combos"] == ["fp32/sdpa", "fp32/reference"]
    assert result["command"].startswith("python benchmarks/cost_curves.py --quick")
    assert png.is_file() and png.stat().st_size > 10_000
    for row in result["rows"]:
        for run in row["runs"].values():
            assert run["status"] == "ok", run
            assert run["peak_gb"] >= 0 and run["seconds"] > 0 and run["finite"]


def test_flops_grow_with_frames_and_joint_grows_faster(quick_run):
    result, _ = quick_run
    growth = {}
    for scheme in ("joint_space_time", "divided_space_time"):
        f8 = _row(result, "frames", scheme, 8, 64)["gflops"]
        f16 = _row(result, "frames", scheme, 16, 64)["gflops"]
        assert f16 > f8
        growth[scheme] = f16 / f8
    assert growth["joint_space_time"] > growth["divided_space_time"]
    # Divided attention is linear in frames up to the head and the CLS token (Eq. 6-7).
    assert growth["divided_space_time"] == pytest.approx(2.0, rel=0.02)
    # Resolution too: 96 px has 2.25x the patches of 64 px.
    joint = _row(result, "resolution", "joint_space_time", 8, 96)["gflops"] / _row(
        result, "resolution", "joint_space_time", 8, 64)["gflops"]
    divided = _row(result, "resolution", "divided_space_time", 8, 96)["gflops"] / _row(
        result, "resolution", "divided_space_time", 8, 64)["gflops"]
    assert joint > divided > 1


def test_materialised_joint_attention_needs_the_most_memory(quick_run):
    """The reference path holds the (L x L) attention matrix: joint's peak follows L^2."""
    result, _ = quick_run
    joint = _row(result, "resolution", "joint_space_time", 8, 96)["runs"]
    divided = _row(result, "resolution", "divided_space_time", 8, 96)["runs"]
    assert joint["fp32/reference"]["peak_gb"] > 3 * divided["fp32/reference"]["peak_gb"]
    assert joint["fp32/reference"]["peak_gb"] > 3 * joint["fp32/sdpa"]["peak_gb"]


def test_configs_predicted_not_to_fit_are_skipped(cost_curves, monkeypatch):
    monkeypatch.setattr(cost_curves, "mem_available", lambda: int(2.3e9))
    monkeypatch.setattr(cost_curves, "run_child", lambda *a, **k: pytest.fail("must not run"))
    points = [cost_curves.Point("frames", "joint_space_time", 8, 64)]
    (row,) = cost_curves.measure(points, True, ("fp32",), ("reference",), margin_gb=2.0, timeout=10, threads=1,
                                 log=lambda msg: None)
    run = row["runs"]["fp32/reference"]
    assert run["status"] == "does not fit"
    assert run["reason"] == "does not fit (predicted 0.4 GB > 0.3 GB)"


def test_memory_prediction_of_base_joint_attention(cost_curves):
    from falv.model.flops import count_parameters

    config = cost_curves.model_config(cost_curves.Point("frames", "joint_space_time", 96, 224), False)
    pred = cost_curves.predict_memory(config, "fp32", "reference", count_parameters(config))
    length = 96 * 196 + 1
    assert pred["attention"] == 2 * 12 * length**2 * 4  # scores and softmax, 12 heads, fp32: ~34 GB
    assert cost_curves.predict_memory(config, "fp32", "sdpa", count_parameters(config))["attention"] == 0


def test_a_child_that_dies_or_grows_too_big_is_reported(cost_curves):
    bad = dict(config={"attention_type": "nope"}, dtype="fp32", backend="sdpa", threads=1)
    (died,) = cost_curves.run_child([bad], limit_bytes=int(50e9), timeout=60)
    assert died["status"] == "died" and "exit code 1" in died["reason"] and "attention_type" in died["reason"]
    ok = cost_curves.model_config(cost_curves.Point("frames", "divided_space_time", 8, 64), True)
    spec = dict(config=ok.to_dict(), dtype="fp32", backend="sdpa", threads=1)
    (stopped,) = cost_curves.run_child([spec], limit_bytes=int(30e6), timeout=60)  # torch alone needs more
    assert stopped["status"] == "does not fit" and "GB RSS >" in stopped["reason"]
