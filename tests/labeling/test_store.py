"""labels.jsonl: one record per input after every run, appended durably, compacted atomically."""

import json
import os

import pytest

from falv.errors import RunError
from falv.labeling.records import read_records, record_error, record_ok
from falv.labeling.store import DETERMINISTIC_ERRORS, RecordStore, record_key


def _ok(path, label="a"):
    return record_ok(path, [(label, 0.9)], precision="fp32", device="cpu", runtime="torch").to_dict()


def _err(path, code):
    return record_error(path, code, f"{path}: {code}").to_dict()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_closing_keeps_the_newest_record_per_input_in_first_seen_order(tmp_path):
    labels = tmp_path / "labels.jsonl"
    with RecordStore(labels) as store:
        store.append(_err("/v/a.mp4", "timeout"))
        store.append(_ok("/v/b.mp4"))
        store.append(_ok("/v/a.mp4", "retried"))
        # during the run every record is on disk (nothing is lost if the process dies now)
        assert len(_lines(labels)) == 3
    rows = _lines(labels)
    assert [r["path"] for r in rows] == ["/v/a.mp4", "/v/b.mp4"]
    assert rows[0]["error"] is None and rows[0]["labels"][0]["label"] == "retried"
    assert [r.path for r in read_records(labels)] == ["/v/a.mp4", "/v/b.mp4"]


def test_a_file_left_by_a_killed_run_is_compacted_by_the_next_one(tmp_path):
    labels = tmp_path / "labels.jsonl"
    lines = [_err("/v/a.mp4", "corrupt"), _ok("/v/b.mp4"), _ok("/v/a.mp4")]
    labels.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"schema": 1, "path": "/v/c.m')
    store = RecordStore(labels)
    assert store.dropped_partial_line and store.done("/v/a.mp4") and store.done("/v/b.mp4")
    assert not store.done("/v/c.mp4")
    store.close()
    assert [r["path"] for r in _lines(labels)] == ["/v/a.mp4", "/v/b.mp4"]
    assert _lines(labels)[0]["error"] is None


@pytest.mark.parametrize(("code", "retry_failed", "done"), [
    *[(code, False, True) for code in sorted(DETERMINISTIC_ERRORS)],
    *[(code, True, False) for code in sorted(DETERMINISTIC_ERRORS)],
    ("not_found", False, False),
    ("corrupt", False, False),
    ("timeout", False, False),
    ("decoder_crashed", False, False),
    ("internal", False, False),
])
def test_which_failures_a_resumed_run_skips(tmp_path, code, retry_failed, done):
    labels = tmp_path / "labels.jsonl"
    with RecordStore(labels) as store:
        store.append(_err("/v/x.mp4", code))
    with RecordStore(labels, retry_failed=retry_failed) as store:
        assert store.done("/v/x.mp4") is done
        assert store.done(os.path.join("/v", "sub", "..", "x.mp4")) is done  # the same input, another spelling


def test_deterministic_codes_are_the_video_error_codes():
    from falv.video.errors import ERROR_CODES

    assert DETERMINISTIC_ERRORS <= set(ERROR_CODES)


def test_a_second_writer_of_the_same_folder_is_refused(tmp_path):
    with RecordStore(tmp_path / "labels.jsonl"):
        with pytest.raises(RunError, match="another falv run"):
            RecordStore(tmp_path / "labels.jsonl")
    RecordStore(tmp_path / "labels.jsonl").close()  # released on close


def test_a_failed_compaction_leaves_the_file_whole(tmp_path, monkeypatch):
    labels = tmp_path / "labels.jsonl"
    store = RecordStore(labels)
    store.append(_err("/v/a.mp4", "timeout"))
    store.append(_ok("/v/a.mp4"))
    before = labels.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("falv.labeling.store.atomic_open", full_disk)
    with pytest.raises(RunError, match="one record per input"):
        store.close()
    assert labels.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.jsonl"]
    monkeypatch.undo()
    RecordStore(labels).close()  # the lock was released; the next run compacts
    assert len(_lines(labels)) == 1


def test_lines_that_are_not_records_are_never_dropped(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps(_ok("/v/a.mp4")) + "\n[1, 2]\n" + json.dumps(_ok("/v/a.mp4", "b")) + "\n")
    RecordStore(labels).close()
    assert labels.read_text().count("\n") == 3


def test_compaction_is_a_no_op_on_a_compact_file(tmp_path):
    labels = tmp_path / "labels.jsonl"
    with RecordStore(labels) as store:
        store.append(_ok("/v/a.mp4"))
    inode = labels.stat().st_ino
    with RecordStore(labels) as store:
        assert store.compact() is False
    assert labels.stat().st_ino == inode
    assert record_key("/v/./a.mp4") == "/v/a.mp4"


def test_provenance_round_trips_and_old_records_read_as_unknown(tmp_path):
    from falv.labeling.records import LabelRecord

    record = LabelRecord.from_dict(_ok("/v/a.mp4"))
    assert (record.precision, record.device, record.runtime) == ("fp32", "cpu", "torch")
    old = {k: v for k, v in _ok("/v/a.mp4").items() if k not in ("precision", "device", "runtime")}
    record = LabelRecord.from_dict(old)
    assert (record.precision, record.device, record.runtime) == (None, None, None)
    assert record.to_dict()["precision"] is None and record.extra == {}
