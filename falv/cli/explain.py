"""``falv explain VIDEO --model M``: where the model looked, as attention-rollout heat maps."""

from __future__ import annotations

from pathlib import Path

import click


def _load_processor(model: str, net: object) -> object:
    """The checkpoint's own preprocessor config when it has one, else the model config's size, mean and std."""
    from falv.hub.load import load_preprocessor_config
    from falv.processing import FALImageProcessor

    data = load_preprocessor_config(model)
    if data is not None:
        return FALImageProcessor.from_dict(data)
    return FALImageProcessor.from_config(net.config)  # type: ignore[attr-defined]


@click.command("explain")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--model", "-m", required=True,
              help="falv directory, transformers TimeSformer directory or hub id, or a TimeSformer .pyth file.")
@click.option("--out", "-o", "out_dir", default=Path("."), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for the pictures.")
@click.option("--clip-start", type=click.FloatRange(min=0), default=None,
              help="Start of the clip in seconds (default: one clip over the whole video, as `falv label`).")
@click.option("--clip-length", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Length of the clip in seconds, from --clip-start (default: to the end of the video).")
@click.option("--format", "-f", "formats", default="png,gif", show_default=True,
              help="Comma-separated: png (strip of frames and overlays), gif, mp4.")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Opacity of the heat map.")
@click.option("--scale", default="max", show_default=True, type=click.Choice(["max", "minmax"]),
              help="Colour scale over the clip: divide by the peak (flat maps look flat), or stretch min to max.")
@click.option("--fps", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Frames per second of the GIF and MP4.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Labels printed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def explain(video: Path, model: str, out_dir: Path, clip_start: float | None, clip_length: float | None,
            formats: str, alpha: float, scale: str, fps: float, top_k: int, device: str) -> None:
    """Show where the model looks in VIDEO: attention rollout over every block and
    attention step, as heat maps on the clip's frames.

    Writes OUT/<video name>.explain.png (and .gif, .mp4) and prints the top labels.
    A video that cannot be read is a one-line error (exit code 3).
    """
    from falv.explain import ExplainError
    from falv.explain.render import parse_formats, save_explanation
    from falv.explain.rollout import explain as run_explain
    from falv.inference import choose_device
    from falv.hub.families import family_of, load_model
    from falv.video import plan_windows, probe, read_frames, uniform_timestamps

    try:
        names = parse_formats(formats)
    except ExplainError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None
    if clip_length is not None and clip_start is None:
        clip_start = 0.0
    info = probe(video)  # a missing or broken file raises VideoError: one line, exit code 3
    net = load_model(model)
    if family_of(net) != "fal":  # attention rollout needs FAL's attention maps
        raise click.UsageError(f"falv explain shows where FAL/TimeSformer models attend; {model} is a "
                               f"{family_of(net)} model, which has no attention maps to show")
    net.to(choose_device(device))
    processor = _load_processor(model, net)
    frames_wanted = net.config.num_frames
    if clip_start is None:
        window = plan_windows(info.duration, info.fps, frames_wanted, num_clips=1)[0]
        timestamps = list(window.timestamps)
    else:
        if info.duration and clip_start >= info.duration:
            raise click.BadParameter(f"{clip_start:g} s is past the end of the video ({info.duration:.2f} s)",
                                     param_hint="--clip-start")
        length = clip_length if clip_length is not None else max(info.duration - clip_start, 0.0)
        length = min(length, max(info.duration - clip_start, 0.0)) if info.duration else length
        timestamps = [clip_start + t for t in uniform_timestamps(length, frames_wanted)]
    frames = read_frames(video, timestamps, size=processor.resize_target)  # type: ignore[attr-defined]
    result = run_explain(net, frames, processor=processor, top_k=top_k, timestamps=timestamps, source=video.name)
    written = save_explanation(result, out_dir, formats=names, stem=f"{video.stem}.explain", fps=fps, alpha=alpha,
                               scale=scale)
    for name, score in result.labels:
        click.echo(f"{score:7.2%}  {name}")
    for path in written.values():
        click.echo(f"wrote {path}")
