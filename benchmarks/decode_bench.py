"""Decode benchmark: falv's planned reads against "decode every frame and pick".

Generates a 360p and a 1080p H.264 MP4 (30 fps, keyframe interval up to 250 frames, as
x264 writes by default) and times, in the same run:

- ``falv``: :func:`falv.video.read_clips` (seeks over unneeded GOPs, stops after
  the last wanted frame, threaded decoding, scaling inside swscale);
- ``pyav-all``: the loop of transformers' video-classification guide: iterate
  ``container.decode(video=0)`` from the start, keep the wanted indices
  (``to_ndarray(format="rgb24")``) and stop after the last one;
- ``pyav-all+thr``: the same loop with ``thread_type = "AUTO"``, to separate the
  threading gain from the seeking gain.

Workloads: ``clip8`` = 8 frames spread over the whole video (TSN centres);
``dense8`` = 8 frames, stride 4, starting in the middle of the video;
``plan16x8`` = 16 windows x 8 frames (``plan_windows(num_clips=16)``), the
long-video labeling read. falv is timed at native size (identical output to
the baseline, checked) and at ``size=224`` (shorter side, as a model wants).

Usage: ``python benchmarks/decode_bench.py [--dir DIR] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from falv.video import plan_windows, probe, read_clips, uniform_timestamps
from falv.video.sampling import dense_clip_timestamps


def write_benchmark_video(path: Path, height: int, width: int, seconds: float, fps: int = 30, gop: int = 250) -> Path:
    """A moving, textured H.264 video (so P/B frames carry real work)."""
    if path.exists():
        return path
    out = av.open(str(path), "w")
    stream = out.add_stream(
        "libx264", rate=fps, options={"preset": "veryfast", "crf": "23", "x264-params": f"keyint={gop}:min-keyint=25"}
    )
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height, width * 2, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(int(seconds * fps)):
        shift = (i * 4) % width
        img = texture[:, shift : shift + width].copy()
        cx, cy = (i * 7) % width, height // 2 + int(height / 4 * math.sin(i / 15))
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < (height // 6) ** 2
        img[disk] = (255, (i * 3) % 256, 40)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def decode_all_and_pick(path: Path, indices: list[int], threads: bool = False) -> np.ndarray:
    """transformers' guide (read_video_pyav): decode from the start, keep the wanted indices."""
    wanted = set(indices)
    end = max(wanted)
    keep: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(video=0)):
            if i > end:
                break
            if i in wanted:
                keep[i] = frame.to_ndarray(format="rgb24")
    return np.stack([keep[i] for i in indices])


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best of ``repeats`` wall-clock runs (the minimum is the least disturbed by other load)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def workloads(duration: float, fps: float, num_frames: int) -> dict[str, list[list[float]]]:
    plan = plan_windows(duration, fps, 8, num_clips=16)
    return {
        "clip8": [uniform_timestamps(duration, 8)],
        "dense8": [dense_clip_timestamps(duration / 2 + 0.5 / fps, 8, 4, fps)],
        "plan16x8": [list(w.timestamps) for w in plan],
    }


def to_indices(clips: list[list[float]], fps: float, num_frames: int) -> list[int]:
    # CFR file starting at 0: the frame shown at t is floor(t * fps)
    return [min(num_frames - 1, int(math.floor(t * fps + 1e-6))) for clip in clips for t in clip]


def run(directory: Path, repeats: int, seconds_360: float, seconds_1080: float) -> list[dict[str, object]]:
    files = {
        "360p": write_benchmark_video(directory / f"bench_360p_{int(seconds_360)}s.mp4", 360, 640, seconds_360),
        "1080p": write_benchmark_video(directory / f"bench_1080p_{int(seconds_1080)}s.mp4", 1080, 1920, seconds_1080),
    }
    rows = []
    for label, path in files.items():
        info = probe(path)
        for name, clips in workloads(info.duration, info.fps, info.num_frames).items():
            idx = to_indices(clips, info.fps, info.num_frames)
            t_base, base = timed(lambda: decode_all_and_pick(path, idx), repeats)
            t_thr, _ = timed(lambda: decode_all_and_pick(path, idx, threads=True), repeats)
            t_falv, res = timed(lambda: read_clips(path, clips), repeats)
            t_224, res224 = timed(lambda: read_clips(path, clips, size=224), repeats)
            ours = np.concatenate(res.clips)  # type: ignore[attr-defined]
            same = bool(np.array_equal(ours, base))  # type: ignore[arg-type]
            rows.append(
                {
                    "video": f"{label} {info.duration:.0f}s",
                    "workload": name,
                    "frames": len(idx),
                    "pyav-all": t_base,
                    "pyav-all+thr": t_thr,
                    "falv": t_falv,
                    "falv@224": t_224,
                    "speedup": t_base / t_falv,
                    "decoded": f"{res.frames_decoded}/{info.num_frames}",  # type: ignore[attr-defined]
                    "seeks": res.seeks,  # type: ignore[attr-defined]
                    "identical": same,
                }
            )
            print(_row(rows[-1]), flush=True)
    return rows


_HEADER = (
    "| video | workload | frames | PyAV decode-all (s) | PyAV decode-all + threads (s) | falv (s) "
    "| falv size=224 (s) | speed-up vs PyAV | frames decoded by falv | seeks | same pixels |"
)


def _row(r: dict[str, object]) -> str:
    return (
        f"| {r['video']} | {r['workload']} | {r['frames']} | {r['pyav-all']:.3f} | {r['pyav-all+thr']:.3f} "
        f"| {r['falv']:.3f} | {r['falv@224']:.3f} | {r['speedup']:.1f}x | {r['decoded']} | {r['seeks']} "
        f"| {'yes' if r['identical'] else 'NO'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="where to write/reuse the test videos (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--seconds-360p", type=float, default=60.0)
    parser.add_argument("--seconds-1080p", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"PyAV {av.__version__}, FFmpeg {av.library_versions['libavcodec']}")
    print(_HEADER)
    print("|---" * (_HEADER.count("|") - 1) + "|")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, args.repeats, args.seconds_360p, args.seconds_1080p)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.repeats, args.seconds_360p, args.seconds_1080p)


if __name__ == "__main__":
    main()
