"""Does a reduced precision label like fp32? Top-1 agreement of bf16 / int8 with fp32 on a trained model.

A random-init model says nothing here: its top-1 margins are far below any rounding
difference (docs/labeling.md). This script takes a **trained** checkpoint and a labeled
dataset, runs ``falv evaluate`` once per precision (the labeling engine, same clips and
pixels each time), and compares every video's top-1 with the fp32 run::

    python benchmarks/precision_agreement.py --model runs/s1/best --data data/s1 --clips 1,4
    python benchmarks/precision_agreement.py --quick          # random tiny model, generated data (smoke test)

Printed per precision: accuracy, top-1 agreement with fp32 (video level), the largest
score difference of any class, the smallest fp32 top-1 margin among the videos whose
top-1 changed, and the wall time of the evaluation. ``--json FILE`` writes it all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE = "fp32"


def read_predictions(path: Path) -> dict[str, dict[str, float]]:
    """``predictions.jsonl`` of ``falv evaluate`` -> {video path: {label: score}} (best first)."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out[row["path"]] = {x["label"]: x["score"] for x in row["labels"]}
    return out


def compare(ref: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Video-level top-1 agreement of ``other`` with ``ref`` (same videos), score differences and margins."""
    if ref.keys() != other.keys():
        raise ValueError("the two runs evaluated different videos")
    agree, max_diff, flipped_margins = 0, 0.0, []
    for path, scores in ref.items():
        top = sorted(scores.values(), reverse=True)
        ref_top = max(scores, key=scores.get)
        if max(other[path], key=other[path].get) == ref_top:
            agree += 1
        else:
            flipped_margins.append(top[0] - top[1] if len(top) > 1 else top[0])
        shared = scores.keys() & other[path].keys()
        max_diff = max([max_diff, *(abs(scores[k] - other[path][k]) for k in shared)])
    return {"videos": len(ref), "agree": agree, "agreement": agree / len(ref) if ref else float("nan"),
            "max_score_diff": max_diff, "flipped_ref_margins": sorted(flipped_margins)}


def run(model: str, data: str, out: Path, precisions: list[str], clips: str, split: str | None) -> dict[str, Any]:
    from falv.evaluation.runner import evaluate

    result: dict[str, Any] = {"model": model, "data": data, "clips": clips, "runs": {}}
    predictions = {}
    for prec in [REFERENCE, *[p for p in precisions if p != REFERENCE]]:
        print(f"# falv evaluate --precision {prec}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        metrics = evaluate(model, data, out / prec, clips=clips, split=split, precision=prec)
        seconds = time.perf_counter() - t0
        predictions[prec] = read_predictions(out / prec / "predictions.jsonl")
        result["runs"][prec] = {"top1": metrics["top1"], "num_videos": metrics["num_videos"], "seconds": seconds,
                                "headline_clips": metrics["clips"]}
    for prec, preds in predictions.items():
        if prec != REFERENCE:
            result["runs"][prec]["vs_fp32"] = compare(predictions[REFERENCE], preds)
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"model {result['model']}, data {result['data']}, clips {result['clips']} (headline: the last)")
    print("| precision | videos | top-1 | top-1 = fp32 | max |score diff| | fp32 margins of changed videos | seconds |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for prec, r in result["runs"].items():
        c = r.get("vs_fp32")
        agree = f"{c['agree']}/{c['videos']} ({100 * c['agreement']:.1f}%)" if c else "-"
        diff = f"{c['max_score_diff']:.4f}" if c else "-"
        margins = ", ".join(f"{m:.4f}" for m in c["flipped_ref_margins"]) if c and c["flipped_ref_margins"] else "-"
        print(f"| {prec} | {r['num_videos']} | {100 * r['top1']:.1f}% | {agree} | {diff} | {margins} "
              f"| {r['seconds']:.1f} |")


def quick_setup(root: Path) -> tuple[str, str]:
    """A random tiny model and a small generated dataset (the smoke test's inputs)."""
    import torch

    from falv import FALForVideoClassification, preset
    from falv.data.synth import SynthConfig, generate

    manifest = generate(root / "data", SynthConfig(mode="appearance", classes=2, videos_per_class=3, splits=(0, 0, 1),
                                                   duration=(1.0, 1.5), distractors=0), workers=1)
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label=dict(enumerate(manifest.classes)))).save_pretrained(
        root / "model")
    return str(root / "model"), str(root / "data")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained falv (or TimeSformer) model directory")
    parser.add_argument("--data", help="labeled videos (anything falv evaluate reads)")
    parser.add_argument("--split", default=None, help="split of --data (default: falv evaluate's)")
    parser.add_argument("--precisions", default="bf16,int8", help="compared with fp32 (comma-separated)")
    parser.add_argument("--clips", default="1", help="temporal clips per video, as falv evaluate --clips")
    parser.add_argument("--out", type=Path, default=None, help="folder for the evaluations (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="random tiny model on generated data (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="falv-precision-") as tmp:
        out = args.out or Path(tmp)
        if args.quick:
            args.model, args.data = quick_setup(out / "inputs")
        elif not (args.model and args.data):
            parser.error("--model and --data are required (or --quick)")
        from falv.inference import int8_available

        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
        if "int8" in precisions and not int8_available():
            print("# int8 skipped: this torch build or CPU has no oneDNN int8 linear", file=sys.stderr)
            precisions.remove("int8")
        result = run(args.model, args.data, out / "runs", precisions, args.clips, args.split)
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
