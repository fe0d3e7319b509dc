"""`falv serve` against `falv label` on the same files, in one run; and a soak.

Throughput: the same videos labelled by the command (`falv label`, one process, as a user
runs it, timed from start to end) and through a running server by 1, 4 and 16 concurrent
clients (each submits a job by path and waits for it; timed from the first submission to
the last record). Both are clips per second over the same windows; the server's start-up
(model load, worker start) is paid once before, as a service pays it. Latency: `GET /health`
and job submission (`POST /v1/jobs`), idle and while 16 clients keep it busy.

Soak (`--soak N`): N jobs through one server from 4 clients, the server's resident memory
(its process and its decoding workers, from /proc) sampled every second: flat memory
means the last tenth of the samples sits within a few percent of the first tenth after
warm-up.

    python benchmarks/serve_bench.py                 # tiny model, 16 videos
    python benchmarks/serve_bench.py --soak 500      # plus the soak
    python benchmarks/serve_bench.py --quick         # a smoke run (tests use it)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def make_inputs(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> list[Path]:
    from falv.video.testing import write_test_video

    folder.mkdir(parents=True, exist_ok=True)
    fps = 25
    return [write_test_video(folder / f"v{i:03d}.mp4", frames=int(seconds * fps), fps=fps, size=size, gop=25,
                             texture=True) for i in range(count)]


def make_model(folder: Path, preset_name: str) -> Path:
    import torch

    from falv import FALForVideoClassification, preset

    torch.manual_seed(0)
    FALForVideoClassification(preset(preset_name, id2label={0: "a", 1: "b", 2: "c"})).save_pretrained(folder)
    return folder


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 60) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, payload: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, model: Path, data_dir: Path, root: Path, workers: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "falv", "serve", "--model", str(model), "--port", str(self.port), "--data-dir",
               str(data_dir), "--allow-root", str(root), "--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if _get(self.url + "/health", 2)["status"] == "UP":
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("falv serve did not start")

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (MB)."""
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


def run_job(url: str, path: Path, options: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    job_id = _post(url + "/v1/jobs", {"path": str(path), **options})["id"]
    submit_s = time.perf_counter() - started
    while True:
        job = _get(f"{url}/v1/jobs/{job_id}")
        if job["status"] in ("done", "failed", "cancelled"):
            return job, submit_s
        time.sleep(0.02)


def through_server(server: Server, paths: list[Path], clients: int, options: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda p: run_job(server.url, p, options), paths))
    wall = time.perf_counter() - started
    clips = sum(len(job["record"]["windows"]) for job, _ in results if job["record"])
    failed = sum(job["status"] != "done" for job, _ in results)
    return {"clients": clients, "seconds": wall, "clips": clips, "clips_per_s": clips / wall, "failed": failed,
            "submit_ms_p50": 1000 * statistics.median(s for _, s in results)}


def through_cli(model: Path, paths: list[Path], out: Path, options: dict[str, Any], workers: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "falv", "label", *map(str, paths), "--model", str(model), "--out", str(out), "-q",
            "--workers", str(workers), "--no-resume"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    subprocess.run(args, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    wall = time.perf_counter() - started
    clips = sum(len(json.loads(line)["windows"]) for line in (out / "labels.jsonl").read_text().splitlines())
    return {"seconds": wall, "clips": clips, "clips_per_s": clips / wall}


def latency(url: str, count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        _get(url + "/health")
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p95_ms": times[int(len(times) * 0.95) - 1]}


def soak(server: Server, video: Path, jobs: int, clients: int = 4) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    done = 0

    def one(_: int) -> str:
        job, _s = run_job(server.url, video, {"clips": 1})
        return job["status"]

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(jobs)]
        while not all(f.done() for f in futures):
            samples.append((time.perf_counter() - started, server.rss_mb()))
            time.sleep(1.0)
        statuses = [f.result() for f in futures]
        done = statuses.count("done")
    samples.append((time.perf_counter() - started, server.rss_mb()))
    n = max(1, len(samples) // 10)
    warm = samples[n:] or samples  # after the first tenth (the allocator and caches warm up)
    first = statistics.mean(m for _, m in warm[:n])
    last = statistics.mean(m for _, m in warm[-n:])
    return {"jobs": jobs, "done": done, "seconds": samples[-1][0], "rss_first_mb": first, "rss_last_mb": last,
            "rss_peak_mb": max(m for _, m in samples), "growth": last / first - 1 if first else None,
            "samples": [(round(t, 1), round(m, 1)) for t, m in samples]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", default="128,160", help="H,W of the generated videos")
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--soak", type=int, default=0, help="jobs in the soak (0: none)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.clients, args.soak = 4, 2.0, "1,4", min(args.soak, 8) or 8
    work = args.out or Path(tempfile.mkdtemp(prefix="falv-serve-bench-"))
    h, w = (int(x) for x in args.size.split(","))
    paths = make_inputs(work / "videos", args.videos, args.seconds, (h, w))
    model = make_model(work / "model", args.preset)
    options = {"window": args.window}
    results: dict[str, Any] = {"cpu": cpu_name(), "preset": args.preset, "videos": len(paths),
                               "seconds_each": args.seconds, "size": [h, w], "window": args.window, "runs": []}
    server = Server(model, work / "serve-data", work / "videos", args.workers)
    try:
        run_job(server.url, paths[0], {"clips": 1})  # warm: the model prepared, the workers started
        results["health_idle"] = latency(server.url, 100)
        for n, clients in enumerate(int(c) for c in args.clients.split(",")):
            cli = through_cli(model, paths, work / f"cli{n}", options, args.workers)
            srv = through_server(server, paths, clients, options)
            if clients == max(int(c) for c in args.clients.split(",")):
                with concurrent.futures.ThreadPoolExecutor(1) as pool:  # /health while busy
                    busy = pool.submit(through_server, server, paths, clients, options)
                    results["health_busy"] = latency(server.url, 50)
                    busy.result()
            results["runs"].append({"server": srv, "cli": cli, "ratio": srv["clips_per_s"] / cli["clips_per_s"]})
            print(f"{clients:2d} client(s): server {srv['clips_per_s']:.2f} clips/s, falv label "
                  f"{cli['clips_per_s']:.2f} clips/s -> {srv['clips_per_s'] / cli['clips_per_s']:.2f}x "
                  f"(submit p50 {srv['submit_ms_p50']:.1f} ms, {srv['failed']} failed)", flush=True)
        print(f"/health idle p50 {results['health_idle']['p50_ms']:.1f} ms p95 {results['health_idle']['p95_ms']:.1f} ms;"
              f" busy p50 {results.get('health_busy', {}).get('p50_ms', float('nan')):.1f} ms", flush=True)
        if args.soak:
            results["soak"] = soak(server, paths[0], args.soak)
            s = results["soak"]
            print(f"soak: {s['done']}/{s['jobs']} jobs in {s['seconds']:.0f} s, RSS {s['rss_first_mb']:.0f} -> "
                  f"{s['rss_last_mb']:.0f} MB ({100 * s['growth']:+.1f}%), peak {s['rss_peak_mb']:.0f} MB", flush=True)
    finally:
        server.stop()
    print(f"CPU: {results['cpu']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
