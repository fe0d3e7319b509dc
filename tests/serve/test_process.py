"""`falv serve` as a user runs it: a real process on loopback, killed, flooded, fed damaged files."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from falv.video.mutate import mutants
from falv.video.testing import write_fuzz_sources
from tests.serve.conftest import ServerProcess

pytestmark = pytest.mark.timeout(600)


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw[:1] in (b"{", b"[") else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw[:1] == b"{" else {"raw": raw[:200]}


def post_json(base: str, payload: object) -> tuple[int, dict]:
    return call(base + "/v1/jobs", "POST", json.dumps(payload).encode(), {"Content-Type": "application/json"})


def upload(base: str, name: str, data: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return call(base + "/v1/jobs", "POST", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def wait_final(base: str, ids: list[str], timeout: float = 300) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        jobs = {i: call(f"{base}/v1/jobs/{i}")[1] for i in ids}
        if all(j.get("status") in ("done", "failed", "cancelled") for j in jobs.values()):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs did not finish: {[j.get('status') for j in jobs.values()]}")


def test_a_killed_server_finishes_every_job_after_a_restart_and_redoes_none(serve_model, media, tmp_path):
    data_dir = tmp_path / "data"
    server = ServerProcess(serve_model, data_dir, media).start()
    try:
        ids = [post_json(server.url, {"path": str(media / f"clip{i % 4}.mp4"), "window": 0.5, "stride": 0.25})[1]["id"]
               for i in range(10)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once some are done and some are not
            states = [call(f"{server.url}/v1/jobs/{i}")[1]["status"] for i in ids]
            if "done" in states and any(s in ("queued", "running") for s in states):
                break
            time.sleep(0.05)
        before = {i: call(f"{server.url}/v1/jobs/{i}")[1] for i in ids}
        server.kill()
    finally:
        server.kill()
    finished_before = {i: j for i, j in before.items() if j["status"] == "done"}
    assert finished_before and len(finished_before) < len(ids)
    again = ServerProcess(serve_model, data_dir, media).start()
    try:
        after = wait_final(again.url, ids)
        listed = call(f"{again.url}/v1/jobs?limit=100")[1]["jobs"]
    finally:
        again.stop()
    assert all(j["status"] == "done" for j in after.values())
    assert sorted(j["id"] for j in listed) == sorted(ids)  # nothing lost, nothing added
    for job_id, job in finished_before.items():  # nothing done twice: finished jobs kept as they were
        assert after[job_id]["updated"] == job["updated"] and after[job_id]["record"] == job["record"]


def test_flood_of_good_and_bad_requests_gets_no_5xx_and_the_server_lives(live_server, media):
    base = live_server.url
    good = (media / "clip.webm").read_bytes()
    requests = [
        lambda: call(base + "/health"),
        lambda: post_json(base, {"path": str(media / "clip0.mp4"), "clips": 1}),
        lambda: call(base + "/v1/jobs", "POST", b"{oops", {"Content-Type": "application/json"}),
        lambda: post_json(base, {"path": "/etc/shadow"}),
        lambda: post_json(base, {"path": str(media / "clip0.mp4"), "clips": -1}),
        lambda: call(base + "/v1/jobs/" + uuid.uuid4().hex),
        lambda: upload(base, "notes.mp4", b"plain text\n" * 30),
        lambda: upload(base, "ok.webm", good),
        lambda: upload(base, "cut.webm", good[: len(good) // 2]),
        lambda: call(base + "/v1/jobs", "DELETE"),
        lambda: call(base + "/predict", "POST", b'{"tasks": 5}', {"Content-Type": "application/json"}),
        lambda: call(base + "/v1/jobs?limit=abc"),
    ]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda k: requests[k % len(requests)](), range(360)))
    statuses = [status for status, _ in results]
    assert max(statuses) < 500, [r for r in results if r[0] >= 500][:3]
    assert statuses.count(202) >= 90  # the good submissions were all taken (clips, uploads, cut uploads)
    ids = [body["id"] for status, body in results if status == 202]
    jobs = wait_final(base, ids, timeout=500)
    assert {j["status"] for j in jobs.values()} <= {"done", "failed"}
    assert call(base + "/health")[1]["status"] == "UP"


def test_damaged_uploads_become_failed_or_labelled_jobs_never_errors_of_the_server(live_server, tmp_path):
    base = live_server.url
    sources = {name: path.read_bytes() for name, path in write_fuzz_sources(tmp_path / "src").items()}
    ids = []
    for case, source, mutation, data in mutants(sources, 48, seed=3):
        status, body = upload(base, f"{case}-{mutation}-{source}", data)
        assert status in (202, 415), (case, source, mutation, status, body)
        if status == 202:
            ids.append(body["id"])
    jobs = wait_final(base, ids, timeout=500)
    for job in jobs.values():
        record = job["record"]
        assert job["status"] in ("done", "failed") and record is not None
        assert record["labels"] or record["error"]["type"] != "internal", record["error"]
    assert call(base + "/health")[1]["status"] == "UP"


def test_cli_refuses_an_open_port_without_a_token(serve_model, tmp_path):
    run = subprocess.run([sys.executable, "-m", "falv", "serve", "--model", str(serve_model), "--host", "0.0.0.0",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "without --token" in run.stderr and "Traceback" not in run.stderr
