"""Temporal localisation mAP (ActivityNet detection protocol) on hand-computed tables."""

import json

import numpy as np
import pytest

from falv.evaluation.localization import (
    GroundTruthError,
    average_precision_detection,
    interpolated_average_precision,
    load_ground_truth,
    localization_map,
)
from falv.labeling.segments import Segment


def activitynet_interpolated_prec_rec(prec, rec):
    """ActivityNet's Evaluation/utils.py loop, transcribed as the reference."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


@pytest.mark.parametrize("seed", range(5))
def test_interpolated_ap_matches_activitynet(seed):
    rng = np.random.default_rng(seed)
    hits = rng.random(12) < 0.5
    tp = np.cumsum(hits)
    prec, rec = tp / np.arange(1, 13), tp / max(1, hits.sum() + int(rng.integers(0, 3)))
    assert interpolated_average_precision(prec, rec) == pytest.approx(activitynet_interpolated_prec_rec(prec, rec))


GT = {"v1": [("jump", 0.0, 10.0), ("run", 20.0, 30.0)], "v2": [("jump", 5.0, 15.0)]}


def test_perfect_predictions_score_one():
    preds = {v: [(label, s, e, 0.9) for label, s, e in segs] for v, segs in GT.items()}
    out = localization_map(GT, preds)
    assert out["mAP@0.3"] == out["mAP@0.5"] == out["mAP@0.7"] == out["mAP"] == 1.0
    assert out["per_class"] == {"jump": {"0.3": 1.0, "0.5": 1.0, "0.7": 1.0}, "run": {"0.3": 1.0, "0.5": 1.0, "0.7": 1.0}}
    assert out["num_ground_truth"] == 3 and out["num_predictions"] == 3


@pytest.mark.parametrize("start,expected", [
    (2.0, [1.0, 1.0, 1.0]),   # tIoU 0.8: a hit at every threshold
    (4.0, [1.0, 1.0, 0.0]),   # tIoU 0.6: misses 0.7
    (6.0, [1.0, 0.0, 0.0]),   # tIoU 0.4: only 0.3
    (8.0, [0.0, 0.0, 0.0]),   # tIoU 0.2: never
])
def test_shifted_predictions_cross_thresholds(start, expected):
    ap = average_precision_detection([("v", 0.0, 10.0)], [("v", start, 10.0, 0.5)], (0.3, 0.5, 0.7))
    np.testing.assert_allclose(ap, expected)


def test_a_duplicate_detection_is_a_false_positive():
    gt = [("v", 0.0, 10.0), ("v", 20.0, 30.0)]
    preds = [("v", 0.0, 10.0, 0.9), ("v", 0.5, 10.0, 0.8), ("v", 20.0, 30.0, 0.7)]
    # TP, FP (already matched), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # interpolated: 1/2 * 1 + 1/2 * 2/3
    ap = average_precision_detection(gt, preds, (0.5,))
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision_detection(gt, [preds[0], preds[2]], (0.5,))[0] == 1.0


def test_greedy_matching_takes_the_best_unmatched_overlap():
    gt = [("v", 0.0, 10.0), ("v", 4.0, 14.0)]
    # the second prediction overlaps gt 0 best (tIoU 8/11.5 = 0.70) but the first took it, so it
    # falls back to gt 1 (tIoU 7.5/12 = 0.625) where that is over the threshold
    preds = [("v", 0.0, 10.0, 0.9), ("v", 2.0, 11.5, 0.8)]
    assert average_precision_detection(gt, preds, (0.5,))[0] == 1.0
    assert average_precision_detection(gt, preds, (0.65,))[0] == pytest.approx(0.5)  # second one: FP


def test_ranking_by_score_not_by_order():
    gt = [("v", 0.0, 10.0)]
    preds = [("v", 50.0, 60.0, 0.2), ("v", 0.0, 10.0, 0.9)]  # the hit scores higher: AP 1
    assert average_precision_detection(gt, preds, (0.5,))[0] == 1.0
    preds = [("v", 50.0, 60.0, 0.9), ("v", 0.0, 10.0, 0.2)]  # a false positive first: precision 1/2
    assert average_precision_detection(gt, preds, (0.5,))[0] == 0.5


def test_empty_predictions_and_no_ground_truth():
    out = localization_map(GT, {})
    assert out["mAP"] == 0.0 and out["mAP@0.5"] == 0.0 and out["num_predictions"] == 0
    out = localization_map({}, {"v": [("jump", 0, 1, 0.5)]})
    assert out["mAP"] is None and out["per_class"] == {}
    assert np.isnan(average_precision_detection([], [("v", 0, 1, 0.5)], (0.5,))).all()


def test_classes_without_ground_truth_are_not_scored_and_other_videos_are_false_positives():
    preds = {v: [(label, s, e, 0.9) for label, s, e in segs] for v, segs in GT.items()}
    preds["v1"].append(("swim", 0.0, 10.0, 0.99))  # a class with no ground truth: ignored
    assert localization_map(GT, preds)["mAP"] == 1.0
    preds["v3"] = [("run", 20.0, 30.0, 0.95)]  # a video without ground truth: a false positive for "run"
    out = localization_map(GT, preds)
    assert out["per_class"]["run"]["0.5"] == pytest.approx(0.5) and out["per_class"]["jump"]["0.5"] == 1.0
    assert out["mAP@0.5"] == pytest.approx(0.75)


def test_segments_and_activitynet_dicts_are_accepted():
    gt = {"v": [{"label": "jump", "segment": [0, 10]}]}
    preds = {"v": [Segment("jump", 1.0, 10.0, 0.7), {"label": "jump", "start": 0, "end": 10, "score": 0.2}]}
    out = localization_map(gt, preds, thresholds=(0.5, 0.95))
    # at 0.95 the higher-scored Segment (tIoU 0.9) is a false positive, the dict a hit: precision 1/2
    assert out["mAP@0.5"] == 1.0 and out["mAP@0.95"] == 0.5 and out["mAP"] == 0.75


def test_load_ground_truth_finds_files_and_filters(tmp_path):
    (tmp_path / "untrimmed").mkdir()
    (tmp_path / "untrimmed" / "a.mp4").write_bytes(b"x")
    (tmp_path / "untrimmed" / "v_b.mp4").write_bytes(b"x")
    database = {
        "a": {"subset": "validation", "duration": 30, "path": "untrimmed/a.mp4",
              "annotations": [{"segment": [1, 2], "label": "jump"}]},
        "b": {"subset": "testing", "duration": 30, "annotations": [{"segment": [3, 4.5], "label": "run"}]},
        "c": {"subset": "testing", "duration": 30, "annotations": [{"segment": [3, 4], "label": "run"}]},
        "hidden": {"subset": "testing", "duration": 30, "annotations": []},
    }
    gt = tmp_path / "untrimmed" / "ground_truth.json"
    gt.write_text(json.dumps({"version": "x", "taxonomy": [], "database": database}))
    videos = {v.video_id: v for v in load_ground_truth(tmp_path / "untrimmed")}  # the folder works too
    assert sorted(videos) == ["a", "b", "c"]  # no annotations: left out without a subset
    assert videos["a"].path == str(tmp_path / "untrimmed" / "a.mp4")  # "path" relative to an ancestor
    assert videos["b"].path == str(tmp_path / "untrimmed" / "v_b.mp4") and videos["b"].segments == [("run", 3, 4.5)]
    assert videos["c"].path is None
    assert sorted(v.video_id for v in load_ground_truth(gt, subset="testing")) == ["b", "c", "hidden"]
    with pytest.raises(GroundTruthError, match="no videos of subset"):
        load_ground_truth(gt, subset="training")
    (tmp_path / "bad.json").write_text('{"database": {"a": {"annotations": [{"label": "x"}]}}}')
    with pytest.raises(GroundTruthError, match="malformed annotation"):
        load_ground_truth(tmp_path / "bad.json")
    with pytest.raises(GroundTruthError, match="no such"):
        load_ground_truth(tmp_path / "missing.json")
