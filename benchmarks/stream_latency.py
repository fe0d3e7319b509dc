"""Latency of ``falv stream``: from a frame written into a live feed to its window's JSON line.

One run, on this machine:

- **writer** (a thread of this script): :func:`falv.video.testing.stream_test_video`
  encodes frames in real time (``--fps``, default 25) as H.264 (x264 ``ultrafast``,
  ``zerolatency``: no B-frames, no lookahead) into MPEG-TS, flushed after every
  frame (``flush_packets=1``), into a named pipe, and records the wall time at which
  each frame was handed to the pipe. The picture is the model's size (``--height``,
  default the preset's short side; 16:9).
- **reader**: ``falv stream FIFO --model M --window W --stride S`` as a user runs it
  (a subprocess), whose stdout lines are time-stamped by this script as they arrive.
- **latency** of a window = arrival of its line - write time of the window's last
  frame (the frame shown at its last timestamp, ``floor(t * fps)``). The last window
  (filled from the end of the feed when the feed stops) is left out.
- **model time per window in the stream**: ``falv stream --timing`` adds ``model_s``
  (``clip_tensor`` + ``predict`` of that window) to each line; ``latency - model_s`` is
  what the stream itself adds (pipe, demuxer, decoder, waiting, JSON).
- **model time per window alone**: the same model prepared as the engine prepares it
  (``Engine(...).runner``, same precision), ``clip_tensor`` + ``predict`` on one
  window of the same size, median of ``--model-repeats`` calls, measured after the
  stream in the same run.

Goals (issue 12): median latency <= 1 s with the tiny preset; <= model time per
window + 100 ms in general.

Usage::

    python benchmarks/stream_latency.py --preset tiny --seconds 30
    python benchmarks/stream_latency.py --preset base --seconds 30 --window 2 --stride 2
    python benchmarks/stream_latency.py --quick          # a few seconds, for the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def make_model(preset_name: str, folder: Path) -> Path:
    import torch

    from falv import FALForVideoClassification, preset

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        FALForVideoClassification(preset(preset_name, id2label={0: "a", 1: "b"})).save_pretrained(folder)
    return folder


def model_time_per_window(model_dir: Path, precision: str, repeats: int) -> dict[str, float]:
    """clip_tensor + predict on one window, as the stream runs it (seconds, median)."""
    import numpy as np
    import torch

    from falv.labeling.engine import Engine, clip_tensor
    from falv.labeling.stages import LabelOptions
    from falv.model.transformer import FALForVideoClassification
    from falv.processing import FALImageProcessor

    engine = Engine(FALForVideoClassification.from_pretrained(model_dir), LabelOptions(precision=precision), None,
                    str(model_dir), processor=FALImageProcessor.from_pretrained(model_dir))
    spec = engine.spec
    h = spec.short_side
    frames = np.random.default_rng(0).integers(0, 256, (spec.num_frames, h, h * 16 // 9, 3), dtype=np.uint8)
    runner = engine.runner
    times, prep = [], []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            pixels = clip_tensor(frames, spec, 1)
            t1 = time.perf_counter()
            runner.predict(pixels)
            t2 = time.perf_counter()
            if i:  # the first call warms up
                times.append(t2 - t0)
                prep.append(t1 - t0)
    return {"model_s": statistics.median(times), "clip_tensor_s": statistics.median(prep),
            "short_side": h, "num_frames": spec.num_frames}


def run(args: argparse.Namespace) -> dict:
    from falv.video.sampling import window_timestamps
    from falv.video.testing import stream_test_video

    work = Path(args.work or tempfile.mkdtemp(prefix="falv-stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else make_model(args.preset, work / f"model-{args.preset}")
    with open(model_dir / "preprocessor_config.json") as fh:
        short = int(json.load(fh)["size"]["shortest_edge"])
    height = args.height or short
    size = (height, (height * 16 // 9) // 2 * 2)
    frames = int(round(args.seconds * args.fps))
    fifo = work / "live.ts"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)

    written: list[float] = []
    writer = threading.Thread(target=stream_test_video, args=(fifo,), daemon=True,
                              kwargs=dict(frames=frames, fps=args.fps, size=size, written=written))
    cmd = [sys.executable, "-m", "falv", "stream", str(fifo), "--model", str(model_dir), "--window",
           str(args.window), "--stride", str(args.stride or args.window), "--precision", args.precision,
           "--top-k", "1", "--timing"]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    writer.start()
    events = []
    for line in proc.stdout:
        events.append((time.time(), json.loads(line)))
    err = proc.stderr.read()
    proc.wait()
    writer.join(30)
    if proc.returncode != 0:
        raise SystemExit(f"falv stream failed ({proc.returncode}): {err.strip()}")

    windows = [(arrival, e) for arrival, e in events if e["type"] == "window"]
    stride = args.stride or args.window
    rows = []
    for arrival, e in windows:
        on_grid = abs(e["start"] / stride - round(e["start"] / stride)) < 1e-6
        if not on_grid:  # the last window, filled from the end when the feed stopped
            continue
        last = int(window_timestamps(e["start"], e["end"], args.fps, 8)[-1] * args.fps)
        if last < len(written):
            rows.append({"index": e["index"], "start": e["start"], "end": e["end"], "last_frame": last,
                         "latency_s": arrival - written[last], "model_s": e["model_s"],
                         "overhead_s": arrival - written[last] - e["model_s"]})
    latencies = [r["latency_s"] for r in rows]
    in_stream = [r["model_s"] for r in rows]
    overheads = [r["overhead_s"] for r in rows]
    first_line = windows[0][0] - written[0] if windows and written else None
    model = model_time_per_window(model_dir, args.precision, args.model_repeats)
    result = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "load_avg": os.getloadavg(),
        "preset": args.preset if not args.model else str(args.model), "precision": args.precision,
        "fps": args.fps, "frame_size": list(size), "seconds": args.seconds, "window": args.window,
        "stride": stride, "frames_written": len(written), "windows": len(rows),
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_p90_s": _percentile(latencies, 0.9) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "first_window_after_first_frame_s": first_line,
        "command_start_to_first_window_s": windows[0][0] - started if windows else None,
        "model_in_stream_median_s": statistics.median(in_stream) if in_stream else None,
        "overhead_median_s": statistics.median(overheads) if overheads else None,
        "overhead_p90_s": _percentile(overheads, 0.9) if overheads else None,
        **model,
        "rows": rows,
        "end": events[-1][1] if events else None,
    }
    if latencies:
        result["goal_tiny_1s"] = result["latency_median_s"] <= 1.0
        result["goal_model_plus_100ms"] = result["latency_median_s"] <= result["model_in_stream_median_s"] + 0.1
    return result


def report(result: dict) -> str:
    ms = lambda s: "-" if s is None else f"{1000 * s:.0f} ms"  # noqa: E731
    lines = [
        f"CPU: {result['cpu']} ({result['cores']} cores), load average {result['load_avg'][0]:.1f}",
        f"preset {result['preset']}, precision {result['precision']}, {result['fps']} fps "
        f"{result['frame_size'][1]}x{result['frame_size'][0]}, window {result['window']} s / stride "
        f"{result['stride']} s, {result['seconds']} s fed, {result['windows']} windows measured",
        "",
        "| latency median | p90 | max | model per window in the stream (median) | latency - model: median | "
        "p90 | model per window alone | median <= model + 100 ms | median <= 1 s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {ms(result['latency_median_s'])} | {ms(result['latency_p90_s'])} | {ms(result['latency_max_s'])} "
        f"| {ms(result['model_in_stream_median_s'])} | {ms(result['overhead_median_s'])} "
        f"| {ms(result['overhead_p90_s'])} | {ms(result['model_s'])} "
        f"| {result.get('goal_model_plus_100ms')} | {result.get('goal_tiny_1s')} |",
        "",
        f"first window line {ms(result['first_window_after_first_frame_s'])} after the first frame was written; "
        f"{ms(result['command_start_to_first_window_s'])} after the command started",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model", default=None, help="a model directory instead of a random-weight preset")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the live feed")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--height", type=int, default=None, help="frame height (default: the model's short side)")
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--stride", type=float, default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model-repeats", type=int, default=10)
    parser.add_argument("--work", default=None, help="folder for the model and the pipe (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 3 s of feed (for the test suite)")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.seconds, args.model_repeats, args.model = "tiny", 3.0, 3, None
    result = run(args)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
