"""Whole-process timing: ``falv label`` against transformers' pipeline from spawn to exit; first label out.

Issue #19, goals 2 and 5, measured in one run, on the same machine, with the same weights: a
random-init transformers TimeSformer directory (``label_bench.build_model_dir``: base preset,
400 labels, seed 0; ``--preset tiny`` for quick runs) that falv converts when it loads it and
the reference loads with transformers.

- **videos**: ``label_bench.write_video`` H.264 MP4s (30 fps, GOP 250, scrolling texture and a
  moving disk), written once into ``--videos DIR`` and reused: by default 6 x 640x360 and
  6 x 1920x1080, 10-40 s each, plus one short 360p video for the start-up figures.
- **whole run (goal 2: >= 3.5x the reference)**: two whole processes on all the videos, each
  timed with ``time.perf_counter()`` from spawn to exit (python start, imports, model load,
  every video, exit):

  * falv: ``python -m falv label VIDEOS... -m MODEL -o OUT --clips 1 --crops 1 --precision P
    -q --no-resume`` for each of ``--precisions`` (default ``auto,int8``; int8 is dropped
    where this CPU or torch build has none);
  * reference: ``python benchmarks/whole_run.py _reference PLAN.json OUT.json``, a hidden
    sub-command of this script that runs transformers' video-classification guide in one
    process: ``label_bench.run_reference`` (``from_pretrained``, then per video PyAV
    ``read_video_pyav`` of the frame indices falv plans for one clip, ``AutoImageProcessor``,
    ``TimesformerForVideoClassification`` in fp32). The indices are computed here, before the
    clock starts (``label_bench.frame_indices``), so the reference process imports no falv.

  ``--repeats N`` (default 3) runs that set N times, falv and the reference alternating (the
  order reversed every other repeat); each repeat's ratio is reference seconds / falv seconds
  of that repeat, and the median ratio is reported.
- **CPU use of each whole run**: ``/proc/stat`` (system-wide, all CPUs; idle + iowait counted
  as idle) read at spawn and at exit: busy share = 1 - idle / total over the run, and read
  every 0.1 s in a thread for a busy-over-time series (in the JSON). The machine-wide share
  counts every process on the machine, so the machine's load before the runs is measured
  too (``background``), and so is the run's own share: the CPU seconds of the process and all
  its descendants (the decoding workers included: this script is their subreaper while it
  runs, and ``wait4`` gives each one's usage) / (seconds x CPUs). Goal: idle < 10 % of the run.
- **start-up breakdown**, each its own process timed from spawn to exit: ``python -c "import
  torch"``, ``python -c "import falv.cli.main"``, and ``falv label`` on the one short 360p
  video (the first-label time).
- **first label out (goal 5: within 1 s + the ``import torch`` time of this machine)**:
  (a) ``falv label`` on the short 360p video, whole process (the figure above); (b) ``falv
  serve`` on 127.0.0.1 and a free port: from spawn to the finished job's record of the short
  video, submitted (``POST /v1/jobs``, ``clips=1, crops=1``) as soon as ``/health`` answers
  (polled every 20 ms); (c) ``falv stream`` on the short video file: from spawn to the first
  ``window`` line on its stdout. Every process started is stopped by its pid (process group),
  errors included.

One untimed warm-up process runs first (it imports torch, transformers' TimeSformer and
falv's engine, and labels the short video once), so every timed process finds the same warm
page cache and falv's converted model in the same state.

Usage::

    python benchmarks/whole_run.py --videos .bench/whole --json whole.json   # base preset, 3 repeats
    python benchmarks/whole_run.py --videos .bench/whole --repeats 5 --precisions auto
    python benchmarks/whole_run.py --quick --videos /tmp/wr_quick            # tiny preset, < 2 min (tests)

``--json FILE`` writes every figure and ``machine()`` (CPU from lscpu, cores, torch). Not a
test: it asserts only that every process ran; the goals are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_bench as lb  # noqa: E402  (the sibling script: videos, model, reference pipeline, machine)
import serve_bench as sb  # noqa: E402  (the sibling script: free port, HTTP helpers, one job)

SCRIPT = Path(__file__).resolve()
VideoSpec = lb.VideoSpec

FULL_SET = [VideoSpec(f"w360_{s}s", 360, 640, s) for s in (10, 15, 20, 25, 30, 40)] + [
    VideoSpec(f"w1080_{s}s", 1080, 1920, s) for s in (10, 15, 20, 25, 30, 40)]
QUICK_SET = [VideoSpec(f"wq90_{i}", 90, 160, 2) for i in range(6)] + [
    VideoSpec(f"wq180_{i}", 180, 320, 2) for i in range(6)]
FULL_SHORT = VideoSpec("first360_5s", 360, 640, 5)
QUICK_SHORT = VideoSpec("first360_2s", 360, 640, 2)

GOAL_RATIO = 3.5  # goal 2: the whole falv run >= 3.5x faster than the reference's
GOAL_IDLE = 0.10  # goal 2: idle < 10 % of the run
GOAL_FIRST_EXTRA_S = 1.0  # goal 5: first label within 1 s + the import torch time

say = lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)  # noqa: E731

# -- CPU sampling -------------------------------------------------------------------------------------


def cpu_times() -> tuple[int, int] | None:
    """(total, busy) jiffies of all CPUs from /proc/stat; busy excludes idle and iowait."""
    from falv.cli.bench import _CpuLoad

    read = _CpuLoad._read()
    return None if read is None else (read[0], read[1])


def busy_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    if start is None or end is None or end[0] <= start[0]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0])


def background_busy(seconds: float) -> float | None:
    """The machine's busy share over ``seconds`` while none of our processes runs."""
    start = cpu_times()
    time.sleep(seconds)
    return busy_share(start, cpu_times())


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (through /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    kids = [int(c) for c in fh.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class Sampler:
    """A thread reading /proc/stat every ``interval`` s (busy share per interval) and the process tree."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.series: list[list[float]] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pid: int, t0: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(pid, t0), daemon=True)
        self._thread.start()

    def _run(self, pid: int, t0: float) -> None:
        previous = cpu_times()
        while not self._stop.wait(self.interval):
            now = cpu_times()
            share = busy_share(previous, now)
            if share is not None:
                self.series.append([round(time.perf_counter() - t0, 3), round(share, 3)])
            previous = now
            self.pids.update(_descendants(pid))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux prctl PR_SET_CHILD_SUBREAPER)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap(pids: set[int], deadline_s: float = 10.0) -> float:
    """CPU seconds of ``pids`` that became our children (orphans of the timed process), each reaped once.

    A pid reaped by its own parent is accounted in that parent's usage; one still running after
    ``deadline_s`` (a descendant of a process we started) is killed by its pid, then reaped.
    """
    cpu, left = 0.0, set(pids)
    deadline = time.monotonic() + deadline_s
    killed = False
    while left:
        for pid in list(left):
            try:
                done, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:  # not ours: gone (reaped by its parent) or still under its parent
                if not os.path.exists(f"/proc/{pid}"):
                    left.discard(pid)
                continue
            if done:
                cpu += usage.ru_utime + usage.ru_stime
                left.discard(pid)
        if not left:
            break
        if time.monotonic() > deadline:
            if killed:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            killed, deadline = True, time.monotonic() + 5
        time.sleep(0.05)
    return cpu


def _kill_group(pid: int) -> None:
    """SIGKILL to the process group of a process we started (its pid); gone already is fine."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def stop_process(proc: subprocess.Popen) -> None:
    """SIGINT to the process group we started (its pid), then SIGKILL if it does not end in 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    except ProcessLookupError:
        proc.wait(30)


def _tail(fh: Any, chars: int = 3000) -> str:
    fh.seek(0)
    return fh.read().decode(errors="replace")[-chars:].strip()


def run_process(cmd: list[str], *, timeout: float, series: bool = True) -> dict[str, Any]:
    """Run ``cmd`` from spawn to exit: seconds, machine busy share, own CPU share, busy-over-time series."""
    cpus = os.cpu_count() or 1
    reaper = _subreaper(True)
    sampler = Sampler() if series else None
    with tempfile.TemporaryFile() as err:
        proc = None
        try:
            start = cpu_times()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
            if sampler is not None:
                sampler.start(proc.pid, t0)
            watchdog = threading.Timer(timeout, _kill_group, (proc.pid,))
            watchdog.daemon = True
            watchdog.start()
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            end = cpu_times()
            watchdog.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            if sampler is not None:
                sampler.stop()
            own = usage.ru_utime + usage.ru_stime
            if sampler is not None and reaper:
                own += _reap(sampler.pids - {proc.pid})
        finally:
            if sampler is not None:
                sampler.stop()
            if proc is not None and proc.returncode is None:
                _kill_group(proc.pid)
                proc.wait()
            if reaper:
                _subreaper(False)
        if proc.returncode != 0:
            why = (f"killed: over --timeout {timeout:.0f} s?" if proc.returncode == -signal.SIGKILL
                   else f"exit code {proc.returncode}")
            raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({why}):\n{_tail(err)}")
    busy = busy_share(start, end)
    out: dict[str, Any] = {"seconds": seconds, "busy_share": busy, "idle_share": None if busy is None else 1 - busy}
    if sampler is not None:
        out["own_cpu_s"] = own if reaper else None  # without a subreaper the workers' usage would be lost
        out["own_share"] = own / (seconds * cpus) if reaper else None
        out["busy_series"] = sampler.series
    return out


# -- the processes ------------------------------------------------------------------------------------


def falv_label_cmd(paths: list[Path], model_dir: Path, out: Path, precision: str) -> list[str]:
    return [sys.executable, "-m", "falv", "label", *map(str, paths), "-m", str(model_dir), "-o", str(out),
            "--clips", "1", "--crops", "1", "--precision", precision, "-q", "--no-resume"]


def run_falv(paths: list[Path], model_dir: Path, out: Path, precision: str, timeout: float) -> dict[str, Any]:
    result = run_process(falv_label_cmd(paths, model_dir, out, precision), timeout=timeout)
    records = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines() if line.strip()]
    failed = [r["path"] for r in records if r.get("error")]
    if len(records) != len(paths) or failed:
        raise RuntimeError(f"falv label wrote {len(records)} records for {len(paths)} videos; failed: {failed}")
    return result


def run_reference_process(plan: Path, out: Path, timeout: float) -> dict[str, Any]:
    result = run_process([sys.executable, str(SCRIPT), "_reference", str(plan), str(out)], timeout=timeout)
    inner = json.loads(out.read_text())
    result["inside"] = inner  # the loop over the videos, timed inside the process
    result["startup_s"] = result["seconds"] - inner["seconds"]  # python, imports, from_pretrained, exit
    return result


def reference_main(argv: list[str]) -> None:
    """The hidden ``_reference PLAN.json OUT.json`` sub-command: transformers' guide over every video."""
    plan_file, out_file = argv
    plan = json.loads(Path(plan_file).read_text())
    import av
    import numpy
    import torch

    lb.av, lb.np, lb.torch = av, numpy, torch  # what label_bench._load() sets, without importing falv
    r = lb.run_reference([Path(p) for p in plan["videos"]], plan["indices"], Path(plan["model"]))
    Path(out_file).write_text(json.dumps({
        **{k: r[k] for k in ("seconds", "decode_s", "preprocess_s", "model_s", "processor")},
        "videos": len(plan["videos"]), "top1": r["logits"].argmax(1).tolist()}))


def first_label_serve(model_dir: Path, video: Path, work: Path, timeout: float) -> dict[str, Any]:
    """``falv serve``: spawn -> /health answers -> the first job's record (the short video, one clip)."""
    port = sb._free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "falv", "serve", "--model", str(model_dir), "--port", str(port),
           "--data-dir", str(work / "serve-data"), "--allow-root", str(video.parent)]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"falv serve exited ({proc.returncode}) before answering:\n{_tail(err)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"falv serve did not answer /health within {timeout:.0f} s")
                try:
                    sb._get(url + "/health", 2)
                    break
                except OSError:
                    time.sleep(0.02)
            health_s = time.perf_counter() - t0
            job, submit_s = sb.run_job(url, video, {"clips": 1, "crops": 1})
            record_s = time.perf_counter() - t0
            if job["status"] != "done":
                raise RuntimeError(f"falv serve's job {job['status']}: {job.get('error') or job}")
        finally:
            stop_process(proc)
    return {"seconds": record_s, "health_s": health_s, "submit_s": submit_s}


def first_label_stream(model_dir: Path, video: Path, timeout: float) -> dict[str, Any]:
    """``falv stream`` on the short video file: spawn -> its first ``window`` line on stdout."""
    cmd = [sys.executable, "-m", "falv", "stream", str(video), "--model", str(model_dir), "--top-k", "1"]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        watchdog = threading.Timer(timeout, _kill_group, (proc.pid,))
        watchdog.daemon = True
        watchdog.start()
        first_line_s = window_s = None
        try:
            for line in proc.stdout:
                now = time.perf_counter() - t0
                first_line_s = now if first_line_s is None else first_line_s
                if json.loads(line).get("type") == "window":
                    window_s = now
                    break
        finally:
            watchdog.cancel()
            stop_process(proc)
            proc.stdout.close()
        if window_s is None:
            raise RuntimeError(f"falv stream gave no window line (exit code {proc.returncode}):\n{_tail(err)}")
    return {"seconds": window_s, "first_line_s": first_line_s}


# -- main ---------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_reference"]:
        reference_main(argv[1:])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder for the generated videos and model (reused across runs; default: a temp dir)")
    parser.add_argument("--preset", default=None, help="model size (default base; quick: tiny)")
    parser.add_argument("--precisions", default="auto,int8",
                        help="comma-separated falv precisions (default auto,int8; int8 is dropped where this CPU "
                             "or torch build has no int8 kernel)")
    parser.add_argument("--repeats", type=int, default=None, help="whole-run repeats (default 3; quick: 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds any one process may take")
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, 12 two-second videos (160x90, 320x180), 1 repeat (the test suite)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    preset_name = args.preset or ("tiny" if args.quick else "base")
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    lb._load()
    from falv.inference import int8_available

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions:
        parser.error("--precisions names none")
    if "int8" in precisions and not int8_available():
        say("int8 skipped: this torch build or CPU has no oneDNN int8 linear")
        precisions.remove("int8")

    own_tmp = tempfile.TemporaryDirectory(prefix="falv-whole-run-")
    work = Path(own_tmp.name)
    videos_dir = args.videos or work / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(args, preset_name, precisions, repeats, videos_dir, work)
    finally:
        own_tmp.cleanup()
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def measure(args: argparse.Namespace, preset_name: str, precisions: list[str], repeats: int, videos_dir: Path,
            work: Path) -> dict[str, Any]:
    t_begin = time.perf_counter()
    specs, short_spec = (QUICK_SET, QUICK_SHORT) if args.quick else (FULL_SET, FULL_SHORT)
    paths = [lb.write_video(videos_dir, s) for s in specs]
    short = lb.write_video(videos_dir, short_spec)
    model_dir = lb.build_model_dir(videos_dir, preset_name)
    num_frames = lb.preset(preset_name).num_frames
    plan = work / "reference-plan.json"
    plan.write_text(json.dumps({"model": str(model_dir), "videos": [str(p) for p in paths],
                                "indices": [lb.frame_indices(p, num_frames)[1] for p in paths]}))
    say(f"{len(paths)} videos, the short video and the model ready in {time.perf_counter() - t_begin:.1f} s "
        f"({videos_dir})")
    result: dict[str, Any] = {
        "machine": {**lb.machine(), "cpus_in_proc_stat": os.cpu_count()}, "preset": preset_name,
        "precisions": precisions, "repeats": repeats,
        "videos": [{"file": p.name, "width": s.width, "height": s.height, "seconds": s.seconds}
                   for p, s in zip(paths, specs)],
        "short_video": {"file": short.name, "width": short_spec.width, "height": short_spec.height,
                        "seconds": short_spec.seconds},
    }
    timeout = args.timeout

    say("warm-up (untimed): imports, and falv label on the short video")
    run_process([sys.executable, "-c", "import torch, transformers, av; import falv.labeling.engine; "
                 "from transformers import AutoImageProcessor, TimesformerForVideoClassification"],
                timeout=timeout, series=False)
    run_falv([short], model_dir, work / "warm", precisions[0], timeout)
    result["background_busy_before"] = background_busy(0.5 if args.quick else 2.0)
    result["load_avg_before"] = os.getloadavg()

    # -- start-up breakdown (and goal 5a) ----------------------------------------------------------
    startup: dict[str, list[dict[str, Any]]] = {"import_torch": [], "import_falv_cli": [], "falv_label_short": []}
    for i in range(repeats):
        say(f"start-up {i + 1}/{repeats}: import torch, import falv.cli.main, falv label on one short video")
        startup["import_torch"].append(run_process([sys.executable, "-c", "import torch"], timeout=timeout,
                                                   series=False))
        startup["import_falv_cli"].append(run_process([sys.executable, "-c", "import falv.cli.main"],
                                                      timeout=timeout, series=False))
        startup["falv_label_short"].append(run_falv([short], model_dir, work / f"short{i}", precisions[0], timeout))
    result["startup"] = {k: {"seconds": [r["seconds"] for r in v], "median_s": _median([r["seconds"] for r in v])}
                         for k, v in startup.items()}

    # -- whole runs (goal 2) ---------------------------------------------------------------------------
    runs = []
    for i in range(repeats):
        order = [("falv", p) for p in precisions] + [("reference", None)]
        if i % 2:
            order.reverse()
        rep: dict[str, Any] = {"repeat": i + 1, "order": [p or "reference" for _, p in order], "falv": {}}
        for kind, prec in order:
            say(f"repeat {i + 1}/{repeats}: " + (f"falv label --precision {prec}" if kind == "falv"
                                                else "transformers reference"))
            if kind == "falv":
                rep["falv"][prec] = run_falv(paths, model_dir, work / f"out{i}-{prec}", prec, timeout)
            else:
                rep["reference"] = run_reference_process(plan, work / f"reference{i}.json", timeout)
        rep["ratio"] = {p: rep["reference"]["seconds"] / r["seconds"] for p, r in rep["falv"].items()}
        runs.append(rep)
    result["runs"] = runs
    result["summary"] = {
        "falv": {p: {"median_s": _median([r["falv"][p]["seconds"] for r in runs]),
                     "median_ratio": _median([r["ratio"][p] for r in runs]),
                     "median_busy_share": _median([r["falv"][p]["busy_share"] for r in runs]),
                     "median_own_share": _median([r["falv"][p]["own_share"] for r in runs])} for p in precisions},
        "reference": {"median_s": _median([r["reference"]["seconds"] for r in runs]),
                      "median_busy_share": _median([r["reference"]["busy_share"] for r in runs]),
                      "median_own_share": _median([r["reference"]["own_share"] for r in runs])},
    }

    # -- first label out (goal 5) ------------------------------------------------------------------------
    serve, stream = [], []
    for i in range(repeats):
        say(f"first label {i + 1}/{repeats}: falv serve, falv stream")
        serve.append(first_label_serve(model_dir, short, work / f"serve{i}", timeout))
        stream.append(first_label_stream(model_dir, short, timeout))
    torch_s = result["startup"]["import_torch"]["median_s"]
    budget = GOAL_FIRST_EXTRA_S + torch_s
    first = {"label": {"seconds": result["startup"]["falv_label_short"]["seconds"]},
             "serve": {"seconds": [s["seconds"] for s in serve], "health_s": [s["health_s"] for s in serve]},
             "stream": {"seconds": [s["seconds"] for s in stream], "first_line_s": [s["first_line_s"] for s in stream]}}
    for v in first.values():
        v["median_s"] = _median(v["seconds"])
        v["within_budget"] = v["median_s"] <= budget
    result["first_label"] = {"budget_s": budget, "import_torch_s": torch_s, **first}
    result["background_busy_after"] = background_busy(0.5 if args.quick else 2.0)
    result["total_s"] = time.perf_counter() - t_begin
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['cpus_in_proc_stat']} in /proc/stat), torch {m['torch']}, "
          f"transformers {m['transformers']}, PyAV {m['pyav']}, native bf16: {m['bf16_native']}")
    sizes = sorted({(v["width"], v["height"]) for v in r["videos"]})
    print(f"preset {r['preset']}; {len(r['videos'])} videos ({', '.join(f'{w}x{h}' for w, h in sizes)}, "
          f"{sum(v['seconds'] for v in r['videos']):.0f} s in all); {r['repeats']} repeat(s); machine busy before "
          f"{_pct(r['background_busy_before'])}, after {_pct(r['background_busy_after'])} "
          f"(load average {r['load_avg_before'][0]:.1f})")
    print()
    print("| repeat | process | seconds | x reference | machine busy | machine idle | own CPU share |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for rep in r["runs"]:
        ref = rep["reference"]
        print(f"| {rep['repeat']} | transformers reference (start-up + exit {ref['startup_s']:.2f} s, decode "
              f"{ref['inside']['decode_s']:.2f} s, processor {ref['inside']['preprocess_s']:.2f} s, model "
              f"{ref['inside']['model_s']:.2f} s) | {ref['seconds']:.2f} | 1.00 | {_pct(ref['busy_share'])} "
              f"| {_pct(ref['idle_share'])} | {_pct(ref['own_share'])} |")
        for prec, f in rep["falv"].items():
            print(f"| {rep['repeat']} | falv label --precision {prec} | {f['seconds']:.2f} | {rep['ratio'][prec]:.2f} "
                  f"| {_pct(f['busy_share'])} | {_pct(f['idle_share'])} | {_pct(f['own_share'])} |")
    print()
    s = r["startup"]
    print(f"start-up (median of {r['repeats']}): python -c 'import torch' {s['import_torch']['median_s']:.2f} s, "
          f"python -c 'import falv.cli.main' {s['import_falv_cli']['median_s']:.2f} s, falv label on one short "
          f"video {s['falv_label_short']['median_s']:.2f} s")
    fl = r["first_label"]
    print(f"first label out, spawn -> first result (budget 1 s + import torch {fl['import_torch_s']:.2f} s = "
          f"{fl['budget_s']:.2f} s):")
    print("| path | seconds (each) | median | within budget |")
    print("|---|---|---:|---|")
    rows = [("falv label, one short video, whole process", fl["label"]),
            ("falv serve: spawn -> /health -> job -> record", fl["serve"]),
            ("falv stream on the short file: spawn -> first window line", fl["stream"])]
    for name, v in rows:
        print(f"| {name} | {', '.join(f'{x:.2f}' for x in v['seconds'])} | {v['median_s']:.2f} "
              f"| {'yes' if v['within_budget'] else 'no'} |")
    print(f"(falv serve answered /health after {', '.join(f'{x:.2f}' for x in fl['serve']['health_s'])} s)")
    print()
    if r["preset"] != "base":
        print(f"(preset {r['preset']}: the goals are defined for the base preset; a smoke run only)")
    print("| goal | precision | target | measured | met |")
    print("|---|---|---|---|---|")
    for prec, f in r["summary"]["falv"].items():
        ratios = ", ".join(f"{rep['ratio'][prec]:.2f}" for rep in r["runs"])
        idle = 1 - f["median_busy_share"] if f["median_busy_share"] is not None else None
        own_idle = 1 - f["median_own_share"] if f["median_own_share"] is not None else None
        print(f"| whole run vs the reference (median) | {prec} | >= {GOAL_RATIO}x | {f['median_ratio']:.2f}x "
              f"({ratios}) | {'yes' if f['median_ratio'] >= GOAL_RATIO else 'no'} |")
        print(f"| machine idle during falv's run (median) | {prec} | < {GOAL_IDLE:.0%} | {_pct(idle)} "
              f"| {'-' if idle is None else 'yes' if idle < GOAL_IDLE else 'no'} |")
        print(f"| cores not used by falv's processes (median) | {prec} | < {GOAL_IDLE:.0%} | {_pct(own_idle)} "
              f"| {'-' if own_idle is None else 'yes' if own_idle < GOAL_IDLE else 'no'} |")
    for name, v in rows:
        print(f"| first label out: {name} | - | <= {fl['budget_s']:.2f} s | {v['median_s']:.2f} s "
              f"| {'yes' if v['within_budget'] else 'no'} |")
    print(f"\ntotal benchmark time {r['total_s']:.0f} s")


if __name__ == "__main__":
    main()
