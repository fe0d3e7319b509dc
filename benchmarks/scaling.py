"""Scaling out (docs/scaling.md): per-stage costs measured here, the Ray engine against the local
engine, and a throughput model + simulation for clusters of GPU nodes.

Subcommands (each writes JSON; ``all`` runs them in one process, one after the other):

``decode``   core-seconds of decoding per minute of video, as falv decodes for labeling (every window
             of a sliding-window plan covering the video, one decoder thread, scaled to the model's
             224 short side), at 360p / 720p / 1080p in H.264 and VP9 (videos generated with PyAV).
             CPU time (``time.process_time``) of the decoding process: what a core pays.
``model``    model milliseconds per clip per preset and precision on this CPU (batch of 4, best of
             ``--repeats`` after a warm-up).
``engines``  ``falv.label`` on the same generated videos: local engine, Ray engine on a local Ray
             (same CPUs), and Ray on a 1-node and a 2-node ``ray.cluster_utils.Cluster`` (1 CPU each);
             wall times and ratios measured in the same run.
``simulate`` the throughput model of docs/scaling.md for N nodes of C cores and G GPUs, and the
             labeling of one million 5-minute videos on 1..64 GPU nodes: wall time, cost, bottleneck,
             with a plot. Inputs: the ``decode`` figures (from ``--measured``, else the defaults below,
             which are this machine's of 2026-12-02) and the stated GPU assumptions.

Usage: ``python benchmarks/scaling.py all --json scaling.json --plot docs/figures/scaling_sim.png``;
``--quick`` shrinks everything to seconds (the smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

RESOLUTIONS = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
CODECS = {"h264": ("libx264", "mp4", {"preset": "veryfast", "crf": "23"}),
          "vp9": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"})}


# -- stage costs ------------------------------------------------------------------------------------


def write_video(path: Path, codec: str, height: int, width: int, seconds: float, fps: int = 30) -> Path:
    """A moving, textured video (P frames carry real work), keyframe every 250 frames as x264's default."""
    import av

    name, _, options = CODECS[codec]
    out = av.open(str(path), "w")
    stream = out.add_stream(name, rate=fps, options={**options, "g": "250"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height, width * 2, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(int(seconds * fps)):
        shift = (i * 4) % width
        img = texture[:, shift:shift + width].copy()
        cx, cy = (i * 7) % width, height // 2 + int(height / 4 * math.sin(i / 15))
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 6) ** 2] = (255, (i * 3) % 256, 40)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def decode_cost(path: Path, num_frames: int = 8, short_side: int = 224) -> dict[str, float]:
    """CPU seconds to decode ``path`` as ``falv label --window W`` does (windows tiling the video,
    ``num_frames`` frames each at the video's frame rate, one decoder thread, scaled to 224)."""
    from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, plan_video

    spec = ModelSpec(num_frames=num_frames, short_side=short_side, crop=(224, 224), mean=(0.45,) * 3,
                     std=(0.225,) * 3, rescale=1 / 255)
    info = plan_video(str(path), spec, LabelOptions())["info"]
    window = num_frames / float(info["fps"])  # consecutive frames: every frame of the video is decoded
    plan = plan_video(str(path), spec, LabelOptions(window=window))
    stamps = [list(ts) for *_, ts in plan["windows"]]
    cpu, wall = time.process_time(), time.perf_counter()
    out = decode_chunk(str(path), stamps, short_side, 600.0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    minutes = float(info["duration"]) / 60
    return {"duration_s": float(info["duration"]), "windows": len(stamps), "frames": int(out["frames_decoded"]),
            "cpu_s": cpu, "wall_s": wall, "core_s_per_video_min": cpu / minutes}


def measure_decode(seconds: float, resolutions: list[str], folder: Path) -> list[dict[str, Any]]:
    rows = []
    for codec in CODECS:
        for res in resolutions:
            h, w = RESOLUTIONS[res]
            path = folder / f"{res}_{codec}.{CODECS[codec][1]}"
            if not path.exists():
                write_video(path, codec, h, w, seconds)
            rows.append({"codec": codec, "resolution": res, **decode_cost(path)})
            print(f"decode {codec:5s} {res:6s} {rows[-1]['core_s_per_video_min']:7.2f} core-s per video minute",
                  flush=True)
    return rows


def measure_model(presets: list[str], precisions: list[str], repeats: int, batch: int = 4) -> list[dict[str, Any]]:
    import torch

    from falv import FALForVideoClassification, preset
    from falv.errors import ConfigError
    from falv.inference import prepare_for_inference

    rows = []
    for name in presets:
        config = preset(name, num_labels=10) if "num_labels" in preset.__code__.co_varnames else preset(name)
        for precision in precisions:
            torch.manual_seed(0)
            try:
                model = prepare_for_inference(FALForVideoClassification(config).eval(), "cpu", precision)
            except ConfigError as exc:  # e.g. int8 without oneDNN's quantized kernels on this CPU
                rows.append({"preset": name, "precision": precision, "unavailable": str(exc)})
                print(f"model {name:5s} {precision:5s} unavailable: {exc}", flush=True)
                continue
            x = torch.randn(batch, config.num_frames, 3, config.image_size, config.image_size)
            with torch.inference_mode():
                model.predict(x)  # warm-up
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model.predict(x)
                    times.append((time.perf_counter() - start) / batch * 1000)
            rows.append({"preset": name, "precision": precision, "ms_per_clip": min(times),
                         "ms_per_clip_median": float(np.median(times)), "threads": torch.get_num_threads()})
            print(f"model {name:5s} {precision:5s} {min(times):8.1f} ms/clip", flush=True)
    return rows


# -- engines ----------------------------------------------------------------------------------------


def _engine_inputs(folder: Path, count: int, seconds: float) -> tuple[list[str], Path]:
    import torch

    from falv import FALForVideoClassification, preset

    paths = []
    for i in range(count):
        path = folder / f"clip{seconds:g}s_{i:02d}.mp4"
        if not path.exists():
            write_video(path, "h264", 360, 640, seconds)
        paths.append(str(path))
    model_dir = folder / "model"
    if not model_dir.exists():
        torch.manual_seed(0)
        FALForVideoClassification(preset("tiny", id2label={0: "a", 1: "b", 2: "c"})).save_pretrained(model_dir)
    return paths, model_dir


def _cli_label(paths: list[str], model_dir: Path, out: Path, flags: list[str]) -> dict[str, Any]:
    """One ``falv label`` command in its own process, as a user runs it (its imports, model
    loading and, for Ray, its workers and actors are part of the time): wall time, and the
    records' top-1."""
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                        os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "falv", "label", *paths, "--model", str(model_dir), "--out", str(out),
           "--precision", "fp32", "--window", "2", "--quiet", *flags]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(flags)}: exit {done.returncode}: {done.stderr[-1500:]}")
    records = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "top1": {r["path"]: r["labels"][0]["label"] for r in records if not r.get("error")},
            "records": len(records)}


def measure_engines(count: int, seconds: float, folder: Path, repeats: int = 3) -> dict[str, Any]:
    """Local vs Ray on the same inputs, in one run, each a ``falv label`` command in its own
    process (what a user pays, start-up included), alternating, ``repeats`` rounds; medians.
    Ray runs on a one-node ``ray.cluster_utils.Cluster`` of this machine's CPUs started before
    the timing (as a cluster of ``ray start`` is): with its default sizing, and sized like the
    local engine (two decodes beside a model actor). Then Ray on 1 vs 2 local nodes of 1 CPU
    each. Every run labels the same videos."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.cluster_utils import Cluster

    paths, model_dir = _engine_inputs(folder, count, seconds)
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = {"videos": count, "seconds_each": seconds, "window_s": 2.0, "preset": "tiny",
                              "repeats": repeats, "runs": []}
    reference: dict[str, str] | None = None

    def run(name: str, flags: list[str]) -> float:
        nonlocal reference
        out = _cli_label(paths, model_dir, folder / f"out-{name}", flags)
        reference = reference or out["top1"]
        result["same_top1"] = result.get("same_top1", True) and out["top1"] == reference and out["records"] == count
        result["runs"].append({"engine": name, "wall_s": out["wall_s"]})
        print(f"{name:12s} wall {out['wall_s']:7.2f} s", flush=True)
        return out["wall_s"]

    def cluster(nodes: int, node_cpus: int) -> Any:
        node = {"num_cpus": node_cpus, "object_store_memory": 200 * 1024 * 1024, "include_dashboard": False}
        c = Cluster(initialize_head=True, head_node_args=node)
        for _ in range(nodes - 1):
            c.add_node(**node)
        c.wait_for_nodes(timeout=120)
        return c

    c = cluster(1, cpus)
    try:
        ray_flags = ["--engine", "ray", "--address", c.address]
        arms = {"local": ["--workers", str(cpus)],
                "ray-sized": [*ray_flags, "--actors", "1", "--actor-cpus", str(cpus / 2), "--task-cpus", "0.5"],
                "ray-default": ray_flags}
        for _ in range(repeats):
            for name, flags in arms.items():
                run(name, flags)
    finally:
        c.shutdown()
    median = {name: float(np.median([x["wall_s"] for x in result["runs"] if x["engine"] == name])) for name in arms}
    result["median_wall_s"] = median
    result["ray_over_local"] = median["ray-sized"] / median["local"]
    result["ray_default_over_local"] = median["ray-default"] / median["local"]
    for nodes in (1, 2):
        c = cluster(nodes, 1)
        try:
            flags = ["--engine", "ray", "--address", c.address, "--actors", str(nodes), "--actor-cpus", "0.5",
                     "--task-cpus", "0.5"]
            wall = float(np.median([run(f"nodes{nodes}", flags) for _ in range(repeats)]))
        finally:
            c.shutdown()
        result[f"nodes{nodes}_s"] = wall
        result[f"nodes{nodes}_videos_per_s"] = count / wall
    result["two_over_one_node_throughput"] = result["nodes2_videos_per_s"] / result["nodes1_videos_per_s"]
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1), flush=True)
    return result


# -- the throughput model and the simulation --------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    videos: int = 1_000_000
    minutes: float = 5.0
    decode_core_s_per_min: float = 9.0   # measured here (720p H.264, every frame); see docs/scaling.md
    clip_seconds: float = 8 / 30          # 8 consecutive frames at 30 fps: windows tile the video
    clips_per_window: int = 1             # crops


@dataclass(frozen=True)
class NodeType:
    gpus: int = 8
    cores: int = 192
    gpu_ms_per_clip: float = 1.0          # assumption: base 8x224 (391.7 GFLOP) on an H100 in bf16 at ~40% of peak
    core_efficiency: float = 0.85         # decode cores' throughput left after the driver/ray/OS share
    dollars_per_hour: float = 8 * 2.50    # assumption: $2.50 per H100-hour, the node priced by its GPUs
    startup_s: float = 180.0              # cluster up, model on every GPU (assumption)


def clips_per_video(work: Workload) -> float:
    return math.ceil(work.minutes * 60 / work.clip_seconds) * work.clips_per_window


def node_rates(work: Workload, node: NodeType) -> dict[str, float]:
    """Videos per second one node can decode and score; the smaller binds."""
    decode = node.cores * node.core_efficiency / (work.decode_core_s_per_min * work.minutes)
    model = node.gpus / (clips_per_video(work) * node.gpu_ms_per_clip / 1000)
    return {"decode": decode, "model": model}


def balanced_cores_per_gpu(work: Workload, node: NodeType) -> float:
    """Cores per GPU at which decoding keeps exactly up with the model."""
    per_video_gpu_s = clips_per_video(work) * node.gpu_ms_per_clip / 1000
    per_video_core_s = work.decode_core_s_per_min * work.minutes / node.core_efficiency
    return per_video_core_s / per_video_gpu_s


def simulate(work: Workload, node: NodeType, nodes: int, driver_ms_per_video: float = 2.0) -> dict[str, Any]:
    """Wall time of a run on ``nodes`` nodes: startup, then videos at the binding rate (node decode,
    node model, or the single driver that aggregates and appends every record), plus the tail of
    the last wave (one video's decode on one core, the longest single task)."""
    rates = node_rates(work, node)
    stage = {"decode (CPU)": rates["decode"] * nodes, "model (GPU)": rates["model"] * nodes,
             "driver": 1000.0 / driver_ms_per_video}
    bottleneck = min(stage, key=stage.get)
    rate = stage[bottleneck]
    tail = work.decode_core_s_per_min * work.minutes  # the last video decoded on one core
    wall = node.startup_s + work.videos / rate + tail
    return {"nodes": nodes, "videos_per_s": rate, "wall_h": wall / 3600, "cost_usd": wall / 3600 * nodes *
            node.dollars_per_hour, "bottleneck": bottleneck,
            "gpu_busy": min(1.0, rate / stage["model (GPU)"]), "cpu_busy": min(1.0, rate / stage["decode (CPU)"])}


def run_simulation(work: Workload, node: NodeType, plot: Path | None) -> dict[str, Any]:
    counts = [1, 2, 4, 8, 16, 32, 64]
    rows = [simulate(work, node, n) for n in counts]
    # the same cluster with the balancing number of cores per GPU, for comparison
    balanced = NodeType(**{**asdict(node), "cores": int(math.ceil(balanced_cores_per_gpu(work, node) * node.gpus))})
    rows_bal = [simulate(work, balanced, n) for n in counts]
    for r in rows:
        print(f"{r['nodes']:3d} nodes: {r['wall_h']:8.1f} h  ${r['cost_usd']:10,.0f}  bound by {r['bottleneck']}",
              flush=True)
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].loglog(counts, [r["wall_h"] for r in rows], "o-", label=f"{node.cores} cores + {node.gpus} GPUs")
        ax[0].loglog(counts, [r["wall_h"] for r in rows_bal], "s--", label=f"{balanced.cores} cores + {node.gpus} GPUs")
        ax[0].set_xlabel("GPU nodes")
        ax[0].set_ylabel("wall time (h)")
        ax[0].set_title(f"{work.videos:,} videos x {work.minutes:g} min")
        ax[0].grid(True, which="both", alpha=0.3)
        ax[0].legend()
        ax[1].semilogx(counts, [r["cost_usd"] / 1000 for r in rows], "o-", label=f"{node.cores} cores")
        ax[1].semilogx(counts, [r["cost_usd"] / 1000 for r in rows_bal], "s--", label=f"{balanced.cores} cores")
        ax[1].set_xlabel("GPU nodes")
        ax[1].set_ylabel("cost (k$)")
        ax[1].grid(True, which="both", alpha=0.3)
        for r in rows:
            ax[1].annotate(r["bottleneck"].split()[0], (r["nodes"], r["cost_usd"] / 1000), fontsize=7)
        ax[1].legend()
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)
        plt.close(fig)
    return {"workload": asdict(work), "node": asdict(node), "clips_per_video": clips_per_video(work),
            "node_rates": node_rates(work, node), "balanced_cores_per_gpu": balanced_cores_per_gpu(work, node),
            "rows": rows, "balanced_node": asdict(balanced), "rows_balanced": rows_bal}


# -- main -------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": load, "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", help="decode, model, engines, simulate or all; several: comma-separated")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--plot", type=Path, help="The simulation's plot (PNG).")
    parser.add_argument("--dir", type=Path, help="Where to keep the generated videos (default: a temp folder).")
    parser.add_argument("--measured", type=Path, help="JSON of an earlier run whose decode figures feed the simulation.")
    parser.add_argument("--quick", action="store_true", help="Seconds, not minutes: tiny inputs (the smoke test).")
    parser.add_argument("--repeats", type=int, default=3, help="model: timings per preset; engines: rounds of runs")
    parser.add_argument("--videos", type=int, default=24, help="engines: how many generated 360p videos")
    parser.add_argument("--seconds", type=float, default=30.0, help="engines: their length")
    args = parser.parse_args(argv)
    what = set(args.what.split(","))
    if "all" in what:
        what = {"decode", "model", "engines", "simulate"}
    if not what <= {"decode", "model", "engines", "simulate"}:
        parser.error(f"unknown part in {args.what!r}")

    result: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    folder = args.dir or Path(tempfile.mkdtemp(prefix="falv-scaling-"))
    folder.mkdir(parents=True, exist_ok=True)
    if "decode" in what:
        result["decode"] = measure_decode(1.0 if args.quick else 10.0, ["360p"] if args.quick else list(RESOLUTIONS),
                                          folder)
    if "model" in what:
        presets = ["tiny"] if args.quick else ["tiny", "small", "base"]
        precisions = ["fp32"] if args.quick else ["fp32", "int8"]
        result["model"] = measure_model(presets, precisions, 1 if args.quick else args.repeats)
    if "engines" in what:
        result["engines"] = measure_engines(2 if args.quick else args.videos, 2.0 if args.quick else args.seconds,
                                            folder, repeats=1 if args.quick else args.repeats)
    if "simulate" in what:
        decode = result.get("decode")
        if decode is None and args.measured is not None:
            decode = json.loads(args.measured.read_text()).get("decode")
        work = Workload()
        if decode:
            per = {(r["codec"], r["resolution"]): r["core_s_per_video_min"] for r in decode}
            key = ("h264", "720p") if ("h264", "720p") in per else next(iter(per))
            work = Workload(decode_core_s_per_min=per[key])
            result["simulation_decode_input"] = {"codec": key[0], "resolution": key[1]}
        result["simulation"] = run_simulation(work, NodeType(), args.plot)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
