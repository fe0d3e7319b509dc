"""Live streams: falv.video.live, falv.labeling.stream and `falv stream`.

Sources are real MPEG-TS feeds written by ``stream_test_video`` (frames that show their
own index) into a named pipe, a growing file, UDP and HTTP on 127.0.0.1. Nothing here
asserts a duration: the checks are which frames each window got and the events.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.labeling.segments import SegmentCloser, owned_bounds, windows_to_segments
from falv.labeling.stream import label_stream
from falv.video.live import LiveReader, StreamSourceError, source_kind
from falv.video.sampling import plan_windows, window_timestamps
from falv.video.testing import frame_index, stream_test_video

FPS = 25
SIZE = (64, 96)  # (h, w): the tiny preset's short side, so the decoder scales nothing away


@pytest.fixture(scope="module")
def ab_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream-model")
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label={0: "a", 1: "b"})).save_pretrained(path)
    return path


def _feed(target, **kwargs) -> tuple[threading.Thread, list[float]]:
    """A writer thread feeding ``target`` (errors such as a reader that went away are swallowed)."""
    written: list[float] = []

    def run() -> None:
        try:
            stream_test_video(target, fps=FPS, size=SIZE, written=written, **kwargs)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, written


def _collect(source, model, **kwargs) -> tuple[list[dict], dict[int, list[int]]]:
    """All events of label_stream, and the frame indices each window's frames show."""
    seen: dict[int, list[int]] = {}

    def hook(event, frames) -> None:
        assert frames.dtype == np.uint8 and frames.shape[0] == 8 and min(frames.shape[1:3]) == 64
        seen[event["index"]] = [frame_index(f) for f in frames]

    events = list(label_stream(source, model, on_window=hook, **kwargs))
    return events, seen


def _expected_indices(start: float, end: float) -> list[int]:
    return [int(t * FPS) for t in window_timestamps(start, end, FPS, 8)]


def _check_segments(events: list[dict]) -> None:
    """The segment events are what windows_to_segments makes of the window events."""
    windows = [e for e in events if e["type"] == "window"]
    rows = [(w["start"], w["end"], [next(x["score"] for x in w["labels"] if x["label"] == c) for c in "ab"])
            for w in windows]
    expected = [s.to_dict() for s in windows_to_segments(rows, ["a", "b"])]
    got = [{k: v for k, v in e.items() if k != "type"} for e in events if e["type"] == "segment"]
    assert [(s["label"], s["start"], s["end"]) for s in got] == [(s["label"], s["start"], s["end"]) for s in expected]
    assert [s["score"] for s in got] == pytest.approx([s["score"] for s in expected])


# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [1, 2, 3, 4])
@pytest.mark.parametrize("multilabel", [False, True])
def test_segment_closer_matches_windows_to_segments(smoothing, multilabel) -> None:
    rng = np.random.default_rng(smoothing + 10 * multilabel)
    labels = ["a", "b", "c"]
    for trial in range(20):
        n = int(rng.integers(1, 30))
        stride, window = (0.5, 1.0) if trial % 2 else (1.0, 1.0)
        scores = rng.random((n, 3))
        scores[rng.random(n) < 0.3] *= 0.3  # some background
        windows = [(i * stride, i * stride + window, scores[i]) for i in range(n)]
        kw = dict(smoothing=smoothing, multilabel=multilabel, background_threshold=0.4,
                  min_duration=0.6 if trial % 3 == 0 else 0.0, score_reduce="max" if trial % 4 == 1 else "mean")
        closer = SegmentCloser(labels, **kw)
        got, closed_at = [], []
        for i, (a, b, row) in enumerate(windows):
            for seg in closer.push(a, b, row):
                got.append(seg)
                closed_at.append(i)
        got.extend(closer.flush())
        expected = windows_to_segments(windows, labels, **kw)
        assert sorted((s.label, s.start, s.end) for s in got) == [(s.label, s.start, s.end) for s in
                                                                  sorted(expected, key=lambda s: (s.label, s.start, s.end))]
        by_key = {(s.label, s.start, s.end): s.score for s in expected}
        assert [s.score for s in got] == pytest.approx([by_key[(s.label, s.start, s.end)] for s in got])
        # a segment is reported by the push that makes the first window after it final, not later
        bounds = owned_bounds(np.array([w[0] for w in windows]), np.array([w[1] for w in windows]))
        for seg, i in zip(got, closed_at):
            first_after = int(np.nonzero(np.isclose(bounds, seg.end))[0][0])
            assert i == first_after + (smoothing - 1) // 2


@pytest.mark.parametrize("smoothing", [1, 3])
@pytest.mark.parametrize("multilabel, background", [(False, None), (False, "c"), (True, None)])
def test_segment_closer_matches_windows_to_segments_with_refined_edges(smoothing, multilabel, background) -> None:
    rng = np.random.default_rng(smoothing + 10 * multilabel + 100 * (background is not None))
    labels = ["a", "b", "c"]
    for trial in range(20):
        n = int(rng.integers(1, 30))
        stride, window = (0.25, 1.0) if trial % 2 else (1.0, 1.0)
        scores = rng.random((n, 3))
        scores[rng.random(n) < 0.3] *= 0.3
        windows = [(i * stride, i * stride + window, scores[i]) for i in range(n)]
        kw = dict(smoothing=smoothing, multilabel=multilabel, background_threshold=0.4, background=background,
                  refine_edges=True, min_duration=0.3 if trial % 3 == 0 else 0.0)
        closer = SegmentCloser(labels, **kw)
        got = [seg for a, b, row in windows for seg in closer.push(a, b, row)] + closer.flush()
        expected = windows_to_segments(windows, labels, **kw)
        key = lambda s: (s.label, s.start)  # noqa: E731
        got, expected = sorted(got, key=key), sorted(expected, key=key)
        assert [s.label for s in got] == [s.label for s in expected]
        flat = lambda segs: [x for s in segs for x in (s.start, s.end, s.score)]  # noqa: E731
        assert flat(got) == pytest.approx(flat(expected))
        assert background not in {s.label for s in got}


def test_segment_closer_rejects_out_of_order_windows() -> None:
    closer = SegmentCloser(["a"])
    closer.push(1.0, 2.0, [0.9])
    with pytest.raises(ValueError, match="in order"):
        closer.push(0.0, 1.0, [0.9])


def test_window_timestamps_are_plan_windows_choice() -> None:
    plan = plan_windows(10.0, FPS, 8, window=2.0, stride=0.7)
    for w in plan[:-1]:  # the last one is filled from the end of the file
        assert tuple(window_timestamps(w.start, w.end, FPS, 8)) == w.timestamps
    assert window_timestamps(0.0, 1.0, None, 4) == [0.125, 0.375, 0.625, 0.875]


def test_source_kind(tmp_path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    (tmp_path / "file.ts").write_bytes(b"x")
    assert source_kind(str(fifo)) == "pipe"
    assert source_kind(str(tmp_path / "file.ts")) == "file"
    assert source_kind("udp://127.0.0.1:5000") == source_kind("http://127.0.0.1/x.ts") == "network"
    for bad, reason in [("/dev/video-none", "no such camera device"), (str(tmp_path / "missing.ts"), "no such file"), (str(tmp_path), "directory"),
                        ("ftp://127.0.0.1/a.ts", "unsupported URL scheme")]:
        with pytest.raises(StreamSourceError, match=reason):
            source_kind(bad)


# -- live sources ---------------------------------------------------------------------------------


def test_fifo_windows_get_the_frames_plan_windows_chooses(tmp_path, ab_model) -> None:
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    writer, written = _feed(fifo, frames=55)  # 2.2 s
    events, seen = _collect(str(fifo), ab_model, window=0.8, stride=0.4, timeout=20)
    writer.join(10)
    windows = [e for e in events if e["type"] == "window"]
    plan = plan_windows(55 / FPS, FPS, 8, window=0.8, stride=0.4)
    assert [(w["start"], w["end"]) for w in windows] == [(p.start, p.end) for p in plan]
    for w, p in zip(windows, plan):  # the frames shown at the plan's timestamps, last window included
        assert seen[w["index"]] == [int(t * FPS) for t in p.timestamps]
        assert [x["label"] for x in w["labels"]] and sum(x["score"] for x in w["labels"]) == pytest.approx(1.0)
    assert events[-1] == {"type": "end", "reason": "end_of_stream", "windows": len(plan), "skipped": 0,
                          "duration": pytest.approx(2.2)}
    _check_segments(events)
    assert len(written) == 55


def test_growing_file_is_followed_until_it_stops_growing(tmp_path, ab_model) -> None:
    path = tmp_path / "recording.ts"
    path.touch()
    started = threading.Event()
    writer, _ = _feed(path, frames=40, wait=lambda i: started.wait(10) if i == 0 else None)
    reader = LiveReader(str(path), size=64, timeout=3.0)
    assert reader.kind == "file"
    started.set()
    time.sleep(0.3)  # some data is there when the reader opens; the rest arrives while it reads
    got = [(round(f.time * FPS), frame_index(f.image)) for f in reader.frames()]
    writer.join(10)
    assert got == [(i, i) for i in range(40)]  # every frame, in order, at its time


def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_until_bound(port: int, limit: float = 60.0, *, released_first: bool = False) -> None:
    """Wait until someone (the reader) has bound UDP ``port`` on 127.0.0.1; with
    ``released_first``, until it has let it go (dropped the connection) and bound it again."""
    deadline = time.monotonic() + limit
    if released_first:
        gone = time.monotonic() + 10.0  # if the short gap was missed, the drop has surely happened by then
        while _udp_bound(port) and time.monotonic() < gone:
            time.sleep(0.005)
    while time.monotonic() < deadline and not _udp_bound(port):
        time.sleep(0.02)


def test_udp_source_and_reconnect_after_the_sender_restarts(ab_model) -> None:
    port = _free_port()
    url = f"udp://127.0.0.1:{port}"
    stop = threading.Event()
    state = {"senders": 0}

    def senders() -> None:
        # two senders one after the other: frames 0-59, then (after a pause) frames 100-139. UDP
        # loses what is sent while nobody listens, so each sender waits for the reader's socket.
        _wait_until_bound(port)
        stream_test_video(f"{url}?pkt_size=1316", frames=60, fps=FPS, size=SIZE)
        state["senders"] = 1
        _wait_until_bound(port, released_first=True)  # the read timeout passes: it drops and reconnects
        stream_test_video(f"{url}?pkt_size=1316", frames=40, fps=FPS, size=SIZE, first_index=100)
        state["senders"] = 2

    thread = threading.Thread(target=senders, daemon=True)
    thread.start()
    seen: dict[int, list[int]] = {}

    def hook(event, frames) -> None:
        seen[event["index"]] = [frame_index(f) for f in frames]
        if any(i >= 130 for i in seen[event["index"]]):
            stop.set()  # enough: end the stream from outside, as a websocket would

    events = list(label_stream(url, ab_model, window=0.4, timeout=1.5, backoff=0.2, retries=20, stop=stop,
                               on_window=hook))
    thread.join(10)
    codes = [e["code"] for e in events if e["type"] == "warning"]
    assert "source_dropped" in codes and "reconnected" in codes
    windows = [e for e in events if e["type"] == "window"]
    starts = [w["start"] for w in windows]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # stream time goes on after a drop
    first = [seen[w["index"]] for w in windows if max(seen[w["index"]]) < 60]
    later = [seen[w["index"]] for w in windows if min(seen[w["index"]]) >= 100]
    assert first and later
    # within one sender the frames are the ones shown at the window's timestamps
    w0 = windows[0]
    base = seen[w0["index"]][0] - int(window_timestamps(w0["start"], w0["end"], FPS, 8)[0] * FPS)
    assert seen[w0["index"]] == [base + i for i in _expected_indices(w0["start"], w0["end"])]
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "stopped"
    assert any(e["type"] == "segment" for e in events)


class _LiveTS(http.server.BaseHTTPRequestHandler):
    """Each GET streams a paced MPEG-TS (frames 0-29 on the first connection, 100-129 on the
    second) and closes; later connections get 503 (the source is gone)."""

    connections = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).connections += 1
        n = type(self).connections
        if n > 2:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        try:
            stream_test_video(self.wfile, frames=30, fps=FPS, size=SIZE, first_index=0 if n == 1 else 100)
        except (OSError, ValueError):
            pass

    def log_message(self, *args) -> None:
        pass


def test_http_source_reconnects_then_gives_up(ab_model) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LiveTS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
        events, seen = _collect(url, ab_model, window=0.4, timeout=3.0, backoff=0.1, retries=1)
    finally:
        server.shutdown()
        server.server_close()
    codes = [e["code"] for e in events if e["type"] == "warning"]
    assert codes.count("reconnected") == 1 and "source_dropped" in codes
    windows = [e for e in events if e["type"] == "window"]
    indices = [seen[w["index"]] for w in windows]
    assert any(max(i) < 30 for i in indices) and any(min(i) >= 100 for i in indices)
    for w in windows:  # the first connection's frames are exactly the ones at the timestamps
        if max(seen[w["index"]]) < 30:
            assert seen[w["index"]] == _expected_indices(w["start"], w["end"])
    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "source_lost" and "gave up" in end["message"]
    assert [e["type"] for e in events[-3:-1]].count("segment") >= 1  # open segments flushed before the end


def test_a_damaged_stretch_is_a_warning_not_the_end(tmp_path, ab_model) -> None:
    """A garbled second in the middle of the feed: the stream goes on, windows on both sides."""
    fifo = tmp_path / "damaged.ts"
    os.mkfifo(fifo)

    class Damaging:
        def __init__(self, fh) -> None:
            self.fh, self.n = fh, 0

        def write(self, data) -> int:
            self.n += 1
            if 30 <= self.n < 60:  # about a second of frames: keep each TS header, garble the payload
                b = bytearray(data)
                noise = np.random.default_rng(self.n).integers(0, 256, len(b), dtype=np.uint8).tobytes()
                for k in range(0, len(b) - 187, 188):
                    b[k + 8:k + 188] = noise[k + 8:k + 188]
                data = bytes(b)
            return self.fh.write(data)

    def run() -> None:
        with open(fifo, "wb", buffering=0) as fh:
            try:
                stream_test_video(Damaging(fh), frames=75, fps=FPS, size=SIZE, realtime=False)
            except OSError:
                pass

    threading.Thread(target=run, daemon=True).start()
    events, seen = _collect(str(fifo), ab_model, window=1.0, timeout=10)
    assert events[-1]["reason"] == "end_of_stream"
    windows = [e for e in events if e["type"] == "window"]
    assert len(windows) == 3 and events[-1]["windows"] == 3
    assert seen[0] == _expected_indices(0.0, 1.0)  # before the damage: the right frames


def test_a_window_that_cannot_be_made_is_skipped_with_a_warning(tmp_path, ab_model) -> None:
    fifo = tmp_path / "f.ts"
    os.mkfifo(fifo)
    _feed(fifo, frames=50, realtime=False)

    def hook(event, frames) -> None:
        if event["index"] == 1:
            raise ValueError("made-up damage")

    events = list(label_stream(str(fifo), ab_model, window=0.5, timeout=10, on_window=hook))
    assert [e["index"] for e in events if e["type"] == "window"] == [0, 2, 3]
    warning = next(e for e in events if e["type"] == "warning")
    assert warning["code"] == "window_skipped" and "made-up damage" in warning["message"]
    assert events[-1]["skipped"] == 1 and events[-1]["reason"] == "end_of_stream"
    segments = [e for e in events if e["type"] == "segment"]
    assert segments and segments[0]["start"] == 0.0 and segments[-1]["end"] == 2.0


# -- the command ------------------------------------------------------------------------------------


def _falv(*args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "falv", "stream", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.mark.parametrize("source, code, message", [
    ("{tmp}/missing.ts", 2, "no such file"),
    ("ftp://127.0.0.1/live.ts", 2, "unsupported URL scheme"),
    ("{tmp}/notes.ts", 3, "cannot be opened"),
    ("udp://127.0.0.1:{port}", 3, "cannot be opened (no data within 1 s)"),
])
def test_bad_source_is_one_line_and_an_exit_code(tmp_path, ab_model, source, code, message, capsys) -> None:
    from falv.cli.main import main

    (tmp_path / "notes.ts").write_text("not a video\n" * 100)
    source = source.format(tmp=tmp_path, port=_free_port())
    with pytest.raises(SystemExit) as exit_info:  # in-process: the same entry point as the command
        main(["stream", source, "--model", str(ab_model), "--window", "1", "--timeout", "1", "--no-reconnect"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == code, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("Error: ") and message in lines[-1]
    assert sum("Error" in line for line in lines) == 1  # click adds its usage lines to usage errors only
    assert out == ""


def test_bad_options_are_usage_errors(ab_model, capsys) -> None:
    from falv.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["stream", "udp://127.0.0.1:9", "--model", str(ab_model), "--window", "1", "--stride", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "must not exceed" in err and "Traceback" not in err


def test_ctrl_c_ends_cleanly_with_segments_flushed(tmp_path, ab_model) -> None:
    fifo = tmp_path / "cam.ts"
    os.mkfifo(fifo)
    stop = threading.Event()
    writer, _ = _feed(fifo, frames=2000, stop=stop)
    proc = _falv(fifo, "--model", ab_model, "--window", 0.4, "--top-k", 1)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            if sum(e["type"] == "window" for e in lines) == 3:
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    lines += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert lines[-1]["type"] == "end" and lines[-1]["reason"] == "stopped"
    after = lines[[e["type"] for e in lines].index("window") + 2:]
    assert any(e["type"] == "segment" for e in after)  # the open segment was flushed
    assert all(len(e["labels"]) == 1 for e in lines if e["type"] == "window")


def test_windows_far_behind_the_newest_frame_are_skipped(tmp_path, ab_model) -> None:
    """A model slower than the source: windows ending more than max_lag behind are skipped."""
    fifo = tmp_path / "slow.ts"
    os.mkfifo(fifo)
    _feed(fifo, frames=40)

    def slow_first_window(event, frames) -> None:
        if event["index"] == 0:
            time.sleep(1.0)  # meanwhile 1 s of frames arrives

    events = list(label_stream(str(fifo), ab_model, window=0.2, timeout=10, max_lag=0.3,
                               on_window=slow_first_window))
    behind = [e for e in events if e["type"] == "warning" and e["code"] == "model_behind"
              and e["message"].startswith("window ")]  # (others say how many waiting frames were dropped)
    scored = [e["index"] for e in events if e["type"] == "window"]
    assert behind and "window 1 " in behind[0]["message"] and 1 not in scored
    assert scored[0] == 0 and events[-1]["reason"] == "end_of_stream"
    # every window of the 1.6 s feed was either scored or skipped (how many of each depends on the load)
    assert sorted(scored + [int(e["message"].split()[1]) for e in behind]) == list(range(8))
    assert events[-1]["skipped"] == len(behind) and events[-1]["windows"] == len(scored)


def test_frames_waiting_for_a_busy_model_are_bounded() -> None:
    """While the model runs, the reader keeps reading; a waiting frame is dropped only when
    every window that could use it will be skipped by the lag check."""
    from falv.labeling.stream import _Feed
    from falv.video.live import LiveFrame, LiveNotice

    def drain(feed):
        feed.thread.join(10)
        items = []
        while True:
            try:
                items.append(feed.get(0))
            except Exception:
                return items

    class Source:
        fps = 10.0

        def __init__(self, wall) -> None:
            self.wall = wall

        def frames(self):
            yield LiveNotice("reconnected", "kept: notices are never dropped")
            for i in range(100):
                yield LiveFrame(time=i / 10, image=np.zeros((2, 2, 3), np.uint8), wall=self.wall)

    feed = _Feed(Source(wall=0.0), max_lag=5.0, window=1.0)  # every frame arrived long ago
    items = drain(feed)
    assert isinstance(items[0], LiveNotice) and items[-1] is _Feed._END
    # a window ends at most 1 s (+ a frame) after its first frame: the last 1.2 s are kept
    assert [round(f.time * 10) for f in items[1:-1]] == list(range(88, 100)) and feed.dropped == 88
    feed = _Feed(Source(wall=time.time() + 60), max_lag=5.0, window=1.0)  # fresh frames: all kept
    assert len(drain(feed)) == 102 and feed.dropped == 0


def test_the_window_defaults_to_the_models_clip_duration(tmp_path) -> None:
    from falv.config import ClipSampling

    torch.manual_seed(0)
    model = FALForVideoClassification(preset("tiny", id2label={0: "a", 1: "b"}, sampling=ClipSampling(clip_seconds=0.8),
                                             temperature=2.0))
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    writer, _ = _feed(fifo, frames=50)  # 2 s
    events, _ = _collect(str(fifo), model, stride=0.4, timeout=20)  # no window: the model's 0.8 s
    writer.join(10)
    plan = plan_windows(50 / FPS, FPS, 8, window=0.8, stride=0.4)
    got = [(w["start"], w["end"]) for w in events if w["type"] == "window"]
    assert len(got) == len(plan) == 4
    assert got == [pytest.approx((p.start, p.end)) for p in plan]
