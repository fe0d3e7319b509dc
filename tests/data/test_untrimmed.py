"""Training windows from annotated untrimmed videos (falv.data.untrimmed)."""

from __future__ import annotations

import json

import pytest

from falv.data.sources import DatasetError, DatasetSource, VideoEntry
from falv.data.untrimmed import BACKGROUND_LABEL, untrimmed_entries, window_bounds, window_label, with_untrimmed
from falv.errors import ConfigError

ACTIONS = [("a", 2.0, 4.0), ("b", 5.0, 8.0)]


@pytest.mark.parametrize("start, end, expected", [
    (0.0, 2.0, ()),            # all background
    (2.0, 4.0, ("a",)),        # exactly the action
    (2.5, 3.5, ("a",)),        # inside it
    (1.0, 3.0, ()),            # half and half: background wins the tie
    (1.5, 3.5, ("a",)),        # 1.5 s of a against 0.5 s of background
    (0.5, 2.5, ()),            # 0.5 s of a against 1.5 s of background
    (3.0, 6.0, ()),            # 1 s a, 1 s b, 1 s background: no majority over background
    (3.5, 6.5, ("b",)),        # 0.5 a, 1.5 b, 1 background: b covers most
    (4.0, 5.0, ()),            # the gap
    (7.0, 10.0, ()),           # 1 s of b, 2 s after it
])
def test_window_label_is_what_fills_most_of_the_window(start, end, expected):
    assert window_label(start, end, ACTIONS) == expected


@pytest.mark.parametrize("start, end, expected", [
    (2.0, 4.0, ("a",)), (1.0, 3.0, ("a",)), (0.5, 2.5, ()), (3.0, 6.0, ()), (3.0, 5.0, ("a",)),
    (4.0, 5.0, ()),
])
def test_window_label_multilabel_keeps_every_class_over_half_the_window(start, end, expected):
    assert window_label(start, end, ACTIONS, multilabel=True) == expected


def test_window_label_rejects_an_empty_window():
    with pytest.raises(ValueError, match="no length"):
        window_label(1.0, 1.0, ACTIONS)


def test_window_bounds_are_the_labeling_plan():
    assert window_bounds(5.0, 2.0, 1.0) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]
    assert window_bounds(4.5, 2.0, 1.0)[-1] == (2.5, 4.5)  # the last window ends at the end
    assert window_bounds(1.0, 2.0, 0.5) == [(0.0, 1.0)]


def _ground_truth(tmp_path, videos: dict) -> str:
    database = {}
    for vid, (duration, annotations, exists) in videos.items():
        if exists:
            (tmp_path / f"{vid}.mp4").write_bytes(b"")  # located by name; the duration comes from the file
        database[vid] = {"subset": "validation" if vid != "v2" else "testing", "duration": duration,
                         "annotations": [{"segment": [s, e], "label": lab} for lab, s, e in annotations]}
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps({"database": database}))
    return str(path)


def test_untrimmed_entries_label_windows_inside_actions_and_in_gaps(tmp_path):
    gt = _ground_truth(tmp_path, {"v1": (10.0, ACTIONS, True), "v2": (6.0, [("c", 1.0, 5.0)], True),
                                  "gone": (6.0, [("a", 1.0, 2.0)], False)})
    found = untrimmed_entries(gt, window=2.0, stride=1.0)
    assert found.videos == 2 and found.missing == ["gone"]
    assert found.labels == ["a", "b", "c"]
    v1 = [e for e in found.entries if e.path.endswith("v1.mp4")]
    assert [(e.start, e.end) for e in v1] == window_bounds(10.0, 2.0, 1.0)
    assert [e.labels for e in v1] == [(BACKGROUND_LABEL,), (BACKGROUND_LABEL,), ("a",), (BACKGROUND_LABEL,),
                                      (BACKGROUND_LABEL,), ("b",), ("b",), (BACKGROUND_LABEL,),
                                      (BACKGROUND_LABEL,)]
    assert all(isinstance(e, VideoEntry) for e in found.entries)
    assert found.background_windows == sum(e.labels == (BACKGROUND_LABEL,) for e in found.entries)
    # default stride: half the window; subsets
    assert len(untrimmed_entries(gt, window=2.0, subset="testing").entries) == len(window_bounds(6.0, 2.0, 1.0))
    # multi-label: the gaps carry no class
    multi = untrimmed_entries(gt, window=2.0, stride=1.0, multilabel=True)
    assert () in [e.labels for e in multi.entries] and all(BACKGROUND_LABEL not in e.labels for e in multi.entries)


def test_untrimmed_entries_errors(tmp_path):
    gt = _ground_truth(tmp_path, {"gone": (6.0, [("a", 1.0, 2.0)], False)})
    with pytest.raises(DatasetError, match="none of its videos"):
        untrimmed_entries(gt, window=2.0)
    with pytest.raises(DatasetError, match="no such ground-truth file"):
        untrimmed_entries(str(tmp_path / "nope.json"), window=2.0)
    with pytest.raises(ConfigError, match="stride"):
        untrimmed_entries(gt, window=2.0, stride=3.0)
    with pytest.raises(ConfigError, match="window"):
        untrimmed_entries(gt, window=0.0)


def test_with_untrimmed_adds_classes_and_background(tmp_path):
    gt = _ground_truth(tmp_path, {"v1": (10.0, ACTIONS + [("z", 9.0, 9.5)], True)})
    found = untrimmed_entries(gt, window=2.0, stride=1.0)
    trimmed = DatasetSource([VideoEntry("x.mp4", ("b",)), VideoEntry("y.mp4", ("a",))], ["b", "a"])
    merged, background = with_untrimmed(trimmed, found)
    assert background == BACKGROUND_LABEL
    assert merged.classes == ["b", "a", "z", BACKGROUND_LABEL]  # data's order, new classes, background last
    assert len(merged) == 2 + len(found.entries)
    # a class of that name in the data is the background class
    own = DatasetSource([VideoEntry("x.mp4", (BACKGROUND_LABEL,))], [BACKGROUND_LABEL, "a", "b"])
    merged, background = with_untrimmed(own, found)
    assert background == BACKGROUND_LABEL and merged.classes == [BACKGROUND_LABEL, "a", "b", "z"]
    # multi-label data: no background class
    multi = DatasetSource([VideoEntry("x.mp4", ("a", "b"))], ["a", "b"], multilabel=True)
    merged, background = with_untrimmed(multi, untrimmed_entries(gt, window=2.0, multilabel=True))
    assert background is None and BACKGROUND_LABEL not in merged.classes
