"""``falv evaluate --model M --data SRC --out DIR``: top-1/top-5, F1, mAP and localisation mAP of a model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from falv.cli.configfile import config_option, write_resolved_config
from falv.cli.main import EXIT_OK, EXIT_SOME_FAILED, engine_options, hierarchy_options, model_time_options


@click.command()
@config_option
@click.option("--model", "-m", required=True,
              help="falv directory, transformers TimeSformer directory or hub id, or a TimeSformer .pyth file.")
@click.option("--data", "-d", default=None,
              help="Labeled videos: class folders, a CSV list, a falv synth folder, Kinetics CSV, UCF101 or SSv2.")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for metrics.json, confusion_matrix.csv/.png, per_class.csv, predictions.jsonl.")
@click.option("--split", default=None,
              help="Split of --data (default: test where the layout has splits; validation for SSv2).")
@click.option("--clips", default="1", show_default=True,
              help="Temporal clips per video: windows of the model's clip duration spread over it; several "
                   "(1,2,4) run one evaluation each, the last is the headline.")
@click.option("--crops", default="1", show_default=True,
              help="Spatial crops per clip: 1 (centre) or 3 (along the long side); 1,3 runs both.")
@click.option("--untrimmed", type=click.Path(exists=True, path_type=Path), default=None,
              help="ActivityNet-style ground_truth.json (or its folder): temporal localisation mAP.")
@click.option("--untrimmed-subset", default=None,
              help="Only this subset of the ground truth (default: every video with annotations).")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Untrimmed videos: sliding-window seconds (default: the model's clip duration; "
                   "without recorded sampling its frames / 4).")
@click.option("--stride", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Untrimmed videos: window stride in seconds (default: --window / 8).")
@click.option("--smoothing", default=1, show_default=True, type=click.IntRange(1),
              help="Untrimmed videos: moving average over this many windows before segmenting.")
@click.option("--min-duration", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Untrimmed videos: drop segments shorter than this many seconds.")
@click.option("--threshold", "segment_threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Untrimmed videos: window scores below this are background.")
@model_time_options
@hierarchy_options
@click.option("--refine-edges/--no-refine-edges", default=True, show_default=True,
              help="Untrimmed videos: put segment edges where the scores of the windows around them cross, "
                   "not half-way between the windows.")
@click.option("--perturb", default=None, metavar="NAME[=S][,NAME...]",
              help="Also evaluate --data perturbed, once per perturbation: frame-drop, shuffle, fps, resolution, "
                   "crop, blur, noise, jpeg (=S: a strength; all: each at its default). metrics.json gets a "
                   "robustness block, the folder robustness.png. Strengths: docs/evaluation.md.")
@click.option("--perturb-seed", default=0, show_default=True, type=int,
              help="Seed of the perturbations' random draws (per video and window).")
@engine_options
@click.option("--no-resume", is_flag=True,
              help="Label every video again even if OUT/records holds this model's records of it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def evaluate(model, data, out_dir, split, clips, crops, untrimmed, untrimmed_subset, window, stride, smoothing,
             min_duration, segment_threshold, refine_edges, clip_seconds, frame_selection, temperature, level, max_depth, perturb,
             perturb_seed,
             batch_size, workers, timeout, precision, runtime, device, no_resume, quiet) -> int:
    """Evaluate a model on labeled videos (--data) and/or untrimmed videos (--untrimmed).

    Every video goes through the labeling engine with --clips x --crops views;
    videos that cannot be decoded are listed in metrics.json ("failed") and left
    out of the metrics. The engine's records are kept in OUT/records/, so an interrupted
    evaluation rerun with the same --out, model and options labels only what was
    left. Exit code 0: every video evaluated; 1: some failed;
    2: usage error; 3: the evaluation could not run (bad model, unknown classes).
    """
    from falv.errors import ConfigError
    from falv.evaluation.runner import check_options, evaluate as run_evaluate
    from falv.export.runtime import check_runtime

    if data is None and untrimmed is None:
        raise click.UsageError("give --data (labeled videos) and/or --untrimmed (ground truth of untrimmed videos)")
    try:
        check_options(clips, crops, window=window, stride=stride, smoothing=smoothing, min_duration=min_duration,
                      segment_threshold=segment_threshold)
        if perturb is not None:
            from falv.video.perturb import parse_perturbations

            if data is None:
                raise ConfigError("--perturb perturbs the labeled videos: give --data")
            perturb = parse_perturbations(perturb, perturb_seed)
        if runtime != "torch":  # a precision or device the runtime lacks: a usage error (torch: checked by the run)
            check_runtime(runtime, precision, device)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    write_resolved_config(click.get_current_context(), out_dir, "evaluate")
    bar = _Progress(enabled=not quiet and sys.stderr.isatty())
    try:
        result = run_evaluate(
            model, data, out_dir, clips=clips, crops=crops, split=split, untrimmed=untrimmed,
            untrimmed_subset=untrimmed_subset, window=window, stride=stride, smoothing=smoothing,
            min_duration=min_duration, segment_threshold=segment_threshold, refine_edges=refine_edges,
            workers=workers, batch_size=batch_size,
            timeout=timeout, precision=precision, runtime=runtime, device=device, progress=bar,
            clip_seconds=clip_seconds, temperature=temperature, perturb=perturb,
            resume=not no_resume, frame_selection=frame_selection, level=level, max_depth=max_depth,
        )
    finally:
        bar.close()
    if not quiet:
        for line in summary_lines(result):
            click.echo(line)
        for failure in result["failed"][:5]:
            click.echo(f"failed: {failure['path']}: {failure['error']}", err=True)
        if len(result["failed"]) > 5:
            click.echo(f"failed: ... and {len(result['failed']) - 5} more (metrics.json lists them all)", err=True)
    return EXIT_SOME_FAILED if result["failed"] else EXIT_OK


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The short summary the command prints: headline metrics and where the files are."""
    lines = []
    for view in result.get("views") or []:
        extra = f"  mAP {_number(view.get('map'))}" if "map" in view else ""
        lines.append(f"{view['clips']} clip(s) x {view['crops']} crop(s): top-1 {_number(view['top1'])}  "
                     f"top-5 {_number(view['top5'])}  F1 macro {_number(view['f1_macro'])}{extra}")
    if result.get("data") is not None:
        extra = f"  mAP {_number(result.get('map'))}" if result.get("multilabel") else ""
        lines.append(
            f"top-1 {_number(result['top1'])}  top-5 {_number(result['top5'])}  F1 macro {_number(result['f1_macro'])}"
            f"{extra}  ({result['num_videos']} videos, {result['clips']} clip(s) x {result['crops']} crop(s))"
        )
        hierarchy = result.get("hierarchy")
        if hierarchy:
            levels = "  ".join(f"level {x['level']} top-1 {_number(x['top1'])}" for x in hierarchy["levels"])
            lines.append(f"{levels}  hierarchical P/R/F1 {_number(hierarchy['hierarchical_precision'])}/"
                         f"{_number(hierarchy['hierarchical_recall'])}/{_number(hierarchy['hierarchical_f1'])}")
        cal = result.get("calibration")
        if cal and cal.get("ece") is not None:
            t = cal.get("temperature")
            lines.append(f"expected calibration error ({cal['bins']} bins): {_number(cal['ece_uncalibrated'])} raw, "
                         f"{_number(cal['ece'])} with temperature {'1 (none)' if t in (None, 1.0) else f'{t:g}'}")
    rob = result.get("robustness")
    if rob:
        metric = "top-1" if rob["metric"] == "top1" else "mAP"
        for row in rob["perturbations"]:
            kept = "" if row["kept"] is None else f" ({100 * row['kept']:.0f}% of clean kept)"
            lines.append(f"{row['spec']}: {metric} {_number(row.get(rob['metric']))}{kept}")
    loc = result.get("localization")
    if loc:
        parts = "  ".join(f"{key} {_number(value)}" for key, value in loc.items() if key.startswith("mAP"))
        lines.append(f"localisation: {parts}  ({loc['num_videos']} untrimmed videos)")
    if result.get("failed"):
        lines.append(f"{len(result['failed'])} video(s) failed and are not counted")
    files = result.get("files") or {}
    if "metrics" in files:
        lines.append(f"metrics: {files['metrics']}")
        others = [Path(p).name for kind, p in files.items() if kind != "metrics"]
        if others:
            lines.append(f"also in {Path(files['metrics']).parent}: {', '.join(others)}")
    return lines


class _Progress:
    """A click progress bar per engine run, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=total, label=stage, file=sys.stderr, show_eta=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
