"""decode_in_workers survives crashing and hanging workers and keeps memory bounded."""

from __future__ import annotations

import time

import numpy as np
import pytest

from falv.video import (
    CorruptVideoError,
    DecoderCrashedError,
    DecodeTimeoutError,
    NotAVideoError,
    decode_in_workers,
)
from falv.errors import InternalError
from falv.video.decode import ClipsResult, read_clips_task
from falv.video.pool import item_path
from falv.video.testing import frame_index, misbehave

pytestmark = pytest.mark.timeout(60)


def test_crash_and_timeout_are_reported_and_the_batch_continues():
    items = [
        {"path": "a.mp4", "value": 1},
        {"path": "segv.mp4", "action": "segfault"},
        {"path": "b.mp4", "value": 2},
        {"path": "hang.mp4", "action": "sleep", "seconds": 30},
        {"path": "exit.mp4", "action": "exit"},
        {"path": "raise.mp4", "action": "raise"},
        {"path": "bad.mp4", "action": "video_error"},
        {"path": "c.mp4", "value": 3},
        {"path": "d.mp4", "value": 4},
    ]
    start = time.monotonic()
    results = {item["path"]: out for item, out in decode_in_workers(misbehave, items, workers=2, timeout=1.5)}
    elapsed = time.monotonic() - start
    assert set(results) == {item["path"] for item in items}
    assert results["a.mp4"] == 1 and results["b.mp4"] == 2 and results["c.mp4"] == 3 and results["d.mp4"] == 4
    assert type(results["segv.mp4"]) is DecoderCrashedError
    assert "SIGSEGV" in str(results["segv.mp4"]) and str(results["segv.mp4"]).startswith("segv.mp4: ")
    assert type(results["exit.mp4"]) is DecoderCrashedError
    assert type(results["hang.mp4"]) is DecodeTimeoutError
    assert type(results["raise.mp4"]) is InternalError and "RuntimeError: boom" in str(results["raise.mp4"])
    assert results["raise.mp4"].code == "internal"
    assert type(results["bad.mp4"]) is CorruptVideoError
    assert elapsed < 20  # the hanging item was cut at the time limit, not waited for


def test_bounded_in_flight_items():
    pulled = []

    def items():
        for k in range(20):
            pulled.append(k)
            yield {"path": f"{k}.mp4", "action": "array", "shape": [4, 8, 8, 3]}

    seen = 0
    for _item, out in decode_in_workers(misbehave, items(), workers=2, timeout=30):
        seen += 1
        assert isinstance(out, np.ndarray) and out.shape == (4, 8, 8, 3)
        # never more than `workers` items handed out beyond what was yielded
        assert len(pulled) <= seen + 2
    assert seen == 20


def test_early_close_stops_workers():
    gen = decode_in_workers(misbehave, ({"path": f"{k}", "value": k} for k in range(100)), workers=2, timeout=30)
    first = next(gen)
    assert first[1] == int(first[0]["path"])
    gen.close()  # must not hang or leave work running


def test_no_items():
    assert list(decode_in_workers(misbehave, [], workers=2)) == []


def test_reading_videos_in_workers(videos, tmp_path):
    requests = [
        {"path": str(videos["h264.mp4"]), "clips": [[0.0, 1.0]], "size": 32},
        {"path": str(videos["text.mp4"]), "clips": [[0.0]]},
        {"path": str(videos["vfr.mp4"]), "clips": [[0.0]], "size": [16, 24]},
    ]
    results = {item["path"]: out for item, out in decode_in_workers(read_clips_task, requests, workers=2, timeout=30)}
    ok = results[str(videos["h264.mp4"])]
    assert isinstance(ok, ClipsResult)
    assert [frame_index(f) for f in ok.clips[0]] == [0, 10]
    assert ok.clips[0].shape == (2, 32, 48, 3)
    assert results[str(videos["vfr.mp4"])].clips[0].shape == (1, 16, 24, 3)
    assert type(results[str(videos["text.mp4"])]) is NotAVideoError


def test_item_path():
    assert item_path("a.mp4") == "a.mp4"
    assert item_path({"path": "b.mp4"}) == "b.mp4"
    assert item_path(("c.mp4", 3)) == "c.mp4"
    assert item_path(7) == "7"
    with pytest.raises(ValueError):
        list(decode_in_workers(misbehave, [], workers=0))


def test_item_source_can_wait_for_results_before_adding_items():
    """A source that creates items from results (plan -> decode) yields WAIT, not StopIteration."""
    from falv.video.pool import WAIT

    seen: list[int] = []

    def source():
        yield 1
        while not seen:
            yield WAIT  # the follow-up item depends on the first result
        yield seen[0] * 10

    results = []
    for item, value in decode_in_workers(abs, source(), workers=2, timeout=30):
        seen.append(value)
        results.append((item, value))
    assert results == [(1, 1), (10, 10)]


def test_waiting_with_nothing_in_flight_is_an_error():
    from falv.video.pool import WAIT

    with pytest.raises(RuntimeError, match="WAIT"):
        list(decode_in_workers(abs, iter([WAIT]), workers=1, timeout=5))


def test_a_finished_result_is_not_reported_as_timeout_when_the_consumer_is_slow():
    """The consumer (e.g. the model) may take longer than the timeout between two results;
    a worker that finished meanwhile must not be killed as if it hung."""
    results = []
    for item, value in decode_in_workers(abs, [-1, -2, -3, -4], workers=2, timeout=0.5):
        results.append((item, value))
        time.sleep(1.0)  # busy elsewhere, longer than the timeout
    assert sorted(results) == [(-4, 4), (-3, 3), (-2, 2), (-1, 1)]
