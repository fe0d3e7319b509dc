"""Accuracy against the number of test clips, with the model's own clip duration and without.

The experiment behind docs/results.md, "Clips of the model's duration": a model trained by
``falv train`` records how it saw time (``config.sampling``: TSN over whole training clips of
about ``clip_seconds``); ``falv evaluate --clips K`` then spreads K windows of that duration
over each video (a video no longer than one window is one window). Before, K clips cut every
video into K equal parts, so a model trained on whole 1.5-3 s clips saw 8 frames of a
third of a second at K = 4. This script evaluates the same model both ways, at every K,
on the same test split, and reports top-1 with its binomial standard error, and the
expected calibration error (15 bins) with and without the model's fitted temperature.

    falv synth s1 --classes move_right,move_left,rotate_clockwise,rotate_counterclockwise -n 150 --seed 201
    falv train --data s1 --out run
    python benchmarks/clips_curve.py --data s1 --model run/best --clips 1,2,4,8 --json curve.json

"Before" is the plan falv used when a config had no sampling (``sampling=None``: K equal
parts of the video), run by the current code on the same weights: it isolates the planning.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a falv synth folder (or any source falv evaluate reads)")
    parser.add_argument("--model", required=True, help="a model trained by falv train (its config has sampling)")
    parser.add_argument("--split", default=None, help="split of --data (default: test)")
    parser.add_argument("--clips", default="1,2,4,8")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from falv import FALForVideoClassification
    from falv.evaluation import evaluate

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model = FALForVideoClassification.from_pretrained(args.model).eval()
    if model.config.sampling is None:
        print("the model's config has no sampling: train it again with this falv (falv train records it)",
              file=sys.stderr)
        return 2
    legacy = copy.deepcopy(model)
    legacy.config.sampling = None  # falv's plan before sampling was recorded: K equal parts
    counts = [int(c) for c in args.clips.split(",")]
    rows = []
    started = time.monotonic()
    for name, net in (("equal parts (before)", legacy), ("model's clip duration (now)", model)):
        result = evaluate(net, args.data, clips=",".join(map(str, counts)), split=args.split, workers=args.workers,
                          precision="fp32")
        views = result.get("views") or [dict(result, clips=counts[0])]
        for view in views:
            n = view["num_videos"]
            top1 = view["top1"]
            cal = view.get("calibration") or {}
            rows.append({"plan": name, "clips": view["clips"], "top1": top1,
                         "stderr": math.sqrt(top1 * (1 - top1) / n) if n else None, "num_videos": n,
                         "ece": cal.get("ece"), "ece_uncalibrated": cal.get("ece_uncalibrated")})
    elapsed = time.monotonic() - started
    sampling = model.config.sampling
    print(f"model {args.model}: sampling {sampling.to_dict()}, clip {model.config.clip_seconds} s, "
          f"temperature {model.config.temperature}")
    print(f"data {args.data} (split {args.split or 'test'}); {_cpu()}; {elapsed:.0f} s")
    print("| plan | clips K | top-1 | ± s.e. | ECE raw | ECE calibrated |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['plan']} | {r['clips']} | {100 * r['top1']:.1f}% | {100 * r['stderr']:.1f} | "
              f"{_pct(r['ece_uncalibrated'])} | {_pct(r['ece'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "data": args.data, "split": args.split, "sampling": sampling.to_dict(),
            "clip_seconds": model.config.clip_seconds, "temperature": model.config.temperature,
            "cpu": _cpu(), "seconds": round(elapsed, 1), "rows": rows}, indent=1) + "\n")
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    raise SystemExit(main())
