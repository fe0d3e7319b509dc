"""Tests of falv.labeling.records and falv.labeling.formats.

Every export is written for a handful of awkward records (unicode and commas in
paths and labels, multi-label overlaps, unknown fps, an error, a long video),
parsed back and checked against the field names, types and ranges that each
tool documents or reads in its importer (see docs/formats.md for the sources).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import pytest

from falv.errors import FalvError
from falv.labeling.formats import (
    FORMATS,
    LABELS_CSV_COLUMNS,
    SEGMENTS_CSV_COLUMNS,
    FormatError,
    UnknownFormatError,
    activitynet_video_id,
    escape_vtt_text,
    format_vtt_timestamp,
    label_studio_config,
    record_to_webvtt,
    records_to_activitynet,
    records_to_fiftyone,
    records_to_label_studio,
    video_url,
    vtt_cues,
    write_formats,
)
from falv.labeling.records import (
    SCHEMA_VERSION,
    LabelRecord,
    RecordFormatError,
    TruncatedRecordWarning,
    read_records,
    record_error,
    record_from_exception,
    record_ok,
    record_to_json_line,
    scan_records,
    video_id_for,
    write_records,
)
from falv.labeling.segments import Segment, frame_span

UNICODE_PATH = "/data/vidéos/réunion, part 1 \"final\".mp4"
UNICODE_LABEL = "café, crème"
NASTY_LABEL = "A<B> & \"C\""


@pytest.fixture
def records() -> list[LabelRecord]:
    single = record_ok(
        UNICODE_PATH,
        [(NASTY_LABEL, 0.15), (UNICODE_LABEL, 0.8), ("walk", 0.05)],
        fps=25.0,
        duration=12.0,
        num_frames=300,
        width=640,
        height=360,
        segments=[Segment(UNICODE_LABEL, 1.0, 4.5, 0.82), Segment(NASTY_LABEL, 6.0, 11.96, 0.61)],
        windows=[(0.0, 2.0, [(UNICODE_LABEL, 0.9)]), (2.0, 4.0, [(UNICODE_LABEL, 0.7)])],
        model="models/fal-tiny",
        embeddings={"file": "embeddings.npz", "key": "clip_0001", "format": "npz"},
    )
    multi = record_ok(
        "/data/street/v_abc123.mp4",
        [("walk", 0.9), ("talk", 0.55), (UNICODE_LABEL, 0.1)],
        fps=29.97,
        duration=20.0,
        segments=[Segment("walk", 0.0, 12.0, 0.9), Segment("talk", 8.0, 20.0, 0.6)],
        multilabel=True,
        threshold=0.4,
        model="models/fal-tiny",
    )
    unknown_fps = record_ok(
        "/data/raw/stream.ts", [("walk", 0.7)], duration=10.0, fps=0.0, segments=[Segment("walk", 2.0, 5.0, 0.7)]
    )
    failed = record_error("/data/broken, file.mp4", "corrupt", "broken, file.mp4: moov atom not found\nffmpeg said so")
    long_video = record_ok(
        "/data/long/movie.mkv",
        [("talk", 0.6)],
        fps=24.0,
        duration=4000.0,
        segments=[Segment("talk", 3599.9996, 3725.25, 0.6), Segment("walk", 3725.25, 3800.0, 0.55)],
    )
    return [single, multi, unknown_fps, failed, long_video]


def no_temp_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"atomic writes left temporary files: {leftovers}"


# --------------------------------------------------------------------------- records


def test_record_round_trips_through_json(records):
    for record in records:
        line = record_to_json_line(record)
        assert line.endswith("\n") and "\n" not in line[:-1]
        data = json.loads(line)
        assert LabelRecord.from_dict(data) == record
        assert data["schema"] == SCHEMA_VERSION
        for key in ("path", "video_id", "duration", "fps", "num_frames", "width", "height", "labels", "windows",
                    "segments", "embeddings", "error", "model", "falv_version", "multilabel"):
            assert key in data


def test_record_ok_sorts_labels_and_normalises_unknowns(records):
    single, _, unknown_fps, failed, _ = records
    assert [ls.label for ls in single.labels] == [UNICODE_LABEL, NASTY_LABEL, "walk"]
    assert single.top.label == UNICODE_LABEL and single.ok
    assert unknown_fps.fps is None and unknown_fps.num_frames is None  # fps 0.0 means unknown
    data = failed.to_dict()
    assert data["error"] == {"type": "corrupt", "message": "broken, file.mp4: moov atom not found ffmpeg said so"}
    assert data["labels"] == [] and data["segments"] == [] and not failed.ok


def test_record_from_video_info_and_exception():
    from falv.video.errors import CorruptVideoError

    info = {"duration": 3.0, "fps": 30.0, "num_frames": 90, "width": 320, "height": 240, "codec": "h264"}
    rec = record_ok("/v/a.mp4", [("x", 1.0)], info=info, width=160)
    assert (rec.duration, rec.fps, rec.num_frames, rec.width, rec.height) == (3.0, 30.0, 90, 160, 240)
    err = record_from_exception("/v/b.mp4", CorruptVideoError("/v/b.mp4", "bad header"))
    assert err.error.type == "corrupt" and "bad header" in err.error.message
    other = record_from_exception("/v/c.mp4", KeyError("boom"))
    assert other.error.type == "internal" and "KeyError: 'boom'" in other.error.message


def test_unknown_keys_survive_and_newer_schema_is_refused(records):
    data = records[0].to_dict() | {"timing": {"decode_s": 1.5}}
    assert LabelRecord.from_dict(data).to_dict()["timing"] == {"decode_s": 1.5}
    with pytest.raises(RecordFormatError, match="newer"):
        LabelRecord.from_dict(data | {"schema": SCHEMA_VERSION + 1})
    with pytest.raises(RecordFormatError, match="path"):
        LabelRecord.from_dict({"labels": []})
    with pytest.raises(RecordFormatError, match="score"):
        LabelRecord.from_dict({"path": "x.mp4", "labels": [{"label": "a", "score": "high"}]})
    with pytest.raises(FalvError):
        LabelRecord.from_dict({"path": "x.mp4", "segments": [{"label": "a", "start": 5, "end": 1, "score": 1}]})


def test_explicit_video_id_and_extra_keys():
    rec = record_ok("/v/a.mp4", [("x", 1.0)], video_id="a-custom", timing={"decode_s": 0.5})
    assert rec.video_id == "a-custom" and rec.to_dict()["timing"] == {"decode_s": 0.5}
    with pytest.raises(RecordFormatError, match="schema"):
        record_ok("/v/a.mp4", [("x", 1.0)], schema=2)
    with pytest.raises(RecordFormatError, match="error"):
        record_error("/v/a.mp4", "corrupt", "bad", error="x")


def test_video_id_is_stable_safe_and_distinct():
    a = video_id_for("/one/clip.mp4")
    assert a == video_id_for("/one/./clip.mp4") == video_id_for(Path("/one/clip.mp4"))
    assert a.startswith("clip-") and a != video_id_for("/two/clip.mp4")
    weird = video_id_for("/x/my video.v2, (final).mp4")
    assert re.fullmatch(r"[\w-]+", weird) and "." not in weird


def test_read_records_tolerates_and_reports_a_truncated_last_line(tmp_path, records):
    path = write_records(tmp_path / "labels.jsonl", records[:3])
    whole = path.read_text(encoding="utf-8")
    path.write_text(whole + record_to_json_line(records[3])[:40], encoding="utf-8")  # killed mid-write
    scan = scan_records(path)
    assert scan.truncated and scan.truncated_line == 4 and len(scan.records) == 3
    with pytest.warns(TruncatedRecordWarning, match=r"labels.jsonl:4"):
        assert read_records(path) == records[:3]
    path.write_text(whole + "\n\n", encoding="utf-8")  # blank lines are fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_records(path) == records[:3]


def test_read_records_refuses_damage_before_the_end(tmp_path, records):
    lines = [record_to_json_line(r) for r in records[:3]]
    path = tmp_path / "labels.jsonl"
    path.write_text(lines[0] + '{"path": "x.mp4", "labels": [\n' + lines[2], encoding="utf-8")
    with pytest.raises(RecordFormatError, match=r"labels.jsonl:2"):
        read_records(path)
    path.write_text(lines[0] + '{"no_path": 1}\n', encoding="utf-8")  # valid JSON, invalid record
    with pytest.raises(RecordFormatError, match=r"labels.jsonl:2"):
        read_records(path)
    with pytest.raises(RecordFormatError, match="no such"):
        read_records(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path, records):
    paths = write_formats(records, tmp_path, ["csv"])
    assert paths == {"csv": tmp_path / "labels.csv"}
    with open(tmp_path / "labels.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LABELS_CSV_COLUMNS
        rows = list(reader)
    with open(tmp_path / "segments.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SEGMENTS_CSV_COLUMNS
        seg_rows = list(reader)
    ok = [r for r in records if r.ok]
    assert len(rows) == sum(len(r.labels) for r in ok) + 1
    assert len(seg_rows) == sum(len(r.segments) for r in ok)
    first = [row for row in rows if row["path"] == UNICODE_PATH]
    assert [(row["rank"], row["label"]) for row in first] == [("1", UNICODE_LABEL), ("2", NASTY_LABEL), ("3", "walk")]
    assert float(first[0]["score"]) == pytest.approx(0.8) and first[0]["error_type"] == ""
    (error_row,) = [row for row in rows if row["error_type"]]
    assert error_row["path"] == "/data/broken, file.mp4" and error_row["error_type"] == "corrupt"
    assert error_row["rank"] == error_row["label"] == error_row["score"] == ""
    for row in seg_rows:
        start, end, score = float(row["start"]), float(row["end"]), float(row["score"])
        assert 0 <= start <= end and 0 <= score <= 1
    assert {row["label"] for row in seg_rows} >= {UNICODE_LABEL, NASTY_LABEL}
    no_temp_files(tmp_path)


# --------------------------------------------------------------------------- Label Studio


def parse_ls_config(xml: str) -> dict:
    """Names and label values of the tags a Label Studio config declares."""
    root = ET.fromstring(xml)
    assert root.tag == "View"
    video = root.find("Video")
    choices = root.find("Choices")
    timeline = root.find("TimelineLabels")
    assert video is not None and choices is not None and timeline is not None
    assert video.get("value") == "$video" and video.get("frameRate") == "$fps"
    assert choices.get("toName") == video.get("name") == timeline.get("toName")
    return {
        "video": video.get("name"),
        "choices": choices.get("name"),
        "choice_mode": choices.get("choice"),
        "choice_values": [c.get("value") for c in choices.findall("Choice")],
        "timeline": timeline.get("name"),
        "timeline_values": [c.get("value") for c in timeline.findall("Label")],
    }


def check_ls_tasks(tasks: list, config: dict, by_path: dict) -> None:
    """The structure of Label Studio JSON tasks with predictions (guide/predictions, tags/timelinelabels)."""
    assert isinstance(tasks, list)
    for task in tasks:
        assert set(task) == {"data", "predictions"}
        data = task["data"]
        assert isinstance(data["video"], str) and data["video"]
        record = by_path[data["path"]]
        (prediction,) = task["predictions"]
        assert isinstance(prediction["model_version"], str) and prediction["model_version"]
        assert isinstance(prediction["score"], float)
        ids = [item["id"] for item in prediction["result"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, str) and i for i in ids)
        for item in prediction["result"]:
            assert {"id", "type", "from_name", "to_name", "value"} <= set(item)
            assert item["to_name"] == config["video"]
            assert isinstance(item["score"], float) and 0 <= item["score"] <= 1
            if item["type"] == "choices":
                assert item["from_name"] == config["choices"]
                assert set(item["value"]) == {"choices"}
                assert all(c in config["choice_values"] for c in item["value"]["choices"])
            else:
                assert item["type"] == "timelinelabels"
                assert item["from_name"] == config["timeline"]
                assert set(item["value"]) == {"ranges", "timelinelabels"}
                (label,) = item["value"]["timelinelabels"]
                assert label in config["timeline_values"]
                (rng,) = item["value"]["ranges"]
                assert set(rng) == {"start", "end"}
                assert type(rng["start"]) is int and type(rng["end"]) is int  # TimelineRange: types.integer
                frames = record.num_frames or round(record.duration * record.fps + 0.5)
                assert 1 <= rng["start"] <= rng["end"] <= frames  # 1-based, inclusive
                assert data["fps"] == record.fps


def test_label_studio_tasks_and_config(tmp_path, records):
    paths = write_formats(records, tmp_path, ["label-studio"], model_version="fal-tiny@1")
    assert paths == {"label-studio": tmp_path / "label_studio_tasks.json"}
    tasks = json.loads(paths["label-studio"].read_text(encoding="utf-8"))
    config = parse_ls_config((tmp_path / "label_studio_config.xml").read_text(encoding="utf-8"))
    assert config["choice_mode"] == "multiple"  # one record is multi-label
    assert set(config["choice_values"]) == {UNICODE_LABEL, NASTY_LABEL, "walk", "talk"}
    by_path = {r.path: r for r in records}
    check_ls_tasks(tasks, config, by_path)
    assert len(tasks) == 4  # the error record is not a task
    assert all(t["predictions"][0]["model_version"] == "fal-tiny@1" for t in tasks)

    first = next(t for t in tasks if t["data"]["path"] == UNICODE_PATH)
    kinds = [item["type"] for item in first["predictions"][0]["result"]]
    assert kinds == ["choices", "timelinelabels", "timelinelabels"]
    choice, seg1, seg2 = first["predictions"][0]["result"]
    assert choice["value"]["choices"] == [UNICODE_LABEL]
    assert seg1["value"] == {"ranges": [{"start": 26, "end": 113}], "timelinelabels": [UNICODE_LABEL]}
    assert seg2["value"]["ranges"] == [{"start": 151, "end": 299}]

    multi = next(t for t in tasks if t["data"]["path"].endswith("v_abc123.mp4"))
    assert multi["predictions"][0]["result"][0]["value"]["choices"] == ["walk", "talk"]  # >= threshold 0.4
    unknown = next(t for t in tasks if t["data"]["path"].endswith("stream.ts"))
    assert "fps" not in unknown["data"]  # Label Studio falls back to its own default frame rate
    assert [i["type"] for i in unknown["predictions"][0]["result"]] == ["choices"]  # no frames without fps
    no_temp_files(tmp_path)


def test_label_studio_single_label_config_and_threshold(records):
    xml = label_studio_config(["a & b", "c"], multilabel=False)
    config = parse_ls_config(xml)
    assert config["choice_mode"] == "single" and config["choice_values"] == ["a & b", "c"]
    tasks = records_to_label_studio([records[1]], threshold=0.8)
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["walk"]
    with pytest.raises(FormatError, match="not in the given classes"):
        records_to_label_studio(records, classes=["walk"])


@pytest.mark.parametrize(
    ("kwargs", "url"),
    [
        ({}, "/media/clips/réunion, 1.mp4"),
        ({"url_mode": "local-files"}, "/data/local-files/?d=media/clips/r%C3%A9union%2C%201.mp4"),
        (
            {"url_mode": "local-files", "document_root": "/media"},
            "/data/local-files/?d=clips/r%C3%A9union%2C%201.mp4",
        ),
        (
            {"url_mode": "prefix", "url_prefix": "https://host/v/", "document_root": "/media"},
            "https://host/v/clips/r%C3%A9union%2C%201.mp4",
        ),
    ],
)
def test_video_urls(kwargs, url):
    assert video_url("/media/clips/réunion, 1.mp4", **kwargs) == url


def test_video_url_errors():
    with pytest.raises(FormatError, match="document root"):
        video_url("/elsewhere/a.mp4", url_mode="local-files", document_root="/media")
    with pytest.raises(FormatError, match="url_prefix"):
        video_url("/media/a.mp4", url_mode="prefix")
    with pytest.raises(FormatError, match="url_mode"):
        video_url("/media/a.mp4", url_mode="s3")


# --------------------------------------------------------------------------- FiftyOne


def check_fiftyone(labels: dict, manifest: dict, by_id: dict) -> None:
    """What FiftyOneTemporalDetectionDatasetImporter / ...SampleParser read (fiftyone/utils/data)."""
    assert set(labels) == {"classes", "labels"}
    classes = labels["classes"]
    assert isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    # ImportPathsMixin._load_data_map(ignore_exts=True): manifest keys lose their extension to become uuids
    paths = {os.path.splitext(k)[0]: v for k, v in manifest.items()}
    assert set(paths) == set(labels["labels"])
    for uuid, detections in labels["labels"].items():
        record = by_id[uuid]
        assert os.path.isabs(paths[uuid]) and paths[uuid] == os.path.abspath(record.path)
        assert isinstance(detections, list)
        for det in detections:
            assert isinstance(det["label"], int) and 0 <= det["label"] < len(classes)  # classes[target]
            assert ("support" in det) != ("timestamps" in det)
            assert isinstance(det["confidence"], float) and 0 <= det["confidence"] <= 1
            if "support" in det:
                first, last = det["support"]
                assert type(first) is int and type(last) is int
                frames = record.num_frames or round(record.duration * record.fps + 0.5)
                assert 1 <= first <= last <= frames  # [first, last] frame numbers, 1-based, inclusive
            else:
                start, stop = det["timestamps"]
                assert 0 <= start <= stop <= (record.duration or float("inf"))


def test_fiftyone_dataset(tmp_path, records):
    paths = write_formats(records, tmp_path, ["fiftyone"])
    folder = paths["fiftyone"]
    assert folder == tmp_path / "fiftyone"
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    manifest = json.loads((folder / "data.json").read_text(encoding="utf-8"))
    by_id = {r.video_id: r for r in records}
    check_fiftyone(labels, manifest, by_id)
    assert len(labels["labels"]) == 4  # the error record is not a sample
    single = labels["labels"][records[0].video_id]
    classes = labels["classes"]
    assert [classes[d["label"]] for d in single] == [UNICODE_LABEL, NASTY_LABEL]
    assert single[0]["support"] == [26, 113]
    assert single[1]["support"] == [151, 299]
    unknown = labels["labels"][records[2].video_id]
    assert unknown == [{"label": classes.index("walk"), "timestamps": [2.0, 5.0], "confidence": 0.7}]
    no_temp_files(tmp_path)


def test_fiftyone_timestamps_mode(records):
    labels, _ = records_to_fiftyone(records, fiftyone_mode="timestamps", classes=["walk", "talk", UNICODE_LABEL,
                                                                                    NASTY_LABEL])
    assert labels["classes"][:2] == ["walk", "talk"]
    check_fiftyone(labels, {r.video_id + ".mp4": os.path.abspath(r.path) for r in records if r.ok},
                   {r.video_id: r for r in records})
    assert all("timestamps" in d for dets in labels["labels"].values() for d in dets)
    with pytest.raises(FormatError, match="fiftyone_mode"):
        records_to_fiftyone(records, fiftyone_mode="frames")


# --------------------------------------------------------------------------- ActivityNet


def check_activitynet(data: dict, task: str = "detection") -> None:
    """What ANETdetection / ANETclassification._import_prediction read (Evaluation/eval_*.py)."""
    assert {"results", "version", "external_data"} <= set(data)  # PREDICTION_FIELDS
    assert data["version"] == "VERSION 1.3"
    assert isinstance(data["external_data"]["used"], bool) and isinstance(data["external_data"]["details"], str)
    for video_id, entries in data["results"].items():
        assert isinstance(video_id, str) and not video_id.startswith("v_")
        for result in entries:
            assert isinstance(result["label"], str) and isinstance(result["score"], float)
            if task == "detection":
                start, end = float(result["segment"][0]), float(result["segment"][1])
                assert 0 <= start <= end
            else:
                assert "segment" not in result


def test_activitynet_results(tmp_path, records):
    paths = write_formats(records, tmp_path, ["activitynet"], external_data_details="Kinetics-400 pretraining")
    data = json.loads(paths["activitynet"].read_text(encoding="utf-8"))
    check_activitynet(data)
    assert set(data["results"]) == {"réunion, part 1 \"final\"", "abc123", "stream", "movie"}
    assert data["results"]["abc123"] == [
        {"label": "walk", "score": 0.9, "segment": [0.0, 12.0]},
        {"label": "talk", "score": 0.6, "segment": [8.0, 20.0]},
    ]
    assert data["external_data"] == {"used": False, "details": "Kinetics-400 pretraining"}
    classification = records_to_activitynet(records, activitynet_task="classification")
    check_activitynet(classification, "classification")
    assert classification["results"]["abc123"][0] == {"label": "walk", "score": 0.9}


def test_activitynet_ids():
    assert activitynet_video_id("/x/v_-lEsnrNNZFU.mp4") == "-lEsnrNNZFU"
    assert activitynet_video_id("/x/v_.mp4") == "v_"
    assert activitynet_video_id("/x/v_abc.mp4", strip_v_prefix=False) == "v_abc"
    twins = [record_ok("/a/clip.mp4", [("x", 1.0)]), record_ok("/b/clip.mp4", [("x", 1.0)])]
    with pytest.raises(FormatError, match="activitynet_id='video_id'"):
        records_to_activitynet(twins)
    ids = records_to_activitynet(twins, activitynet_id="video_id")["results"]
    assert set(ids) == {r.video_id for r in twins}


# --------------------------------------------------------------------------- WebVTT

TIMING = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})$")


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    """A small WebVTT reader: checks the header and cue syntax, returns (start, end, text lines)."""
    assert text.startswith("WEBVTT\n\n") or text == "WEBVTT\n"
    cues = []
    for block in text.split("\n\n")[1:]:
        lines = [line for line in block.split("\n") if line != ""]
        if not lines:
            continue
        if not TIMING.match(lines[0]):
            assert "-->" not in lines[0]  # a cue identifier
            lines = lines[1:]
        match = TIMING.match(lines[0])
        assert match, lines[0]
        h0, m0, s0, ms0, h1, m1, s1, ms1 = (int(g) for g in match.groups())
        start = h0 * 3600 + m0 * 60 + s0 + ms0 / 1000
        end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        payload = lines[1:]
        assert payload, "a cue needs text"
        for line in payload:
            assert "-->" not in line and "<" not in line and ">" not in line
            assert re.fullmatch(r"([^&]|&(amp|lt|gt);)*", line), line  # only escaped ampersands
        cues.append((start, end, [unescape(line) for line in payload]))
    return cues


def check_vtt_cues(cues) -> None:
    for start, end, _ in cues:
        assert 0 <= start < end
    for (s0, e0, _), (s1, e1, _) in zip(cues, cues[1:]):
        assert s0 <= s1 and e0 <= s1  # ordered, not overlapping


def test_webvtt_files(tmp_path, records):
    paths = write_formats(records, tmp_path, ["webvtt"])
    folder = paths["webvtt"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(['réunion, part 1 "final".vtt', "v_abc123.vtt", "stream.vtt", "movie.vtt"])
    for path in folder.iterdir():
        check_vtt_cues(parse_vtt(path.read_text(encoding="utf-8")))

    single = parse_vtt((folder / 'réunion, part 1 "final".vtt').read_text(encoding="utf-8"))
    assert single == [(1.0, 4.5, [f"{UNICODE_LABEL} (0.82)"]), (6.0, 11.96, [f"{NASTY_LABEL} (0.61)"])]

    multi = parse_vtt((folder / "v_abc123.vtt").read_text(encoding="utf-8"))
    assert [(s, e) for s, e, _ in multi] == [(0.0, 8.0), (8.0, 12.0), (12.0, 20.0)]
    assert multi[1][2] == ["walk (0.90)", "talk (0.60)"]  # overlap: both labels, best first

    long_text = (folder / "movie.vtt").read_text(encoding="utf-8")
    assert "01:00:00.000 --> 01:02:05.250" in long_text
    assert "01:02:05.250 --> 01:03:20.000" in long_text
    no_temp_files(tmp_path)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00:00.000"),
        (1.5, "00:00:01.500"),
        (59.9995, "00:01:00.000"),
        (3599.9996, "01:00:00.000"),
        (3725.25, "01:02:05.250"),
        (100 * 3600 + 1.001, "100:00:01.001"),
    ],
)
def test_vtt_timestamps(seconds, text):
    assert format_vtt_timestamp(seconds) == text
    assert TIMING.match(f"{text} --> {text}")


def test_vtt_escaping_and_edge_cases():
    assert escape_vtt_text("a & b <c> -->\nd") == "a &amp; b &lt;c&gt; --&gt; d"
    with pytest.raises(FormatError):
        format_vtt_timestamp(-1)
    tiny = record_ok("/v/t.mp4", [("x", 1)], segments=[Segment("x", 1.0, 1.0004, 0.5), Segment("y", 2, 3, 0.5)])
    assert parse_vtt(record_to_webvtt(tiny, vtt_scores=False)) == [(2.0, 3.0, ["y"])]
    assert record_to_webvtt(record_ok("/v/e.mp4", [])) == "WEBVTT\n"
    abutting = [Segment("x", 0, 1, 0.5), Segment("x", 1, 2, 0.7)]
    assert [(s, e) for s, e, _ in vtt_cues(abutting)] == [(0, 1), (1, 2)]


def test_webvtt_names_collide_into_video_ids(tmp_path):
    twins = [record_ok("/a/clip.mp4", [("x", 1.0)]), record_ok("/b/clip.mp4", [("x", 1.0)])]
    folder = write_formats(twins, tmp_path, ["vtt"])["webvtt"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{r.video_id}.vtt" for r in twins)


# --------------------------------------------------------------------------- dispatcher


def test_write_formats_writes_everything_atomically(tmp_path, records):
    paths = write_formats([r.to_dict() for r in records], tmp_path / "out", list(FORMATS))
    assert list(paths) == list(FORMATS)
    assert all(p.exists() for p in paths.values())
    assert read_records(paths["jsonl"]) == records
    no_temp_files(tmp_path)


def test_unknown_format_and_option(tmp_path, records):
    with pytest.raises(UnknownFormatError) as info:
        write_formats(records, tmp_path, ["jsonl", "coco"])
    assert isinstance(info.value, FalvError)
    for name in FORMATS:
        assert name in str(info.value)
    with pytest.raises(FormatError, match="url_mod"):
        write_formats(records, tmp_path, ["label-studio"], url_mod="local-files")
    assert write_formats(records, tmp_path, ["Label_Studio", "label-studio"]).keys() == {"label-studio"}


def test_frame_spans_agree_between_label_studio_and_fiftyone(records):
    tasks = records_to_label_studio(records)
    labels, _ = records_to_fiftyone(records)
    for task in tasks:
        record = next(r for r in records if r.path == task["data"]["path"])
        ranges = [
            (i["value"]["ranges"][0]["start"], i["value"]["ranges"][0]["end"])
            for i in task["predictions"][0]["result"]
            if i["type"] == "timelinelabels"
        ]
        supports = [tuple(d["support"]) for d in labels["labels"][record.video_id] if "support" in d]
        assert ranges == supports
        if not record.fps:
            assert ranges == []
            continue
        frames = record.num_frames or math.ceil(record.duration * record.fps)
        assert ranges == [frame_span(s.start, s.end, record.fps, frames) for s in record.segments]
