"""Hierarchical labels against flat training when the leaves have few examples (issue 18).

    python benchmarks/hierarchy.py --out runs/hier                 # ~25 min on 2 cores
    python benchmarks/hierarchy.py --quick --out /tmp/hier          # CI: tiny data, one epoch

**Data.** ``falv synth --config temporal -n 40`` per data seed (10 classes in 5 pairs, e.g.
``move_right`` / ``move_left``; the partners differ only in frame order), with the synth
taxonomy ``motion/<pair>/<class>`` (``OUT/taxonomy.txt``); with ``--config mixed``, 22
classes: those and 12 appearance classes under ``appearance/<shape>``. From its training split each class
keeps ``--leaf-examples`` videos labelled at the leaf (the first ones in the split's order); the
others are either dropped or labelled only with their parent (``motion/translation``: "something
moves sideways", nobody said which way), the cheap coarse labels a catalogue often has.

**Arms** (the tiny preset, falv's default recipe; validation and test: every video, leaf labels):

- ``flat``: flat training on the leaf-labelled videos only (what a flat model can use);
- ``hierarchical``: the same videos, trained with the taxonomy (the loss over every level);
- ``hierarchical + coarse``: those videos plus the rest labelled at the parent, with the taxonomy;
- ``flat, all leaves`` (reference): flat training with every training video labelled at its leaf.

Each arm is evaluated on the test split with ``falv evaluate``: leaf top-1, top-1 at levels 1
and 2 (the pair, or the shape; a flat model's scores summed the same way), and hierarchical
precision/recall.
``OUT/hierarchy.json`` holds every run and the machine; a markdown table (mean +- std over
``--seeds``) is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localization as loc  # noqa: E402  (the sibling script: machine())

ARMS = ("flat", "hierarchical", "hierarchical + coarse", "flat, all leaves")


def make_data(root: Path, seed: int, quick: bool, mode: str = "temporal") -> Path:
    from falv.data.synth import SynthConfig, generate, load_manifest

    config = SynthConfig(mode=mode, videos_per_class=8 if quick else 40, seed=seed)
    folder = root / f"{mode}-seed{seed}"
    try:
        same = load_manifest(folder).config == config.to_dict()
    except Exception:  # noqa: BLE001 - absent or from another version
        same = False
    if not same:
        generate(folder, config, overwrite=True)
    return folder


def training_lists(data: Path, leaf_examples: int) -> dict[str, Path]:
    """``few`` (``leaf_examples`` leaf-labelled videos per class), ``coarse`` (those, and the
    others labelled with their parent), ``all`` (every training video at its leaf) and ``val`` (the
    validation split): CSV lists whose labels are the taxonomy's paths, so that a flat model's
    classes are the same leaf paths as a hierarchical one's."""
    from falv.taxonomy import read_taxonomy

    taxonomy = read_taxonomy(data / "taxonomy.txt")
    rows = list(csv.reader((data / "train.csv").open(encoding="utf-8")))
    seen: dict[str, int] = {}
    few, coarse = [], []
    for path, label in rows:
        node = taxonomy.resolve(label)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= leaf_examples:
            few.append([str(data / path), node])
            coarse.append([str(data / path), node])
        else:
            coarse.append([str(data / path), node.rsplit("/", 1)[0]])
    val = list(csv.reader((data / "val.csv").open(encoding="utf-8")))
    lists = {"few": few, "coarse": coarse, "all": [[str(data / p), taxonomy.resolve(lab)] for p, lab in rows],
             "val": [[str(data / p), taxonomy.resolve(lab)] for p, lab in val]}
    out = {}
    folder = data / f"hierarchy-lists-{leaf_examples}"  # not beside the synth labels.txt (leaf names)
    folder.mkdir(exist_ok=True)
    for name, table in lists.items():
        out[name] = folder / f"{name}.csv"
        with out[name].open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows(table)
    return out


def train_arm(run: Path, val: Path, train_list: Path, taxonomy: Path | None, seed: int,
              epochs: int | None) -> tuple[Path, dict[str, Any]]:
    from falv.training import TrainConfig, train

    done = run / "done"
    if done.is_file():
        return run / "best", json.loads(done.read_text())
    shutil.rmtree(run, ignore_errors=True)
    result = train(TrainConfig(data=str(train_list), val=str(val), out=str(run), epochs=epochs,
                   seed=seed, taxonomy=str(taxonomy) if taxonomy else None), echo=None)
    info = {"seconds": round(result.seconds, 1), "epochs": result.epochs_run, "best_epoch": result.best_epoch}
    done.write_text(json.dumps(info) + "\n")
    return run / "best", info


def score(model_dir: Path, data: Path, out: Path) -> dict[str, Any]:
    """Leaf top-1, level-2 top-1 and hierarchical P/R of a model on the test split. A flat model's
    classes are the same leaf paths, so it is scored through the same taxonomy: marked hierarchical,
    its parents' scores are the sums of its leaves' softmax, as a hierarchical model's are."""
    from falv.evaluation import evaluate
    from falv.model.transformer import FALForVideoClassification

    model = FALForVideoClassification.from_pretrained(model_dir)
    model.config.hierarchical = True
    model.name_or_path = str(model_dir)
    result = evaluate(model, str(data), out, split="test", workers=2)
    levels = {x["level"]: x for x in result["hierarchy"]["levels"]}
    return {"leaf_top1": result["top1"], "pair_top1": levels[2]["top1"], "top_top1": levels[1]["top1"],
            "hierarchical_precision": result["hierarchy"]["hierarchical_precision"],
            "hierarchical_recall": result["hierarchy"]["hierarchical_recall"], "num_videos": result["num_videos"]}


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="data and training seeds (comma-separated)")
    parser.add_argument("--leaf-examples", type=int, default=4, help="leaf-labelled training videos per class")
    parser.add_argument("--arms", default=",".join(ARMS), help="a subset of: " + ", ".join(ARMS))
    parser.add_argument("--config", default="temporal", choices=("temporal", "mixed"),
                        help="the synth set: temporal (10 classes, 5 pairs) or mixed (22: the temporal pairs and "
                             "12 appearance classes under their shapes)")
    parser.add_argument("--quick", action="store_true", help="tiny data and one epoch (tests)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms != ",".join(ARMS) else list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    epochs = 1 if args.quick else None
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        data = make_data(args.out / "data", seed, args.quick, args.config)
        lists = training_lists(data, args.leaf_examples)
        taxonomy = data / "taxonomy.txt"
        plan = {"flat": (lists["few"], None), "hierarchical": (lists["few"], taxonomy),
                "hierarchical + coarse": (lists["coarse"], taxonomy), "flat, all leaves": (lists["all"], None)}
        for arm in arms:
            train_list, tax = plan[arm]
            slug = arm.replace(" + ", "-").replace(", ", "-").replace(" ", "-")
            model, info = train_arm(args.out / "runs" / f"{slug}-seed{seed}", lists["val"], train_list, tax, seed,
                                    epochs)
            figures = score(model, data, args.out / "eval" / f"{slug}-seed{seed}")
            runs.append({"arm": arm, "seed": seed, "train_videos": sum(1 for _ in train_list.open()), **info,
                         **figures})
            print(json.dumps(runs[-1]), flush=True)
    table = ["| arm | training videos | leaf top-1 | level-2 top-1 | hier. precision | hier. recall |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        table.append(f"| {arm} | {mine[0]['train_videos']} | " + " | ".join(
            _mean_std([r[key] for r in mine])
            for key in ("leaf_top1", "pair_top1", "hierarchical_precision", "hierarchical_recall")) + " |")
    result = {"machine": loc.machine(), "config": args.config, "seeds": seeds, "leaf_examples": args.leaf_examples, "quick": args.quick,
              "runs": runs, "table": table}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hierarchy.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(table))
    return result


if __name__ == "__main__":
    main()
