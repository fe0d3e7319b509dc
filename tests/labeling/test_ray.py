"""``falv label --engine ray`` on a two-node Ray cluster on loopback (ray.cluster_utils.Cluster).

One cluster for the module in each xdist worker that runs its tests (Ray takes seconds to start),
tiny on purpose: one CPU per node and a 100 MB object store. Deselect with ``-m 'not cluster'``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Every node and driver binds 127.0.0.1 (read when ray is imported).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray")

import falv  # noqa: E402
from falv.errors import RunError  # noqa: E402
from falv.labeling.ray_engine import DECODE_LOG_ENV, RayOptions  # noqa: E402
from falv.labeling.stages import CRASH_ENV  # noqa: E402
from falv.video.testing import write_fuzz_sources, write_test_video  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DAMAGED = ROOT / "tests" / "fixtures" / "damaged"
# Half a core for the model actor and for each decode task: a node holds both, so losing the
# other node cannot leave the actor waiting for a core that a task holds (or the reverse).
RAY_OPTS = RayOptions(actor_cpus=0.5, task_cpus=0.5, wait_for_actors_s=300)
CRASHING = "crash_me.mp4"
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False}


def _env() -> dict[str, str]:
    # nodes and drivers import this checkout's falv (the venv may point at another one)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env[CRASH_ENV] = CRASHING  # a decoding process given this file dies with SIGSEGV (only that file)
    return env


@pytest.fixture(scope="module")
def decode_log(tmp_path_factory):
    """Where the cluster's decode tasks write when they ran (``DECODE_LOG_ENV``)."""
    return tmp_path_factory.mktemp("decode-log")


@pytest.fixture(scope="module")
def cluster(decode_log):
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update(_env())  # the node processes inherit it
    os.environ[DECODE_LOG_ENV] = str(decode_log)
    c = Cluster(initialize_head=True, head_node_args=dict(NODE))
    worker = c.add_node(**NODE)
    c.wait_for_nodes(timeout=120)
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield c, worker
    finally:
        ray.shutdown()
        c.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """The fuzz sources (codecs, containers, rotation, VFR, one frame...), the damaged fixtures
    and broken files: not a video, empty, truncated."""
    folder = tmp_path_factory.mktemp("awkward")
    paths = [str(p) for p in write_fuzz_sources(folder, size=(48, 64)).values()]
    paths += [str(p) for p in sorted(DAMAGED.iterdir())]
    (folder / "not_a_video.mp4").write_bytes(b"this is not a video\n" * 50)
    (folder / "empty.mkv").write_bytes(b"")
    whole = (folder / "h264.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    paths += [str(folder / n) for n in ("not_a_video.mp4", "empty.mkv", "truncated.mp4")]
    return paths


def _by_path(records):
    return {r["path"]: r for r in records}


def _compare(local: dict, remote: dict) -> None:
    assert sorted(local) == sorted(remote)
    for path, a in local.items():
        b = remote[path]
        assert (a.get("error") or {}).get("type") == (b.get("error") or {}).get("type"), path
        if a.get("error"):
            continue
        assert [x["label"] for x in a["labels"]][:1] == [x["label"] for x in b["labels"]][:1], path
        for x, y in zip(a["labels"], b["labels"]):
            assert x["label"] == y["label"] and abs(x["score"] - y["score"]) <= 1e-4, path
        assert len(a["windows"]) == len(b["windows"]), path
        for wa, wb in zip(a["windows"], b["windows"]):
            for x, y in zip(wa["labels"], wb["labels"]):
                assert x["label"] == y["label"] and abs(x["score"] - y["score"]) <= 1e-4, path


def test_ray_engine_equals_local_engine_on_awkward_inputs(cluster, awkward, model_dir, tmp_path):
    local = _by_path(r.to_dict() for r in falv.label(awkward, model_dir, out_dir=tmp_path / "local",
                                                     precision="fp32", workers=1))
    remote = _by_path(r.to_dict() for r in falv.label(awkward, model_dir, out_dir=tmp_path / "ray", precision="fp32",
                                                      engine="ray", ray_options=RAY_OPTS))
    assert len(remote) == len(awkward)
    _compare(local, remote)
    # the broken files are errors in both, the sound ones labels in both
    assert {os.path.basename(p) for p, r in remote.items() if r.get("error")} >= {"not_a_video.mp4", "empty.mkv"}
    assert sum(1 for r in remote.values() if not r.get("error")) >= len(awkward) - 4
    # the records went to labels.jsonl on the driver: one per input; a rerun has nothing to do
    lines = (tmp_path / "ray" / "labels.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["path"] for x in lines) == sorted(remote)
    again = list(falv.label(awkward, model_dir, out_dir=tmp_path / "ray", precision="fp32", engine="ray"))
    from falv.labeling.store import DETERMINISTIC_ERRORS

    # only failures retried, and not the deterministic ones (not a video, no video stream)
    assert {r.path for r in again} == {p for p, r in remote.items()
                                       if r.get("error") and r["error"]["type"] not in DETERMINISTIC_ERRORS}


def _overlap(intervals: list[tuple[float, float]]) -> float:
    """The share of the time some interval is open during which two or more are."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_, last, busy, both = 0, None, 0.0, 0.0
    for t, step in events:
        if last is not None and open_ >= 1:
            busy += t - last
            both += (t - last) if open_ >= 2 else 0.0
        open_, last = open_ + step, t
    return both / busy if busy else 0.0


@pytest.mark.parametrize("intervals, share", [
    ([(0, 1), (2, 3)], 0.0),                # one after the other
    ([(0, 2), (0, 2)], 1.0),                # side by side
    ([(0, 2), (1, 3)], 1 / 3),              # 1 s of 3 together
    ([(0, 4), (1, 2), (2, 3)], 0.5),        # a long task and two short ones beside it
    ([], 0.0),
])
def test_overlap_table(intervals, share):
    assert _overlap(intervals) == pytest.approx(share)


def test_decoding_runs_beside_the_model_actors(cluster, decode_log, model_dir, tmp_path):
    """The model actors hold half of the cluster's CPUs (two of 0.5 on two 1-CPU nodes); the
    other half is two decode tasks of 0.5, and they run side by side. Ray Data's default
    per-operator reservation left decoding one task at a time here, alternating with the model
    (`op_resource_reservation_enabled` is off for that): side by side 0 % of the time with it,
    about a third without (short tasks: their starts and ends are a larger part)."""
    for old in decode_log.iterdir():
        old.unlink()
    videos = tmp_path / "videos"
    videos.mkdir()
    paths = []
    for i in range(8):
        paths.append(str(write_test_video(videos / f"v{i}.mp4", frames=144, fps=12, size=(96, 128), texture=True)))
    records = list(falv.label(paths, model_dir, precision="fp32", engine="ray", ray_options=RAY_OPTS))
    assert len(records) == 8 and all(r.error is None for r in records)
    runs = [json.loads(p.read_text()) for p in decode_log.iterdir()]
    assert sorted(r["key"] for r in runs) == sorted(paths)
    share = _overlap([(r["start"], r["end"]) for r in runs])
    assert share >= 0.15, f"decode tasks ran side by side {share:.0%} of the time"


def test_cluster_without_the_resources_asked_is_one_clear_error(cluster, awkward, model_dir):
    with pytest.raises(RunError, match="no GPU"):
        list(falv.label(awkward[:1], model_dir, engine="ray", device="cuda"))
    with pytest.raises(RunError, match="CPU"):
        list(falv.label(awkward[:1], model_dir, engine="ray", ray_options=RayOptions(actors=8)))


def test_a_model_actor_that_cannot_prepare_its_model_stops_the_run_with_its_error(cluster):
    """The actor prepares its model on a thread (decoding starts meanwhile); the first batch
    waits for it, and a model that could not be prepared is the run's error, not a hang."""
    import pickle

    from falv.labeling.ray_engine import ModelActor, _row
    from falv.labeling.stages import LabelOptions

    actor = ModelActor([ray.put("not a model")], None, LabelOptions(), False, "cpu")
    window = _row("v.mp4", "window", {"w": 0, "frames": None, "crops": 1, "path": "v.mp4", "temperature": 1.0})
    out = actor({k: np.array([v], dtype=object) for k, v in window.items()})
    assert list(out["kind"]) == ["fatal"]
    assert "could not be prepared on a Ray worker" in pickle.loads(out["item"][0])["error"]


def test_a_decoder_that_crashes_its_ray_worker_is_that_files_error_record(cluster, tmp_path, model_dir):
    """Not a task retried forever: Ray's retries, then the driver labels the file itself with the
    local engine, whose decoder crashes too: the file's decoder_crashed record; the others are
    labelled on the cluster. (The driver is the CLI in its own process, so that its local decoding
    processes inherit the fault injection.)"""
    c, _ = cluster
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("ok0.mp4", CRASHING, "ok1.mp4"):
        write_test_video(videos / name, frames=24, fps=12, size=(48, 64))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "falv", "label", str(videos), "--model", str(model_dir), "--out", str(out),
           "--precision", "fp32", "--engine", "ray", "--address", c.address, "--actor-cpus", "0.5",
           "--task-cpus", "0.5"]
    run = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 1, run.stderr[-2000:]  # one failed input
    assert "labelling them on this machine" in run.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads, (out / "labels.jsonl").read_text().splitlines())}
    assert sorted(records) == sorted(["ok0.mp4", CRASHING, "ok1.mp4"])
    assert records[CRASHING]["error"]["type"] == "decoder_crashed"
    assert "SIGSEGV" in records[CRASHING]["error"]["message"]
    assert not records["ok0.mp4"].get("error") and not records["ok1.mp4"].get("error")


def test_lost_worker_node_mid_run_leaves_one_record_per_input_and_no_error(cluster, model_dir, tmp_path):
    """The worker node is removed once the first record is written. Ray retries what it held; in
    some runs its iterator then waited for ever (over 600 s), so the pass's watchdog
    (--stall-timeout, short here) hands what was not finished to the driver's local engine. Either
    way: one record per input and no error caused by the loss. The driver is the CLI in its own
    process, so that a stalled pass dies with it and leaves nothing running on the cluster."""
    c, worker = cluster
    videos = tmp_path / "videos"
    videos.mkdir()
    paths = sorted(str(write_test_video(videos / f"v{i:02d}.mp4", frames=24, fps=12, size=(48, 64)))
                   for i in range(10))
    out = tmp_path / "out"
    labels = out / "labels.jsonl"
    cmd = [sys.executable, "-m", "falv", "label", str(videos), "--model", str(model_dir), "--out", str(out),
           "--precision", "fp32", "--engine", "ray", "--address", c.address, "--actor-cpus", "0.5",
           "--task-cpus", "0.5", "--stall-timeout", "45", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    removed = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if labels.exists() and labels.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.1)
        c.remove_node(worker, allow_graceful=False)  # the run is going (or over): take the worker node away
        removed = True
        _, err = proc.communicate(timeout=420)
    finally:
        if not removed:
            c.remove_node(worker, allow_graceful=False)
        proc.kill()
        c.add_node(**NODE)  # two nodes again for the next test
        c.wait_for_nodes(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(x) for x in labels.read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == paths  # exactly one record each
    assert [(r["path"], r["error"]) for r in lines if r.get("error")] == []


def test_a_stalled_pass_is_abandoned_by_the_watchdog():
    """The watchdog itself: rows pass through in order; an iterator that stops yielding is a
    _Stalled after the limit (the first row may take longer), and its error is re-raised."""
    import threading

    from falv.labeling import ray_engine

    assert list(ray_engine._watched(iter(range(5)), first=5, then=5)) == list(range(5))
    hang = threading.Event()

    def stalls():
        yield "a"
        hang.wait(30)  # a Ray iterator waiting for blocks that never come
        yield "late"

    got = []
    started = time.monotonic()
    with pytest.raises(ray_engine._Stalled):
        for row in ray_engine._watched(stalls(), first=5, then=0.3):
            got.append(row)
    assert got == ["a"] and time.monotonic() - started < 10
    hang.set()

    def fails():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(ray_engine._watched(fails(), first=5, then=5))
    assert RayOptions(stall_s=None).stall_seconds(120) == 240 and RayOptions(stall_s=3).stall_seconds(120) == 3


def test_driver_killed_then_rerun_resumes(cluster, model_dir, tmp_path):
    c, _ = cluster
    videos = tmp_path / "videos"
    videos.mkdir()
    # enough videos that the kill lands mid-run: records arrive in bursts (several videos' windows
    # per batch, two decode tasks side by side), and ten tiny ones could all be written in one
    for i in range(30):
        write_test_video(videos / f"k{i:02d}.mp4", frames=24, fps=12, size=(48, 64))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "falv", "label", str(videos), "--model", str(model_dir), "--out", str(out),
           "--precision", "fp32", "--engine", "ray", "--address", c.address, "--actor-cpus", "0.5", "--task-cpus", "0.5", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    labels = out / "labels.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if labels.exists() and labels.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    first = [json.loads(x) for x in labels.read_text().splitlines() if x.strip()]
    assert 1 <= len(first) < 30
    rerun = subprocess.run(cmd[:-1], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(first)} already done" in rerun.stderr
    final = [json.loads(x) for x in labels.read_text().splitlines()]
    assert sorted(r["path"] for r in final) == sorted(str(p) for p in videos.iterdir())  # exactly one each
    assert not any(r.get("error") for r in final)


def test_cli_ray_flags_need_the_ray_engine(model_dir, tmp_path):
    from click.testing import CliRunner

    from falv.cli.main import cli

    result = CliRunner().invoke(cli, ["label", str(tmp_path), "--model", str(model_dir), "--out",
                                       str(tmp_path / "o"), "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--engine ray" in result.output


@pytest.mark.parametrize("address", ["127.0.0.1:1", "localhost:1", "[::1]:1"])
def test_an_address_nothing_answers_on_is_one_clear_error_at_once(address, model_dir, tmp_path):
    """`ray.init` would retry for minutes; the CLI says so in one line and exits 3."""
    (tmp_path / "v.mp4").write_bytes(b"")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "falv", "label", str(tmp_path / "v.mp4"), "--model", str(model_dir),
                          "--out", str(tmp_path / "o"), "--engine", "ray", "--address", address],
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
    assert f"cannot reach the Ray cluster at {address}" in run.stderr and "Traceback" not in run.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("address", ["auto", "ray://head:10001", "head", "local"])
def test_addresses_that_are_not_host_and_port_are_left_to_ray(address):
    from falv.labeling.ray_engine import _check_reachable

    _check_reachable(address)  # no probe, no error


def test_an_address_that_answers_passes_the_probe():
    import socket

    from falv.labeling.ray_engine import _check_reachable

    with socket.create_server(("127.0.0.1", 0)) as server:
        _check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
