"""``falv synth``: write the synthetic video benchmark (see docs/synth.md)."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    """``64`` (square) or ``WxH``."""
    try:
        if "x" in value.lower():
            w, h = value.lower().split("x")
            return int(w), int(h)
        return int(value), int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size; use e.g. 64 or 96x64") from None


def _parse_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    """``3`` (fixed) or ``MIN,MAX`` seconds."""
    if value is None:
        return None
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration; use seconds, e.g. 2 or 1.5,3") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise click.BadParameter(f"{value!r}: give one value or MIN,MAX")
    return parts[0], parts[1]


def _parse_classes(value: str | None) -> tuple[str, ...] | int | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    return tuple(c.strip() for c in value.split(",") if c.strip())


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option(
    "--config", "mode", type=click.Choice(["temporal", "appearance", "mixed", "longrange"]), default="temporal",
    show_default=True,
    help="temporal: pairs that differ only in frame order (a frame-level model is at chance); "
    "appearance: classes that differ in shape/colour/texture/background; mixed: both; "
    "longrange: pairs that differ only in the order of events several frames apart.",
)
@click.option("--classes", help="How many of the config's classes (e.g. 4) or a comma-separated list of names.")
@click.option("--videos-per-class", "-n", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", default="64", show_default=True, callback=_parse_size, help="Frame size: 64 or WxH (even).")
@click.option("--fps", type=click.IntRange(1, 120), default=12, show_default=True)
@click.option("--duration", default="1.5,3", show_default=True, callback=_parse_range,
              help="Clip length in seconds: a value or MIN,MAX.")
@click.option("--frames", type=click.IntRange(min=2), help="Fixed number of frames per clip (overrides --duration).")
@click.option("--untrimmed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also write N long videos with several actions and ActivityNet-style ground truth.")
@click.option("--untrimmed-duration", default="20,40", show_default=True, callback=_parse_range,
              help="Length of untrimmed videos in seconds: a value or MIN,MAX.")
@click.option("--multilabel", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also write N clips with several simultaneous actions.")
@click.option("--max-labels", type=click.IntRange(min=2), default=2, show_default=True,
              help="Most labels of a multi-label clip.")
@click.option("--distractors", type=click.IntRange(min=0), default=2, show_default=True,
              help="Most distractor objects per video.")
@click.option("--noise", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Largest Gaussian pixel noise standard deviation (0-255).")
@click.option("--jitter", type=click.FloatRange(min=0), default=0.75, show_default=True,
              help="Camera shake in pixels.")
@click.option("--crf", type=click.IntRange(0, 51), default=20, show_default=True,
              help="x264 quality (lower is better).")
@click.option("--workers", "-j", type=click.IntRange(min=1), help="Encoder processes [default: one per core].")
@click.option("--overwrite", is_flag=True, help="Replace an earlier falv synth output in OUT.")
@click.option("--list-classes", is_flag=True, help="Print the classes of --config and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth(
    out: Path | None,
    mode: str,
    classes: str | None,
    videos_per_class: int,
    seed: int,
    size: tuple[int, int],
    fps: int,
    duration: tuple[float, float],
    frames: int | None,
    untrimmed: int,
    untrimmed_duration: tuple[float, float],
    multilabel: int,
    max_labels: int,
    distractors: int,
    noise: float,
    jitter: float,
    crf: int,
    workers: int | None,
    overwrite: bool,
    list_classes: bool,
    quiet: bool,
) -> None:
    """Write a synthetic benchmark of real H.264 videos to OUT (falv's public stand-in for FAL-500).

    OUT gets videos/<class>/<id>.mp4, labels.txt, taxonomy.txt, train/val/test.csv ("path,label[,label...]"),
    manifest.json and, with --untrimmed, untrimmed/ground_truth.json (ActivityNet format).
    The same options and seed give the same files, byte for byte.
    """
    from falv.data.synth import SynthConfig, catalogue, generate, partner

    if list_classes:
        for name in catalogue(mode):
            pair = partner(name)
            click.echo(f"{name}\t(reverse of {pair})" if pair else name)
        return
    if out is None:
        raise click.UsageError("missing argument OUT (the output directory)")
    width, height = size
    config = SynthConfig(
        mode=mode,
        classes=_parse_classes(classes),
        videos_per_class=videos_per_class,
        seed=seed,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        num_frames=frames,
        untrimmed=untrimmed,
        untrimmed_duration=untrimmed_duration,
        multilabel=multilabel,
        max_labels=max_labels,
        distractors=distractors,
        noise=noise,
        jitter=jitter,
        crf=crf,
    )
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # created on the first video, after the config and OUT were checked
            bar = click.progressbar(length=total, label="synth", file=click.get_text_stream("stderr"))
            bar.__enter__()
        bar.update(1)

    try:
        manifest = generate(out, config, workers=workers, overwrite=overwrite, progress=None if quiet else progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    counts = {kind: sum(v.kind == kind for v in manifest.videos) for kind in ("trimmed", "multilabel", "untrimmed")}
    extra = "".join(f", {n} {kind}" for kind, n in counts.items() if kind != "trimmed" and n)
    click.echo(
        f"wrote {counts['trimmed']} clips of {len(manifest.classes)} {mode} classes{extra} "
        f"to {out} in {manifest.seconds:.1f}s"
    )
