"""Do colour jitter and small rotations help on falv's synth sets? (issue #22)

Trains the same small FAL with falv's recipe on a ``falv synth`` set, once per arm and seed,
and scores the best checkpoint on the test split (one clip, one crop, through the labeling
engine). Arms: ``none`` (the default: crops only), ``jitter`` (``--color-jitter``),
``rotate`` (``--rotate``), ``both``. Prints a table of mean test top-1 per arm (and each
seed's) and writes it as JSON.

    python benchmarks/augment_experiment.py --out runs/augment                 # appearance set, 3 seeds
    python benchmarks/augment_experiment.py --out runs/augment --mode temporal --seeds 2
    python benchmarks/augment_experiment.py --quick --out /tmp/aug               # CI smoke: tiny, 1 epoch

An augmentation is worth turning on by default only if it raises mean test top-1 by more
than the spread between seeds; the figures are in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ARMS: dict[str, dict[str, Any]] = {
    "none": {},
    "jitter": {"color_jitter": 0.3},
    "rotate": {"rotate": 10.0},
    "both": {"color_jitter": 0.3, "rotate": 10.0},
}
#: The data: 6 appearance (or 6 temporal) classes, 24 videos each, 48x48, 70/15/15 splits.
SYNTH = dict(videos_per_class=24, seed=21, width=48, height=48, duration=(1.0, 1.5), splits=(0.7, 0.15, 0.15))
#: The model: 4 frames of 32x32, patch 8, width 64, 2 layers (about a minute per run on 2 cores).
MODEL = dict(patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
TRAIN = dict(preset="tiny", num_frames=4, image_size=32, epochs=12, batch_size=8, lr=2e-3, precision="fp32")
QUICK = dict(videos_per_class=3, epochs=1)


def make_data(out: Path, mode: str, quick: bool) -> Path:
    from falv.data.synth import SynthConfig, generate

    data = out / f"data-{mode}{'-quick' if quick else ''}"
    if not (data / "test.csv").is_file():
        fields = dict(SYNTH, videos_per_class=QUICK["videos_per_class"] if quick else SYNTH["videos_per_class"])
        generate(data, SynthConfig(mode=mode, classes=6, **fields), overwrite=True)
    return data


def run_arm(data: Path, out: Path, arm: str, seed: int, quick: bool) -> dict[str, Any]:
    from falv.evaluation.runner import evaluate
    from falv.training import TrainConfig, train

    run = out / f"{arm}-seed{seed}"
    result_file = run / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    started = time.monotonic()
    fields = dict(TRAIN, epochs=QUICK["epochs"] if quick else TRAIN["epochs"], **ARMS[arm])
    trained = train(TrainConfig(data=str(data), out=str(run / "train"), model_overrides=dict(MODEL), seed=seed,
                                **fields), echo=None)
    metrics = evaluate(str(trained.best_dir), str(data), run / "eval", split="test", precision="fp32")
    result = {"arm": arm, "seed": seed, "val_top1": trained.best_value, "test_top1": metrics["top1"],
              "seconds": round(time.monotonic() - started, 1), **ARMS[arm]}
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", default="appearance", choices=["appearance", "temporal"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--quick", action="store_true", help="tiny data, one epoch (a smoke test)")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; valid: {', '.join(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_data(args.out, args.mode, args.quick)
    results = [run_arm(data, args.out / args.mode, arm, seed, args.quick)
               for seed in range(args.seeds) for arm in arms]
    table = {}
    print(f"{args.mode} set, {args.seeds} seeds: test top-1")
    for arm in arms:
        values = [r["test_top1"] for r in results if r["arm"] == arm]
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        table[arm] = {"mean": mean, "std": spread, "seeds": values, **ARMS[arm]}
        print(f"  {arm:7s} {mean:6.1%} +- {spread:5.1%}   " + "  ".join(f"{v:.1%}" for v in values))
    summary = {"mode": args.mode, "seeds": args.seeds, "synth": SYNTH, "model": MODEL, "train": TRAIN,
               "arms": table, "runs": results}
    (args.out / f"augment-{args.mode}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
