"""Robustness of the paper experiments' models (FAL paper Table 10 / Sec. 4.17, issue #21).

    python benchmarks/robustness_experiment.py --out runs/paper --seeds 3 --markdown runs/paper/robustness.md
    python benchmarks/robustness_experiment.py --quick --out /tmp/pe      # CI: one seed, tiny data and model

The models are the runs of ``benchmarks/paper_experiments.py`` (same ``--out`` folder: its
cached runs are reused, missing ones are trained the same way): divided space-time attention
(Table 1's T+S), space-only attention (Table 1's S) and the R(2+1)D of equal FLOPs (the CNN
comparison), each on the ``temporal`` and ``appearance`` sets, with every training seed. Each
best checkpoint is evaluated on its test split, clean and under every perturbation of
``falv evaluate --perturb`` (:mod:`falv.video.perturb`, default strengths, perturbation seed
0) in the same run, one clip and one crop per video, through :func:`falv.evaluation.evaluate`
(the records are kept under each run's folder, so an interrupted run resumes).

Output: ``OUT/robustness.json`` (``quick-robustness.json`` with ``--quick``): per dataset,
arm and perturbation the test top-1 and the share of the clean top-1 kept, mean ± sample
std over seeds, each run's numbers and folder; the table on stdout and in ``--markdown``;
``OUT/robustness.png``. ``--cached-only`` evaluates only the arms whose seeds are all trained
(the others are marked "not run"). Results and discussion: docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_experiments as pe  # noqa: E402  (the sibling script: runs, data and the recipe)

#: The models compared: the keys of paper_experiments' arms.
ARMS = ("divided_space_time", "space_only", "r2plus1d")


def arms(keys: tuple[str, ...] = ARMS) -> list[Any]:
    found = {a.key: a for spec in pe.EXPERIMENT_SPECS.values() for a in spec.arms}
    return [found[key] for key in keys]


def evaluate_run(settings: Any, dataset: Any, run: dict[str, Any], perturb: str, seed: int) -> dict[str, Any]:
    """The clean and perturbed test metrics of one trained run (records resumed from its folder)."""
    from falv.evaluation import evaluate

    root = Path(run["run_dir"])
    key = pe.fingerprint({"perturb": perturb, "seed": seed})
    best = pe.load_best(run["kind"], root / "train" / "best")
    metrics = evaluate(best, str(dataset.path), root / f"robustness-{key}", clips=1, crops=1, split="test",
                       perturb=perturb, perturb_seed=seed, workers=settings.eval_workers)
    if metrics["num_failed"]:
        raise RuntimeError(f"{metrics['num_failed']} test videos could not be decoded: {metrics['failed'][:3]}")
    return metrics["robustness"]


def all_seeds_trained(settings: Any, dataset: Any, arm: Any) -> bool:
    """Whether every seed of ``arm`` on ``dataset`` has a cached run."""
    name, _, _ = pe.run_key(settings, dataset, arm)
    root = settings.out / "runs" / (("quick-" if settings.quick else "") + dataset.name) / name
    return all((root / f"seed{seed}" / "result.json").is_file() for seed in settings.seeds)


def run(settings: Any, perturb: str, perturb_seed: int, keys: tuple[str, ...] = ARMS,
        cached_only: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    chosen = arms(keys)
    results: dict[str, dict[str, Any]] = {}
    datasets = {d: pe.prepare_dataset(settings, d) for d in settings.datasets}
    specs: list[str] = []
    for dname, dataset in datasets.items():
        results[dname] = {}
        for arm in chosen:
            if cached_only and not all_seeds_trained(settings, dataset, arm):
                results[dname][arm.key] = {"label": arm.label, "kind": arm.kind, "not_run": True}
                settings.say(f"[robustness] {dname} / {arm.label}: not every seed is trained; left out (--cached-only)")
                continue
            per_seed = []
            for seed in settings.seeds:
                trained = pe.train_and_test(settings, dataset, arm, seed, "robustness")
                rob = evaluate_run(settings, dataset, trained, perturb, perturb_seed)
                per_seed.append((trained, rob))
                settings.say(f"[robustness] {dname} / {arm.label} / seed {seed}: clean "
                             f"{100 * rob['clean']['top1']:.1f}%; " + ", ".join(
                                 f"{r['spec']} {100 * r['top1']:.1f}%" for r in rob["perturbations"]))
            specs = [r["spec"] for r in per_seed[0][1]["perturbations"]]
            rows = {}
            for i, spec in enumerate(specs):
                rows[spec] = {
                    "description": per_seed[0][1]["perturbations"][i]["description"],
                    "top1": pe.summarize([rob["perturbations"][i]["top1"] for _, rob in per_seed]),
                    "kept": pe.summarize([rob["perturbations"][i]["kept"] for _, rob in per_seed]),
                }
            results[dname][arm.key] = {
                "label": arm.label, "kind": arm.kind,
                "clean": pe.summarize([rob["clean"]["top1"] for _, rob in per_seed]),
                "perturbations": rows,
                "runs": [{"seed": t["seed"], "run_dir": t["run_dir"], "fingerprint": t["fingerprint"],
                          "robustness": rob} for t, rob in per_seed],
            }
    import torch

    from falv import __version__

    data = {
        "experiment": "robustness",
        "title": "Table 10: accuracy under perturbations of the test videos",
        "paper": "TimeSformer-style models keep most of their accuracy under spatial perturbations; temporal "
                 "perturbations (shuffling, frame drops, frame-rate changes) cost most where order decides.",
        "command": settings.command, "quick": settings.quick, "seeds": list(settings.seeds),
        "perturb": perturb, "perturb_seed": perturb_seed, "perturbations": specs,
        "falv_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - started, 2),
        "model": settings.model, "cnn": settings.cnn, "recipe": pe._seedless(settings.train_config(0).to_dict()),
        "datasets": {n: {"path": str(d.path), "synth_config": d.synth_config, "classes": d.classes,
                         "counts": d.counts} for n, d in datasets.items()},
        "arms": [{"key": a.key, "label": a.label, "kind": a.kind, "overrides": a.overrides} for a in chosen],
        "results": results,
    }
    data["markdown"] = markdown_table(data)
    return data


def markdown_table(data: dict[str, Any]) -> str:
    """Rows: clean then each perturbation; columns: dataset x arm, top-1 (share of clean kept)."""
    seeds = data["seeds"]
    lines = [f"### {data['title']}", "",
             f"{len(seeds)} seed(s); mean ± sample std over seeds, % of the test videos; in brackets the share of "
             f"the clean top-1 kept (mean over seeds); perturbation seed {data['perturb_seed']}; "
             f"`{data['command']}`" + (" (--quick: smoke-test sizes, not results)" if data["quick"] else "") + ".", ""]
    columns = [(d, a["key"]) for d in data["results"] for a in data["arms"]]
    head = ["perturbation"] + [f"{pe.DATASET_LABELS.get(d, d).split(' (')[0]}: "
                               f"{data['results'][d][a]['label']}" for d, a in columns]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| clean | " + " | ".join("not run" if data["results"][d][a].get("not_run") else
                                            pe.fmt_pct(data["results"][d][a]["clean"]) for d, a in columns) + " |")
    for spec in data["perturbations"]:
        cells = []
        for d, a in columns:
            if data["results"][d][a].get("not_run"):
                cells.append("not run")
                continue
            row = data["results"][d][a]["perturbations"][spec]
            kept = row["kept"]["mean"]
            cells.append(pe.fmt_pct(row["top1"]) + (f" ({100 * kept:.0f}%)" if kept is not None else ""))
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> Path:
    """Share of the clean top-1 kept per perturbation: one panel per dataset, a bar per arm."""
    import numpy as np
    from matplotlib.figure import Figure

    specs = data["perturbations"]
    dsets = list(data["results"])
    fig = Figure(figsize=(11, 1.2 + 2.6 * len(dsets)))
    axes = fig.subplots(len(dsets), 1, squeeze=False)[:, 0]
    width = 0.8 / len(data["arms"])
    x = np.arange(len(specs))
    for ax, d in zip(axes, dsets):
        for i, arm in enumerate(data["arms"]):
            if data["results"][d][arm["key"]].get("not_run"):
                continue
            res = data["results"][d][arm["key"]]["perturbations"]
            means = [100 * (res[s]["kept"]["mean"] or 0.0) for s in specs]
            errs = [100 * (res[s]["kept"]["std"] or 0.0) for s in specs]
            ax.bar(x + (i - (len(data["arms"]) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
                   label=arm["label"])
        ax.axhline(100, color="grey", linewidth=0.8)
        ax.set_xticks(x, specs, fontsize=8)
        ax.set_ylabel("% of clean top-1 kept")
        ax.set_title(pe.DATASET_LABELS.get(d, d), fontsize=10)
        ax.legend(fontsize=7, ncols=len(data["arms"]))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/paper_experiments"),
                        help="paper_experiments.py's --out folder (its cached runs are reused)")
    parser.add_argument("--quick", action="store_true", help="CI: one seed, tiny data and model, 1 epoch")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds 0..N-1 (default 3; quick 1)")
    parser.add_argument("--datasets", default=",".join(pe.DATASETS),
                        help=f"comma list of {','.join(pe.ALL_DATASETS)} (default {','.join(pe.DATASETS)})")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)} (default all)")
    parser.add_argument("--perturb", default="all", help="falv evaluate --perturb's value (default all)")
    parser.add_argument("--perturb-seed", type=int, default=0)
    parser.add_argument("--eval-workers", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--cached-only", action="store_true",
                        help="leave out (and mark 'not run') the arms whose seeds are not all trained yet")
    parser.add_argument("--time-init", type=float, default=None, metavar="STD",
                        help="the FAL arms' random time-embedding std, as paper_experiments.py --time-init "
                             "(needed to reuse its runs on the long-range set)")
    args = parser.parse_args(argv)
    if args.time_init is not None and not 0 <= args.time_init < float("inf"):
        parser.error("--time-init must be a number >= 0")
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    datasets = tuple(d for d in args.datasets.split(",") if d)
    if not datasets or any(d not in pe.ALL_DATASETS for d in datasets):
        parser.error(f"--datasets: choose from {', '.join(pe.ALL_DATASETS)}")
    keys = tuple(a for a in args.arms.split(",") if a)
    if not keys or any(k not in ARMS for k in keys):
        parser.error(f"--arms: choose from {', '.join(ARMS)}")
    settings = pe.Settings(out=args.out, seeds=list(range(seeds)), quick=args.quick, datasets=datasets,
                           eval_workers=args.eval_workers, time_init=args.time_init,
                           command=shlex.join(["python", "benchmarks/robustness_experiment.py", *argv]))
    data = run(settings, args.perturb, args.perturb_seed, keys, args.cached_only)
    name = ("quick-" if args.quick else "") + "robustness"
    pe.write_json(args.out / f"{name}.json", data)
    try:
        plot(data, args.out / f"{name}.png")
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    print(data["markdown"])
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(data["markdown"], encoding="utf-8")
    return data


if __name__ == "__main__":  # the evaluation engine's decoding workers re-import the main module
    main()
