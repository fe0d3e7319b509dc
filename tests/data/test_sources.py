"""Tests of falv.data.sources: every layout parsed from small files written here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from falv.data.sources import (
    DatasetError,
    DatasetSource,
    VideoEntry,
    from_kinetics,
    from_list,
    from_ssv2,
    from_ucf101,
    load_classes,
    load_source,
    save_classes,
    ssv2_class_name,
)
from falv.errors import FalvError


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rel(source: DatasetSource, base: Path) -> list[tuple[str, tuple[str, ...]]]:
    return [(str(Path(e.path).relative_to(base)), e.labels) for e in source]


# -- folder per class -----------------------------------------------------------------
def test_folder_per_class(tmp_path):
    for p in ["walk/b.mp4", "walk/a.avi", "run/x/c.mkv", "run/notes.txt", "run/.hidden.mp4", ".cache/z.mp4"]:
        touch(tmp_path / p)
    (tmp_path / "empty_class").mkdir()
    src = load_source(tmp_path)
    assert src.kind == "folder" and not src.multilabel
    assert src.classes == ["empty_class", "run", "walk"]
    assert rel(src, tmp_path) == [("run/x/c.mkv", ("run",)), ("walk/a.avi", ("walk",)), ("walk/b.mp4", ("walk",))]
    assert src.label_indices(0) == [1]


def test_folder_labels_file_fixes_order_and_split_subfolder(tmp_path):
    for p in ["train/b/1.mp4", "train/a/2.mp4", "val/a/3.mp4"]:
        touch(tmp_path / p)
    save_classes(tmp_path / "train" / "labels.txt", ["b", "a"])
    src = load_source(tmp_path, split="train")
    assert src.classes == ["b", "a"]
    assert sorted(e.labels[0] for e in src) == ["a", "b"]
    with pytest.raises(DatasetError, match="no videos"):
        load_source(tmp_path / "val" / "a")  # a folder of videos, not of classes


def test_folder_unknown_class_against_labels_file(tmp_path):
    touch(tmp_path / "a" / "1.mp4")
    touch(tmp_path / "typo" / "2.mp4")
    save_classes(tmp_path / "labels.txt", ["a", "b"])
    with pytest.raises(DatasetError, match="typo") as info:
        load_source(tmp_path)
    assert info.value.code == "unknown_label"


# -- CSV / TSV / space lists ------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected", "multilabel"),
    [
        ("a.mp4,cat\nb.mp4,dog\n", [("a.mp4", ("cat",)), ("b.mp4", ("dog",))], False),
        ("path,label\na.mp4,cat\n", [("a.mp4", ("cat",))], False),
        ("video,labels\na.mp4,cat,dog\nb.mp4,dog\n", [("a.mp4", ("cat", "dog")), ("b.mp4", ("dog",))], True),
        ('a.mp4,"cat,dog"\n', [("a.mp4", ("cat,dog",))], False),  # quoted field: one label
        ('"my, file.mp4","a, b"\n', [("my, file.mp4", ("a, b",))], False),
        ("a.mp4,cat;dog\n", [("a.mp4", ("cat", "dog"))], True),
        ("a.mp4\tjumping, high\n", [("a.mp4", ("jumping, high",))], False),  # TSV keeps commas
        ("a.mp4\tcat\tdog\n", [("a.mp4", ("cat", "dog"))], True),
        ("a.mp4 cat\nsub/b.mp4 dog\n", [("a.mp4", ("cat",)), ("sub/b.mp4", ("dog",))], False),
        ("a.mp4 cat,dog\n", [("a.mp4", ("cat", "dog"))], True),
        ("# comment\n\na.mp4 cat\n", [("a.mp4", ("cat",))], False),
        ("a.mp4\nb.mp4\n", [("a.mp4", ()), ("b.mp4", ())], False),  # unlabelled list
        ("my clip, 1.mp4,cat\n", [("my clip", ("1.mp4", "cat"))], True),  # CSV wins when ambiguous
    ],
)
def test_list_formats(tmp_path, text, expected, multilabel):
    src = load_source(write(tmp_path / "list.csv", text))
    assert src.kind == "list"
    assert rel(src, tmp_path) == expected
    assert src.multilabel is multilabel
    assert src.classes == sorted({lab for _, labs in expected for lab in labs})


def test_list_paths_relative_to_root_or_absolute(tmp_path):
    other = tmp_path / "videos"
    text = f"a.mp4,x\n{tmp_path / 'abs.mp4'},y\n"
    src = from_list(write(tmp_path / "lists" / "train.txt", text), root=other)
    assert [e.path for e in src] == [str(other / "a.mp4"), str(tmp_path / "abs.mp4")]


def test_list_labels_file_order_and_integer_labels(tmp_path):
    save_classes(tmp_path / "labels.txt", ["zebra", "ant", "moth"])
    src = load_source(write(tmp_path / "train.csv", "a.mp4,ant\nb.mp4,zebra\n"))
    assert src.classes == ["zebra", "ant", "moth"]
    assert [src.label_indices(e) for e in src] == [[1], [0]]
    ints = load_source(write(tmp_path / "ints.txt", "a.mp4 2\nb.mp4 0\n"))
    assert [e.labels for e in ints] == [("moth",), ("zebra",)]
    with pytest.raises(DatasetError, match="outside"):
        load_source(write(tmp_path / "bad.txt", "a.mp4 3\n"))
    with pytest.raises(DatasetError, match="not in the class list") as info:
        load_source(write(tmp_path / "unknown.csv", "a.mp4,bee\n"))
    assert info.value.code == "unknown_label"


def test_list_space_rows_with_multiword_classes_and_headers(tmp_path):
    save_classes(tmp_path / "labels.txt", ["playing guitar", "cat", "dog"])
    src = load_source(write(tmp_path / "l.txt", "video_path label_index\na.mp4 playing guitar\nb.mp4 cat dog\n"))
    assert [e.labels for e in src] == [("playing guitar",), ("cat", "dog")]
    with pytest.raises(DatasetError, match=r"l2.csv:3: no path"):
        load_source(write(tmp_path / "l2.csv", "a.mp4,cat\n\n,dog\n"))


def test_list_integer_labels_without_labels_file_sort_numerically(tmp_path):
    src = load_source(write(tmp_path / "l.txt", "a.mp4 10\nb.mp4 9\n"))
    assert src.classes == ["9", "10"]


def test_synth_layout(tmp_path):
    """What falv.data.synth writes: OUT/labels.txt and OUT/<split>.csv with paths relative to OUT."""
    save_classes(tmp_path / "labels.txt", ["move_right", "move_left", "red-disc"])  # index order, not sorted
    write(tmp_path / "train.csv", "videos/move_left/0001.mp4,move_left\nvideos/red-disc/0002.mp4,red-disc,move_right\n")
    write(tmp_path / "val.csv", "videos/move_right/0003.mp4,move_right\n")
    src = load_source(tmp_path, split="train")
    assert src.classes == ["move_right", "move_left", "red-disc"] and src.multilabel
    assert src[1].path == str(tmp_path / "videos/red-disc/0002.mp4")
    assert src[1].labels == ("red-disc", "move_right")
    assert len(load_source(tmp_path, split="val")) == 1
    with pytest.raises(DatasetError, match="split 'test'"):
        load_source(tmp_path, split="test")
    for name in ["move_left/0001.mp4", "red-disc/0002.mp4", "move_right/0003.mp4"]:
        touch(tmp_path / "videos" / name)
    with pytest.raises(DatasetError, match="pass split= one of train, val"):
        load_source(tmp_path)
    # OUT/videos/<class>/ as a folder source takes its class order from OUT/labels.txt
    folder = load_source(tmp_path / "videos")
    assert folder.kind == "folder" and folder.classes == ["move_right", "move_left", "red-disc"]


# -- Kinetics -------------------------------------------------------------------------------
KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_kinetics_naming_conventions(tmp_path):
    csv_path = write(
        tmp_path / "annotations" / "train.csv",
        KINETICS_HEADER
        + "abseiling,AAAAAAAAAAA,14,24,train\n"  # crawler: <label>/<id>_<start>_<end>.mp4
        + "air drumming,BBBBBBBBBBB,0,10,train\n"  # label folder with underscores
        + "abseiling,CCCCCCCCCCC,3,13,train\n"  # flat split folder (cvdfoundation)
        + "air drumming,DDDDDDDDDDD,31.5,41.5,train\n"  # full video: keeps the segment
        + "abseiling,EEEEEEEEEEE,5,15,train\n"  # missing
        + "abseiling,FFFFFFFFFFF,5,15,val\n",  # other split
    )
    v = tmp_path / "videos"
    touch(v / "train" / "abseiling" / "AAAAAAAAAAA_000014_000024.mp4")
    touch(v / "train" / "air_drumming" / "BBBBBBBBBBB_000000_000010.mp4")
    touch(v / "train" / "CCCCCCCCCCC_000003_000013.mp4")
    touch(v / "full" / "DDDDDDDDDDD.mkv")
    src = load_source(csv_path, root=v, split="train")
    assert src.kind == "kinetics" and src.classes == ["abseiling", "air drumming"]
    got = {Path(e.path).stem: (e.labels, e.start, e.end) for e in src}
    assert got == {
        "AAAAAAAAAAA_000014_000024": (("abseiling",), None, None),
        "BBBBBBBBBBB_000000_000010": (("air drumming",), None, None),
        "CCCCCCCCCCC_000003_000013": (("abseiling",), None, None),
        "DDDDDDDDDDD": (("air drumming",), 31.5, 41.5),
        "EEEEEEEEEEE_000005_000015": (("abseiling",), None, None),
    }
    missing = next(e for e in src if "EEE" in e.path)
    assert missing.path == str(v / "abseiling" / "EEEEEEEEEEE_000005_000015.mp4")
    ok, problems = src.check()
    assert len(ok) == 4 and [Path(p.path).name for p in problems] == ["EEEEEEEEEEE_000005_000015.mp4"]
    assert len(from_kinetics(csv_path, root=v)) == 6  # no split: every row


def test_kinetics_prefers_label_folder_and_reads_is_cc_and_test_csv(tmp_path):
    write(tmp_path / "k.csv", KINETICS_HEADER.strip() + ",is_cc\n" + "b,XXXXXXXXXXX,1,11,validate,0\n")
    touch(tmp_path / "a" / "XXXXXXXXXXX_000001_000011.mp4")
    touch(tmp_path / "b" / "XXXXXXXXXXX_000001_000011.mp4")
    src = load_source(tmp_path / "k.csv", split="val")  # "validate" rows match split "val"
    assert src[0].path == str(tmp_path / "b" / "XXXXXXXXXXX_000001_000011.mp4")
    test_csv = write(tmp_path / "t" / "test.csv", "youtube_id,time_start,time_end,split\nYYYYYYYYYYY,0,10,test\n")
    test = load_source(test_csv)
    assert test.kind == "kinetics" and test.classes == [] and test[0].labels == ()
    assert test[0].path.endswith("test/YYYYYYYYYYY_000000_000010.mp4")


# -- UCF101 ----------------------------------------------------------------------------------
def ucf_tree(tmp_path: Path) -> Path:
    lists = tmp_path / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n")
    write(
        lists / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n",
    )
    write(lists / "testlist01.txt", "YoYo/v_YoYo_g01_c01.avi\nHandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    write(lists / "trainlist02.txt", "YoYo/v_YoYo_g02_c01.avi 3\n")
    for p in ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "YoYo/v_YoYo_g01_c01.avi"]:
        touch(tmp_path / "UCF-101" / p)
    return lists


def test_ucf101_splits(tmp_path):
    lists = ucf_tree(tmp_path)
    train = load_source(tmp_path, split="train")
    assert train.kind == "ucf101" and train.classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert rel(train, tmp_path / "UCF-101") == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", ("ApplyEyeMakeup",)),
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", ("HandstandPushups",)),
    ]
    test = load_source(lists / "classInd.txt", split="test")
    assert [e.labels for e in test] == [("YoYo",), ("HandstandPushups",)]
    assert [e.labels for e in from_ucf101(lists, split="train2")] == [("YoYo",)]
    assert len(from_ucf101(lists, split="testlist01.txt")) == 2
    assert len(load_source(tmp_path)) == 2  # default: train fold 1
    other = from_ucf101(lists, split="test", root=tmp_path / "elsewhere")
    assert other[0].path == str(tmp_path / "elsewhere" / "YoYo" / "v_YoYo_g01_c01.avi")


def test_ucf101_errors(tmp_path):
    lists = ucf_tree(tmp_path)
    write(lists / "trainlist03.txt", "YoYo/v_YoYo_g02_c01.avi 1\n")
    with pytest.raises(DatasetError, match="disagrees"):
        from_ucf101(lists, split="train3")
    with pytest.raises(DatasetError, match="split"):
        from_ucf101(lists, split="holdout")
    with pytest.raises(DatasetError, match="testlist02.txt"):
        from_ucf101(lists, split="test2")


# -- Something-Something v2 -------------------------------------------------------------------
def ssv2_tree(tmp_path: Path) -> Path:
    labels = {
        "Approaching something with your camera": "0",
        "Holding something next to something": "1",
        "Moving something from left to right": "2",
    }
    train = [
        {
            "id": "78687",
            "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks vaporub bottle"],
        },
        {
            "id": "42326",
            "label": "moving pen from left to right",
            "template": "Moving [something] from left to right",
            "placeholders": ["pen"],
        },
    ]
    val = [
        {
            "id": "74225",
            "label": "approaching mug with your camera",
            "template": "Approaching [something] with your camera",
            "placeholders": ["mug"],
        }
    ]
    ann = tmp_path / "annotations"
    write(ann / "labels.json", json.dumps(labels))
    write(ann / "train.json", json.dumps(train))
    write(ann / "validation.json", json.dumps(val))
    write(ann / "test.json", json.dumps([{"id": "1420"}]))
    touch(tmp_path / "20bn-something-something-v2" / "78687.webm")
    touch(tmp_path / "20bn-something-something-v2" / "42326.mp4")  # re-encoded copy
    return ann


def test_ssv2(tmp_path):
    ann = ssv2_tree(tmp_path)
    videos = tmp_path / "20bn-something-something-v2"
    train = load_source(ann, split="train")
    assert train.kind == "ssv2"
    assert train.classes[1] == "Holding something next to something"
    assert [(Path(e.path).name, e.labels) for e in train] == [
        ("78687.webm", ("Holding something next to something",)),
        ("42326.mp4", ("Moving something from left to right",)),
    ]
    assert train[0].path == str(videos / "78687.webm")
    val = load_source(ann / "validation.json")
    assert [e.labels for e in val] == [("Approaching something with your camera",)]
    assert load_source(ann / "labels.json", split="validation").entries == val.entries
    test = from_ssv2(ann, split="test", root=tmp_path / "v")
    assert test[0].labels == () and test[0].path == str(tmp_path / "v" / "1420.webm")
    assert ssv2_class_name("Putting [something similar to other things] on [somewhere]") == (
        "Putting something similar to other things on somewhere"
    )


def test_ssv2_unknown_template(tmp_path):
    ann = ssv2_tree(tmp_path)
    write(ann / "train.json", json.dumps([{"id": "1", "template": "Juggling [something]"}]))
    with pytest.raises(DatasetError, match="Juggling"):
        load_source(ann)


# -- detection and errors ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("nothing_here", None, "no such file"),
        ("empty.csv", "", "no rows"),
        ("comments.txt", "# only a comment\n", "no rows"),
        ("bad.json", "{not json", "invalid JSON"),
        ("list.json", '[{"no_id": 1}]', "neither a saved falv source"),
        ("ssv2.json", '[{"id": "1"}]', "labels.json not found"),
        ("latin1.csv", b"a.mp4,caf\xe9\n", "cannot read"),
        ("kin.csv", KINETICS_HEADER + "a,ID,zero,10,train\n", "bad time"),
    ],
)
def test_load_source_errors_are_clear(tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        touch(path, content)
    elif content is not None:
        write(path, content)
    with pytest.raises(DatasetError, match=match) as info:
        load_source(path)
    assert isinstance(info.value, FalvError)
    assert str(path.name) in str(info.value)


def test_save_load_classes_and_json_roundtrip(tmp_path):
    save_classes(tmp_path / "labels.txt", ["b", "a c"])
    assert load_classes(tmp_path / "labels.txt") == ["b", "a c"]
    assert load_classes(write(tmp_path / "classInd.txt", "2 two\n1 one\n")) == ["one", "two"]
    with pytest.raises(DatasetError):
        save_classes(tmp_path / "x.txt", ["ok", "two\nlines"])
    src = DatasetSource(
        [VideoEntry("/v/a.mp4", ("b",)), VideoEntry("/v/b.mp4", ("a c", "b"), start=1.5, end=3.0, duration=9.0)],
        ["b", "a c"],
        multilabel=True,
        kind="list",
        name="demo",
    )
    again = load_source(write(tmp_path / "source.json", src.to_json(indent=1)))
    assert again.entries == src.entries and again.classes == src.classes and again.multilabel
    assert DatasetSource.from_json(src.to_json()).entries == src.entries
    assert json.loads(src.to_json())["entries"][0] == {"path": "/v/a.mp4", "labels": ["b"]}


def test_with_classes_reindexes_a_split():
    val = DatasetSource([VideoEntry("/v/a.mp4", ("c",))], ["c"])
    train_classes = ["a", "b", "c"]
    assert val.with_classes(train_classes).label_indices(0) == [2]
    with pytest.raises(DatasetError, match="not in the class list"):
        val.with_classes(["a", "b"])


def test_duplicate_classes_rejected():
    with pytest.raises(DatasetError, match="duplicate"):
        DatasetSource([], ["a", "a"])


# -- check: missing / undecodable files reported once, skipped ------------------------------------
def test_check_reports_missing_and_undecodable_once(tmp_path, caplog):
    from falv.video.testing import write_test_video

    (tmp_path / "a").mkdir()
    good = write_test_video(tmp_path / "a" / "good.mp4", frames=10, fps=10, size=(32, 32))
    touch(tmp_path / "a" / "garbage.mp4", b"this is not a video" * 10)
    src = load_source(write(tmp_path / "l.csv", "a/good.mp4,x\na/garbage.mp4,x\na/gone.mp4,y\n"))
    with caplog.at_level(logging.WARNING, logger="falv.data.sources"):
        quick, quick_problems = src.check()
        assert [Path(p.path).name for p in quick_problems] == ["gone.mp4"]
        assert quick_problems[0].reason.startswith("not_found")
        ok, problems = src.check(probe=True, workers=2)
    assert [e.path for e in ok] == [str(good)] and ok.classes == src.classes
    assert ok[0].duration == pytest.approx(1.0, abs=0.15) and ok[0].fps == pytest.approx(10.0)
    assert sorted(Path(p.path).name for p in problems) == ["garbage.mp4", "gone.mp4"]
    assert ok.problems == problems
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one summary per check() call, not one per file
    assert "skipping 2 of 3 videos" in warnings[1].getMessage()
    assert "garbage.mp4" in warnings[1].getMessage() and "gone.mp4" in warnings[1].getMessage()


def test_label_studio_export_newest_annotation_ground_truth_regions_and_skips(tmp_path):
    import json

    from falv.data.sources import load_source

    videos = tmp_path / "media"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (videos / name).write_bytes(b"x")

    def ann(id_, updated, result, **flags):
        return {"id": id_, "updated_at": updated, "result": result, **flags}

    def choice(*labels):
        return {"type": "choices", "value": {"choices": list(labels)}}

    export = [
        {"id": 1, "data": {"video": "/data/local-files/?d=media/a.mp4", "fps": 25},
         "annotations": [ann(1, "2026-01-01", [choice("cat")]), ann(2, "2026-02-01", [choice("dog")]),
                         ann(3, "2026-03-01", [choice("bird")], was_cancelled=True)]},
        {"id": 2, "data": {"video": str(videos / "b.mp4"), "fps": 25},
         "annotations": [ann(4, "2026-05-01", [choice("cat")]), ann(5, "2026-01-01", [choice("bird")], ground_truth=True)]},
        {"id": 3, "data": {"video": str(videos / "c.mp4"), "fps": 25},
         "annotations": [ann(6, "2026-01-01", [{"type": "timelinelabels", "value": {
             "ranges": [{"start": 26, "end": 50}], "timelinelabels": ["dog"]}}])]},
        {"id": 4, "data": {"video": str(videos / "d.mp4")}, "annotations": []},
        {"id": 5, "data": {"video": "https://example.invalid/x.mp4"}, "annotations": [ann(7, "x", [choice("cat")])]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    source = load_source(path, root=tmp_path)
    assert source.kind == "label-studio" and source.classes == ["bird", "dog"]
    by = {(Path(e.path).name, e.start): e for e in source.entries}
    assert by[("a.mp4", None)].labels == ("dog",)  # the newest annotation that was not cancelled
    assert by[("b.mp4", None)].labels == ("bird",)  # ground truth wins over a newer annotation
    segment = by[("c.mp4", 1.0)]
    assert segment.labels == ("dog",) and segment.end == pytest.approx(2.0)  # frames 26-50 at 25 fps
    assert len(source.entries) == 3  # d (no annotation) and the remote URL are skipped


def test_label_studio_json_min_export_newest_annotation_per_task(tmp_path, caplog):
    """JSON_MIN: one flat record per annotation (cancelled ones already left out by Label Studio);
    a single choice is a bare string under the <Choices> name, several are {"choices": [...]}."""
    import json
    import logging

    from falv.data.sources import load_source

    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (media / name).write_bytes(b"x")
    timeline = [{"ranges": [{"start": 1, "end": 25}], "timelinelabels": ["dog"]},
                {"ranges": [{"start": 51, "end": 75}], "timelinelabels": ["cat"]}]
    export = [
        {"video": "/data/local-files/?d=media/a.mp4", "fps": 25, "video_id": "a", "id": 1, "label": "cat",
         "annotator": 1, "annotation_id": 1, "created_at": "2026-01-01T00:00:00Z",
         "updated_at": "2026-01-01T00:00:00Z", "lead_time": 3.0},
        {"video": "/data/local-files/?d=media/a.mp4", "fps": 25, "video_id": "a", "id": 1, "label": "dog",
         "timeline": timeline, "annotator": 1, "annotation_id": 2, "created_at": "2026-01-01T00:00:00Z",
         "updated_at": "2026-02-01T00:00:00Z", "lead_time": 3.0},
        {"video": "/data/local-files/?d=media/b.mp4", "fps": 25, "id": 2, "label": {"choices": ["cat", "dog"]},
         "annotator": 1, "annotation_id": 3, "created_at": "2026-01-01T00:00:00Z",
         "updated_at": "2026-01-01T00:00:00Z", "lead_time": 1.0},
        {"video": "https://example.invalid/c.mp4", "id": 3, "label": "cat", "annotator": 1, "annotation_id": 4,
         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "lead_time": 1.0},
    ]
    path = tmp_path / "export_min.json"
    path.write_text(json.dumps(export))
    with caplog.at_level(logging.WARNING, logger="falv.data.sources"):
        source = load_source(path, root=tmp_path)
    assert source.kind == "label-studio" and source.classes == ["cat", "dog"] and source.multilabel
    got = sorted((Path(e.path).name, e.labels, e.start if e.start is not None else -1, e.end) for e in source.entries)
    assert got == [("a.mp4", ("cat",), 2.0, 3.0), ("a.mp4", ("dog",), -1, None), ("a.mp4", ("dog",), 0.0, 1.0),
                   ("b.mp4", ("cat", "dog"), -1, None)]
    assert [p.reason for p in source.problems] == ["video URL not readable here"]
    assert "1 task(s) skipped: video URL not readable here (task 3)" in caplog.text


def test_fiftyone_temporal_detection_folder(tmp_path):
    """falv's fiftyone export read back as a source (the real FiftyOne round trip is in tests/tools),
    and FiftyOne's own layout: data/<uuid>.<ext>, string labels when classes is null, timestamps."""
    import json
    import shutil

    from falv.data.sources import load_source
    from falv.labeling.formats import write_fiftyone
    from falv.video.testing import write_test_video

    video = write_test_video(tmp_path / "v.mp4", frames=50, fps=25, size=(32, 32))
    record = {"path": str(video), "video_id": "v1", "fps": 25.0, "duration": 2.0, "num_frames": 50,
              "labels": [{"label": "dog", "score": 0.9}],
              "segments": [{"label": "dog", "start": 0.2, "end": 1.0, "score": 0.9},
                           {"label": "cat", "start": 1.0, "end": 2.0, "score": 0.8}]}
    folder = write_fiftyone([record], tmp_path / "out", classes=["cat", "dog"])
    source = load_source(folder)
    assert source.kind == "fiftyone" and source.classes == ["cat", "dog"]
    assert [(e.labels, e.start, e.end) for e in source.entries] == [(("dog",), 0.2, 1.0), (("cat",), 1.0, 2.0)]

    theirs = tmp_path / "fo"
    (theirs / "data").mkdir(parents=True)
    shutil.copy(video, theirs / "data" / "abc.mp4")
    (theirs / "labels.json").write_text(json.dumps({"classes": None, "labels": {
        "abc": [{"label": "run", "timestamps": [0.5, 1.5], "confidence": None}, {"label": "walk", "support": [1, 5]}],
        "gone": [{"label": "run", "support": [1, 2]}]}}))
    source = load_source(theirs)
    assert source.classes == ["run", "walk"]
    assert [(e.labels, e.start, e.end) for e in source.entries] == [(("run",), 0.5, 1.5), (("walk",), 0.0, 0.2)]
    assert [p.reason for p in source.problems] == ["video not found"]
