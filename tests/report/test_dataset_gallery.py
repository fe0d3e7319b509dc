"""The report's class distribution (datasets, training runs) and its gallery of sample predictions."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from falv.cli.report import report
from falv.data.sources import load_source
from falv.data.synth import SynthConfig, generate
from falv.report.html import build_report, pick_gallery
from falv.video.testing import write_test_video

from .conftest import EVIL
from .test_html import assert_self_contained, parse


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(mode="appearance", classes=3, videos_per_class=6, seed=2, width=32, height=32,
                              duration=(0.5, 0.6), splits=(0.5, 0.25, 0.25)), overwrite=True)
    return out


def _pred(path, target, label, score, correct):
    return {"path": str(path), "target": target, "labels": [{"label": label, "score": score},
                                                            {"label": "other", "score": 1 - score}],
            "correct": correct}


@pytest.mark.parametrize("scores,per_kind,expected_wrong,expected_right", [
    ([(0.9, False), (0.5, False), (0.7, True), (0.95, True)], 1, [0.9], [0.95]),
    ([(0.9, False), (0.5, False), (0.7, True), (0.95, True)], 5, [0.9, 0.5], [0.95, 0.7]),
    ([(0.6, True), (0.6, True)], 2, [], [0.6, 0.6]),
    ([], 3, [], []),
])
def test_pick_gallery_takes_the_most_confident_of_each_kind(scores, per_kind, expected_wrong, expected_right):
    preds = [_pred(f"/v/{i}.mp4", "a", "a" if ok else "b", s, ok) for i, (s, ok) in enumerate(scores)]
    wrong, right = pick_gallery(preds, per_kind)
    assert [p["labels"][0]["score"] for p in wrong] == expected_wrong
    assert [p["labels"][0]["score"] for p in right] == expected_right
    assert all(p["correct"] is False for p in wrong) and all(p["correct"] is True for p in right)


def test_gallery_shows_mistakes_and_correct_predictions_with_frames(eval_dir, tmp_path):
    video = write_test_video(tmp_path / "seen.mp4", frames=20, fps=10, size=(48, 64))
    preds = [_pred(video, "stir", EVIL, 0.91, False), _pred(tmp_path / "gone.mp4", "pour", "stir", 0.6, False),
             _pred(tmp_path / "low.mp4", "pour", "stir", 0.3, False), _pred(video, "stir", "stir", 0.8, True),
             {"path": "/x/failed.mp4", "target": "stir", "error": {"type": "corrupt", "message": "bad"}}]
    (eval_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds) + "not json\n")
    text = build_report(eval_dir=eval_dir, gallery=2)
    page = parse(text)
    assert_self_contained(text, page)
    assert "Mistakes (2 of 3)" in text and "Correct (1 of 1)" in text
    assert "low.mp4" not in text  # the least confident mistake is left out
    assert text.index("seen.mp4") < text.index("gone.mp4")  # the most confident first
    assert len(re.findall(r'class="strip" src="data:image/jpeg;base64,', text)) == 2  # seen.mp4, twice
    assert "no preview" in text  # gone.mp4
    assert "&lt;script&gt;" in text and "<script" not in text.lower()
    assert "Sample predictions" not in build_report(eval_dir=eval_dir, gallery=0)
    assert 'class="strip"' not in build_report(eval_dir=eval_dir, gallery=2, thumbnails=False)


def test_dataset_section_counts_every_split(synth, tmp_path):
    text = build_report(data=str(synth))
    parse(text)
    assert 'id="dataset"' in text and "<svg" in text
    for split in ("train", "val", "test"):
        counts = Counter(label for e in load_source(str(synth), split=split).entries for label in e.labels)
        total = sum(counts.values())
        assert f"{split}: {total} videos" in text
        for name, n in counts.items():
            assert f"{name}, {split}: {n} videos" in text  # the bar's tooltip


def test_a_layout_without_splits_is_counted_once_as_all(synth, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text((synth / "train.csv").read_text())
    text = build_report(data=str(listing))
    assert ", train: " not in text and "all: " in text and "val:" not in text


def test_training_section_shows_the_run_s_split(run_dir, synth):
    split = {"train": load_source(str(synth), split="train").to_dict(),
             "val": load_source(str(synth), split="val").to_dict(), "how": "given"}
    (run_dir / "split.json").write_text(json.dumps(split))
    text = build_report(run_dir=run_dir)
    assert "Class distribution" in text and "val: " in text


def test_cli_data_option(synth, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(report, ["--data", str(synth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert 'id="dataset"' in out.read_text()
    bad = CliRunner().invoke(report, ["--data", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code != 0
