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
              help="Attention heads of a .pyth checkpoint, if not hidden_size/64.")
def convert(source: str, destination: Path, labels_file: Path | None, num_heads: int | None) -> None:
    """Convert SOURCE (a transformers TimeSformer directory or hub id, or an original
    TimeSformer .pyth file) into a falv model directory DESTINATION."""
    from falv.hub.convert import convert as run_convert

    labels = None
    if labels_file is not None:
        labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    overrides = {"num_attention_heads": num_heads} if num_heads else {}
    out = run_convert(source, destination, labels=labels, **overrides)
    from falv.hub.load import load_config

    cfg = load_config(out)
    click.echo(f"wrote {out} ({cfg.attention_type}, {cfg.num_frames}x{cfg.image_size}, {cfg.num_labels} labels)")
