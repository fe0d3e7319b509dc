"""``falv train --data SRC --out RUN_DIR``: train or fine-tune a FAL model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from falv.cli.configfile import config_option, write_resolved_config
from falv.cli.main import EXIT_OK, preset_option


def _floats(value: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX, got {value!r}", param_hint=name) from None
    return lo, hi


@click.command()
@config_option
@click.option("--data", "-d", help="Training videos: a folder per class, a CSV/TSV list, a `falv synth` folder, "
              "Kinetics/UCF101/SSv2 annotations.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: log.jsonl, plots/, checkpoint/, best/ (a falv model directory).")
@click.option("--val", help="Validation videos (default: the data's val split, else a stratified hold-out).")
@click.option("--val-fraction", default=0.15, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each class held out for validation when there is no --val.")
@click.option("--split", help="Split of --data to train on (default: train when the data has one).")
@click.option("--untrimmed", help="Also train on annotated untrimmed videos: an ActivityNet-style ground_truth.json "
              "(what falv evaluate --untrimmed reads). Windows inside actions train their class, windows in the "
              "gaps a 'background' class that labeling never emits, so segments skip the gaps.")
@click.option("--untrimmed-subset", help="Use only this subset of the --untrimmed file (e.g. validation).")
@click.option("--untrimmed-window", type=click.FloatRange(0, min_open=True),
              help="Training window seconds (default: the window labeling uses for the model).")
@click.option("--untrimmed-stride", type=click.FloatRange(0, min_open=True),
              help="Seconds between training windows (default: half the window).")
@click.option("--taxonomy", type=click.Path(exists=True, dir_okay=False),
              help="A label taxonomy (paths such as sports/ball/soccer one per line, or parent,child pairs): "
                   "the classes are its leaves, the data may label any node, and the loss counts every level "
                   "(docs/hierarchy.md).")
@preset_option("tiny", "Model preset when training from scratch.")
@click.option("--attention", help="Attention scheme (divided_space_time, joint_space_time, space_only, "
              "sparse_local_global, axial).")
@click.option("--init", help="Start from a falv directory, TimeSformer directory/hub id or .pyth checkpoint "
              "(a new head for these classes; position embeddings resized).")
@click.option("--freeze-backbone", is_flag=True, help="Train only the classification head.")
@click.option("--frames", "num_frames", type=click.IntRange(1), help="Frames per clip (default: the model's).")
@click.option("--image-size", type=click.IntRange(8), help="Frame size (default: the model's).")
@click.option("--patch-size", type=click.IntRange(1),
              help="Pixels per side of a patch token, from scratch only (default: the preset's, 16). Smaller "
                   "patches see smaller objects for more compute: 8 on the tiny preset's 64 px frames gives 8x8 "
                   "tokens per frame instead of 4x4, ~4x the cost (docs/results.md, localisation).")
@click.option("--motion-input", type=click.Choice(["none", "frame_diff"]), default=None,
              help="frame_diff: each frame's difference from the previous one as three more input channels "
                   "(default: the preset's or --init model's, none).")
@click.option("--frame-selection", default="uniform", show_default=True, type=click.Choice(["uniform", "key-moments"]),
              help="Where a clip's frames go: one per equal part of it, or key-moments: more where the picture "
                   "changes (recorded in the model's sampling, so labeling selects frames the same way).")
@click.option("--epochs", type=click.IntRange(1), help="Default: scaled to the dataset size.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1), help="Global batch size.")
@click.option("--accumulate", default=1, show_default=True, type=click.IntRange(1),
              help="Micro-batches per optimizer step (gradient accumulation).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Peak learning rate (default: 1e-3 per 16 clips; a tenth with --init).")
@click.option("--weight-decay", default=0.05, show_default=True, type=click.FloatRange(0))
@click.option("--warmup-epochs", type=click.FloatRange(0), help="Default: 10% of the epochs, at least one.")
@click.option("--scheduler", default="cosine", show_default=True, type=click.Choice(["cosine", "step", "plateau"]),
              help="Learning rate after warm-up: cosine decay to --min-lr, step decay every --step-epochs, "
              "or reduce on plateau of the validation metric.")
@click.option("--min-lr", default=1e-5, show_default=True, type=click.FloatRange(0), help="Floor of every scheduler.")
@click.option("--step-epochs", type=click.FloatRange(0, min_open=True),
              help="step: epochs between decays (default: a third of the epochs).")
@click.option("--step-gamma", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="step: factor per decay.")
@click.option("--plateau-patience", default=2, show_default=True, type=click.IntRange(0),
              help="plateau: validations without improvement tolerated before a reduction.")
@click.option("--plateau-factor", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="plateau: factor per reduction.")
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--mixup", default=0.0, show_default=True, type=click.FloatRange(0), help="Mixup alpha (0: off).")
@click.option("--cutmix", default=0.0, show_default=True, type=click.FloatRange(0), help="CutMix alpha (0: off).")
@click.option("--clip-grad", default=1.0, show_default=True, type=click.FloatRange(0), help="Gradient norm limit (0: off).")
@click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), help="Stochastic depth rate.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]))
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="EMA decay of the weights, e.g. 0.999.")
@click.option("--scale", default="0.5,1.0", show_default=True, help="Random resized crop area range MIN,MAX.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Random horizontal flips (leave off when classes have a direction: left/right).")
@click.option("--color-jitter", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Brightness, contrast and saturation factors drawn in [1-S, 1+S], once per clip (0: off).")
@click.option("--rotate", default=0.0, show_default=True, type=click.FloatRange(0, 45),
              help="Rotate each clip by one angle in [-DEG, DEG] (0: off).")
@click.option("--metric", default="auto", show_default=True, type=click.Choice(["auto", "val_top1", "val_loss", "val_map"]),
              help="Validation metric for the best checkpoint and early stopping.")
@click.option("--patience", type=click.IntRange(1), help="Stop after this many epochs without improvement.")
@click.option("--min-delta", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Smallest change of --metric that counts as an improvement (best/, --patience, plateau).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(0), help="Data loading processes (default: 0 with cached frames, else 2).")
@click.option("--cache", default="auto", show_default=True, type=click.Choice(["auto", "on", "off"]),
              help="Keep decoded frames in memory (auto: when the whole set fits --cache-gb).")
@click.option("--cache-gb", default=2.0, show_default=True, type=click.FloatRange(0))
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (its saved options apply).")
def train(resume: bool, out: Path, data: str | None, scale: str, flip: bool, clip_grad: float,
          patch_size: int | None, **options) -> int:
    """Train a FAL model on a dataset; the best model is written to OUT/best/.

    Several processes (CPU or GPU): torchrun --nproc_per_node N -m falv train ...
    """
    from falv.training import TrainConfig
    from falv.training import train as run
    from falv.training.checkpoint import latest_checkpoint

    if not resume and not data:
        raise click.UsageError("--data is required (or --resume to continue a run)")
    if patch_size is not None:
        if options.get("init"):
            raise click.UsageError("--patch-size sets the shape of a model trained from scratch; "
                                   "an --init model keeps its own patches")
        options["model_overrides"] = {"patch_size": patch_size}
    config = TrainConfig(data=data or "", out=str(out), scale=_floats(scale, "--scale"),
                         flip="on" if flip else "off", clip_grad=clip_grad or None, **options)
    if not resume and latest_checkpoint(out) is None:  # a run folder in use is refused by the run itself
        write_resolved_config(click.get_current_context(), out, "train")
    result = run(config, resume=resume, echo=lambda m: click.echo(m))
    summary = {"best_dir": str(result.best_dir), "best_epoch": result.best_epoch,
               result.best_metric: result.best_value, "epochs": result.epochs_run, "seconds": round(result.seconds, 1)}
    click.echo(json.dumps(summary))
    return EXIT_OK
