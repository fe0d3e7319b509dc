"""``make demo``: the main job end to end on built-in (generated) data.

1. ``falv synth``: a small appearance set of real H.264 videos, plus untrimmed
   videos with several actions and their ActivityNet ground truth (two to evaluate,
   sixteen others, another seed, to train on).
2. ``falv train``: the ``tiny`` FAL preset from scratch with the default recipe, on the
   trimmed clips and the windows of the annotated untrimmed videos (``--untrimmed``:
   the gaps train a background class, so segments skip them).
3. ``falv evaluate``: held-out metrics, confusion matrix, temporal localisation mAP.
4. ``falv label``: the held-out folder and the untrimmed videos into every format.
5. ``falv report``: one HTML file with thumbnails, segments, metrics and curves.

Usage: ``python -m falv.demo [OUT_DIR] [--epochs N]``. Every step is also a
``falv`` command; the demo prints the equivalent commands as it goes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

FORMATS = ["jsonl", "csv", "label-studio", "fiftyone", "activitynet", "webvtt"]
# Four appearance classes that differ in colour, texture and shape (the synthetic set's
# minimal pairs, which differ in one attribute only, need longer training than a demo has).
CLASSES = ("red-solid-circle", "blue-checkered-triangle", "green-striped-cross", "yellow-checkered-square")
# Untrimmed training videos (another seed than the evaluated ones): benchmarks/localization.py
# measures this set-up (docs/results.md).
UNTRIMMED_TRAIN = 16
UNTRIMMED_TRAIN_SEED = 100


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="demo-output")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--videos-per-class", type=int, default=40)
    parser.add_argument("--untrimmed-train", type=int, default=UNTRIMMED_TRAIN,
                        help="annotated untrimmed videos to train on (0: trimmed clips only, no background class)")
    args = parser.parse_args(argv)

    from falv.data.synth import SynthConfig, generate
    from falv.evaluation import evaluate
    from falv.labeling.engine import label
    from falv.labeling.export import export_formats
    from falv.report.html import write_report
    from falv.training import TrainConfig, train

    started = time.monotonic()
    out = Path(args.out)
    data, run, eval_dir, labels_dir = out / "data", out / "run", out / "evaluation", out / "labels"
    for stale in (run, eval_dir, labels_dir):  # outputs of an earlier demo came from another model
        shutil.rmtree(stale, ignore_errors=True)

    _say(f"1/5 synthesising videos into {data}")
    config = SynthConfig(mode="appearance", classes=CLASSES, videos_per_class=args.videos_per_class, seed=0,
                         untrimmed=2, untrimmed_duration=(16.0, 24.0))
    manifest = generate(data, config, overwrite=True)
    _say(f"    {len(manifest.videos)} videos of {len(manifest.classes)} classes: {', '.join(manifest.classes)}")
    _say(f"    (falv synth {data} --config appearance --classes {','.join(CLASSES)} -n {args.videos_per_class} "
         "--untrimmed 2 --untrimmed-duration 16,24)")

    long_gt = None
    if args.untrimmed_train:
        long_data = out / "data-untrimmed"
        generate(long_data, SynthConfig(mode="appearance", classes=CLASSES, videos_per_class=0,
                                        seed=UNTRIMMED_TRAIN_SEED, untrimmed=args.untrimmed_train,
                                        untrimmed_duration=(16.0, 24.0)), overwrite=True)
        long_gt = long_data / "untrimmed" / "ground_truth.json"
        _say(f"    {args.untrimmed_train} untrimmed videos to train on (falv synth {long_data} --config appearance "
             f"--classes {','.join(CLASSES)} -n 0 --seed {UNTRIMMED_TRAIN_SEED} --untrimmed {args.untrimmed_train} "
             "--untrimmed-duration 16,24)")

    extra = f" --untrimmed {long_gt}" if long_gt else ""
    _say(f"2/5 training the tiny FAL preset ({args.epochs} epochs; falv train --data {data} --out {run} "
         f"--epochs {args.epochs}{extra})")
    result = train(TrainConfig(data=str(data), out=str(run), epochs=args.epochs,
                               untrimmed=str(long_gt) if long_gt else None),
                   echo=lambda m: _say("    " + m))

    _say(f"3/5 evaluating on the held-out test split (falv evaluate --model {result.best_dir} --data {data} "
         f"--untrimmed {data / 'untrimmed'} --out {eval_dir})")
    metrics = evaluate(str(result.best_dir), str(data), eval_dir, split="test", untrimmed=str(data / "untrimmed"))
    loc = metrics.get("localization") or {}
    _say(f"    top-1 {metrics['top1']:.1%}, F1 (macro) {metrics['f1_macro']:.3f} on {metrics['num_videos']} videos; "
         f"localisation mAP@0.5 {loc.get('mAP@0.5', float('nan')):.3f}, mAP@0.7 {loc.get('mAP@0.7', float('nan')):.3f}")

    _say(f"4/5 labelling the held-out and untrimmed videos into {labels_dir}")
    test_paths = [line.split(",")[0] for line in (data / "test.csv").read_text().splitlines() if line]
    held_out = [str(data / p) for p in test_paths]
    untrimmed = sorted(str(p) for p in (data / "untrimmed").glob("*.mp4"))
    records = list(label(held_out, str(result.best_dir), out_dir=labels_dir))
    records += list(label(untrimmed, str(result.best_dir), out_dir=labels_dir, window=2.0, stride=0.25,
                          embeddings=True))
    written = export_formats(labels_dir, FORMATS, classes=list(manifest.classes))
    for r in records[-len(untrimmed):]:
        found = ", ".join(f"{s.label} {s.start:.1f}-{s.end:.1f}s" for s in r.segments) or "none"
        _say(f"    {Path(r.path).name}: segments {found}")

    _say("5/5 writing the HTML report")
    report = write_report(out / "report.html", labels_dir=labels_dir, eval_dir=eval_dir, run_dir=run,
                          title="falv demo")
    summary = {"held_out_top1": metrics["top1"], "videos": metrics["num_videos"], "model": str(result.best_dir),
               "localization_map@0.5": loc.get("mAP@0.5"), "localization_map@0.7": loc.get("mAP@0.7"),
               "seconds": round(time.monotonic() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, path in written.items():
        _say(f"    {name:12} {path}")
    _say(f"    metrics      {eval_dir / 'metrics.json'} (confusion_matrix.png, per_class.csv)")
    _say(f"    curves       {run / 'plots'}")
    _say(f"    report       {report}")
    _say(f"ground truth of the untrimmed videos: {data / 'untrimmed' / 'ground_truth.json'}")
    _say(f"held-out top-1 accuracy: {metrics['top1']:.1%} on {metrics['num_videos']} videos")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
