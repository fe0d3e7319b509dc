"""Training curves from log.jsonl: three PNGs, tolerant reading."""

from __future__ import annotations

import pytest
from PIL import Image

from falv.report import ReportError
from falv.report.plots import PLOT_NAMES, load_training_log, plot_training, read_log

from .conftest import write_log


def check_pngs(written: dict, out_dir) -> None:
    assert set(written) == set(PLOT_NAMES)
    for name, path in written.items():
        assert path == out_dir / f"{name}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100


def test_plot_training_writes_three_pictures(run_dir):
    out = run_dir / "plots"
    check_pngs(plot_training(run_dir / "log.jsonl", out), out)


def test_missing_keys_nulls_and_damage_are_tolerated(tmp_path):
    log = write_log(tmp_path / "log.jsonl", [
        {"event": "step", "step": 1, "loss": 1.0},                      # no lr, no epoch
        {"event": "step", "step": 2, "loss": float("nan"), "lr": 0.1},  # NaN loss: a gap
        "not json at all",
        [1, 2, 3],                                                      # JSON, not an object
        {"event": "epoch", "epoch": 0, "train_loss": None, "val_top1": 0.5},
        {"event": "something new", "x": 1},
        {"event": "end"},
        '{"event": "step", "step": 3, "lo',                             # killed mid-line
    ])
    assert len(read_log(log)) == 5
    check_pngs(plot_training(log, tmp_path / "p"), tmp_path / "p")


def test_empty_log_still_gives_the_three_plots(tmp_path):
    log = write_log(tmp_path / "log.jsonl", [])
    check_pngs(plot_training(log, tmp_path / "p"), tmp_path / "p")


def test_resumed_run_later_lines_win(tmp_path):
    log = write_log(tmp_path / "log.jsonl", [
        {"event": "step", "step": 1, "loss": 9.0}, {"event": "step", "step": 2, "loss": 9.0},
        {"event": "epoch", "epoch": 0, "step": 2, "train_loss": 9.0},
        # resumed from the checkpoint of step 1
        {"event": "step", "step": 2, "loss": 1.0}, {"event": "step", "step": 3, "loss": 0.5},
        {"event": "epoch", "epoch": 0, "step": 3, "train_loss": 0.7},
    ])
    run = load_training_log(log)
    assert run.series("steps", "step", "loss") == ([1.0, 2.0, 3.0], [9.0, 1.0, 0.5])
    assert run.series("epochs", "epoch", "train_loss") == ([0.0], [0.7])


def test_missing_log_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="no such training log"):
        plot_training(tmp_path / "nope.jsonl", tmp_path)
