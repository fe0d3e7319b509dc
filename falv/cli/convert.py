"""``falv convert SRC DEST``: write a falv directory from a TimeSformer checkpoint."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("source")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with one class name per line (for .pyth checkpoints, which carry none).")
@click.option("--num-heads", type=int, default=None,
              help="Attention heads of a TimeSformer .pyth checkpoint, if not hidden_size/64.")
@click.option("--sampling", default=None,
              help="The checkpoint's clip sampling instead of its documented one: STRIDE@FPS (e.g. 32@30 or "
                   "8x32@30: frames 32 apart at 30 fps), SECONDS (e.g. 2.5s: frames spread over 2.5-second "
                   "clips) or 'video' (over whole videos).")
def convert(source: str, destination: Path, labels_file: Path | None, num_heads: int | None,
            sampling: str | None) -> None:
    """Convert SOURCE into a falv model directory DESTINATION. SOURCE is any model falv reads,
    recognised by its content: a transformers TimeSformer or VideoMAE directory or hub id, an
    original TimeSformer .pyth, a PySlowFast .pyth or Caffe2 .pkl (C2D, I3D, Slow, SlowFast, X3D),
    a pytorchvideo hub file, or a TSM checkpoint (docs/models.md)."""
    from falv.hub.convert import convert as run_convert

    labels = None
    if labels_file is not None:
        labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    from falv.config import ClipSampling
    from falv.errors import ConfigError

    overrides: dict = {"num_attention_heads": num_heads} if num_heads else {}
    if sampling is not None:
        try:
            overrides["sampling"] = ClipSampling.parse(sampling)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--sampling") from None
    out = run_convert(source, destination, labels=labels, **overrides)
    from falv.hub.families import load_model

    model = load_model(out)
    cfg = model.config
    seconds = cfg.clip_seconds
    clip = ("clip sampling unknown" if cfg.sampling is None else
            "clips of whole videos" if seconds is None else f"clips of {seconds:.3g} s")
    kind = getattr(cfg, "attention_type", None) or getattr(cfg, "arch", None) or model.family
    click.echo(f"wrote {out} ({model.family}: {kind}, {cfg.num_frames}x{cfg.image_size}, {cfg.num_labels} labels, "
               f"{clip})")
