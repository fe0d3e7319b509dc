"""Key-moment frame selection against uniform sampling (issue 18): accuracy and decode cost.

    python benchmarks/frame_selection.py --out runs/fs             # ~15 min on 2 cores
    python benchmarks/frame_selection.py --quick --out /tmp/fs      # CI: tiny data, one epoch

**Sets** (generated into ``OUT/data/``, deterministic):

- ``longrange``: ``falv synth --config longrange -n 143`` (data seed 0): classes that differ only
  in the order of events several frames apart; test top-1 on its 84 test videos.
- ``untrimmed``: :mod:`benchmarks/localization.py`'s sets: the demo's trimmed clips plus 16
  annotated untrimmed training videos; mAP at tIoU 0.5 / 0.7 (ActivityNet protocol, ``falv
  evaluate --untrimmed``, default segmenting) on the tuning set (seed 0) and a held-out set (seed 3).

**Arms.** The tiny preset with falv's default recipe trained twice per set (training seed 0),
once with uniform frames and once with ``frame_selection="key-moments"``
(:mod:`falv.video.keymoments`); each model is evaluated with both selections (the 2 x 2 table:
what training with key-moments does, and what switching only at inference does).

**Decode cost.** The labeling engine's own stages on the evaluation videos, one process, one
decoder thread: ``plan_video`` + ``decode_chunk`` of every window of every video, uniform and
key-moments alternating, ``--rounds`` rounds, the median; seconds per window and the ratio.

``OUT/frame_selection.json`` has every figure and the machine; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localization as loc  # noqa: E402  (the sibling script: the untrimmed sets, machine())

SELECTIONS = ("uniform", "key-moments")


def make_longrange(root: Path, quick: bool) -> Path:
    from falv.data.synth import SynthConfig, generate, load_manifest

    config = SynthConfig(mode="longrange", videos_per_class=12 if quick else 143, seed=0)
    folder = root / "longrange"
    try:
        same = load_manifest(folder).config == config.to_dict()
    except Exception:  # noqa: BLE001 - absent or from another version
        same = False
    if not same:
        generate(folder, config, overwrite=True)
    return folder


def train_model(run: Path, selection: str, epochs: int | None, **data: Any) -> Path:
    from falv.training import TrainConfig, train

    if (run / "done").is_file():
        return run / "best"
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    result = train(TrainConfig(out=str(run), epochs=epochs, frame_selection=selection, **data), echo=None)
    (run / "done").write_text(json.dumps({"seconds": round(result.seconds, 1)}) + "\n")
    return run / "best"


def decode_cost(videos: list[str], model_dir: Path, rounds: int) -> dict[str, Any]:
    """Seconds per window of plan + decode for each selection (median over rounds, alternating)."""
    from falv.labeling.engine import Engine
    from falv.labeling.stages import LabelOptions, decode_chunk, decode_tasks, plan_video
    from falv.model.transformer import FALForVideoClassification

    spec = Engine(FALForVideoClassification.from_pretrained(model_dir), LabelOptions(), None, "m").spec
    times: dict[str, list[float]] = {s: [] for s in SELECTIONS}
    windows = {}
    for r in range(rounds):
        for selection in (SELECTIONS if r % 2 == 0 else SELECTIONS[::-1]):
            options = LabelOptions(frame_selection=selection)
            count, start = 0, time.perf_counter()
            for path in videos:
                plan = plan_video(path, spec, options)
                for task in decode_tasks(path, plan, spec, options):
                    decode_chunk(*task["args"])
                count += len(plan["windows"])
            times[selection].append(time.perf_counter() - start)
            windows[selection] = count
    per_window = {s: statistics.median(t) / windows[s] for s, t in times.items()}
    return {"windows": windows["uniform"], "seconds": times,
            "per_window_ms": {s: round(1e3 * v, 3) for s, v in per_window.items()},
            "ratio": round(per_window["key-moments"] / per_window["uniform"], 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's for long-range, 8 for untrimmed as "
                             "benchmarks/localization.py)")
    parser.add_argument("--rounds", type=int, default=3, help="decode-cost rounds (alternating)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny data, one epoch (checks the script runs)")
    args = parser.parse_args(argv)
    import torch

    from falv.evaluation import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    data = out / "data"
    longrange = make_longrange(data, args.quick)
    sets = loc.make_data(data, args.quick, (3,), 2 if args.quick else 16, 2 if args.quick else 8)
    epochs_lr = 1 if args.quick else args.epochs
    epochs_ut = 1 if args.quick else (args.epochs or 8)
    result: dict[str, Any] = {"machine": loc.machine(), "longrange": {}, "untrimmed": {}, "command": sys.argv}
    models = {}
    for selection in SELECTIONS:
        models[("longrange", selection)] = train_model(out / "runs" / f"longrange-{selection}", selection, epochs_lr,
                                                       data=str(longrange))
        models[("untrimmed", selection)] = train_model(
            out / "runs" / f"untrimmed-{selection}", selection, epochs_ut, data=str(sets["trimmed"]),
            untrimmed=str(sets["train-untrimmed"] / "untrimmed"))
    for trained in SELECTIONS:
        for used in SELECTIONS:
            key = f"trained {trained}, labelled {used}"
            r = evaluate(str(models[("longrange", trained)]), str(longrange), out / "eval" / f"lr-{trained}-{used}",
                         workers=2, frame_selection=used, resume=False)
            result["longrange"][key] = {"top1": r["top1"], "num_videos": r["num_videos"]}
            result["untrimmed"][key] = {}
            for name in ("tuning", "heldout-3"):
                r = evaluate(str(models[("untrimmed", trained)]), None, out / "eval" / f"ut-{name}-{trained}-{used}",
                             untrimmed=str(sets[name] / "untrimmed"), workers=2, frame_selection=used, resume=False)
                m = r["localization"]
                result["untrimmed"][key][name] = {"mAP@0.5": m["mAP@0.5"], "mAP@0.7": m["mAP@0.7"]}
    test_videos = [str(p) for p in sorted((longrange / "videos").rglob("*.mp4"))][: 12 if args.quick else 84]
    untrimmed_videos = [str(p) for p in sorted((sets["tuning"] / "untrimmed").rglob("*.mp4"))]
    result["decode_cost"] = {
        "longrange": decode_cost(test_videos, models[("longrange", "uniform")], args.rounds),
        "untrimmed": decode_cost(untrimmed_videos, models[("untrimmed", "uniform")], args.rounds),
    }
    (out / "frame_selection.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| trained / labelled | long-range test top-1 | untrimmed tuning mAP@0.5 / 0.7 | held-out (seed 3) |")
    print("|---|---:|---|---|")
    for key, lr in result["longrange"].items():
        ut = result["untrimmed"][key]
        print(f"| {key} | {100 * lr['top1']:.1f}% | {ut['tuning']['mAP@0.5']:.2f} / {ut['tuning']['mAP@0.7']:.2f} | "
              f"{ut['heldout-3']['mAP@0.5']:.2f} / {ut['heldout-3']['mAP@0.7']:.2f} |")
    for name, cost in result["decode_cost"].items():
        print(f"decode cost ({name}, {cost['windows']} windows): uniform {cost['per_window_ms']['uniform']} ms, "
              f"key-moments {cost['per_window_ms']['key-moments']} ms per window ({cost['ratio']}x)")
    return result


if __name__ == "__main__":  # the evaluation engine's decoding workers re-import the main module
    main()
