"""``falv report [--labels DIR] [--eval DIR] [--run DIR] [--data SRC] --out report.html``: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--labels", "labels_dir", type=click.Path(exists=True, path_type=Path),
              help="Output folder of `falv label` (or its labels.jsonl).")
@click.option("--eval", "eval_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Output folder of `falv evaluate` (metrics.json, confusion matrix, per-class table).")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A training run folder (log.jsonl, plots/).")
@click.option("--data", "data", help="A dataset (any source `falv train --data` reads): videos per class in "
              "each split.")
@click.option("--out", "-o", "out_html", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")
@click.option("--title", default=None, help="Page title (default: falv report).")
@click.option("--max-videos", default=500, show_default=True, type=click.IntRange(0),
              help="Video cards shown (0: none); the summary and the error list count every video.")
@click.option("--gallery", default=6, show_default=True, type=click.IntRange(0),
              help="Sample predictions of the evaluation shown with their frames: this many mistakes and as "
              "many correct ones (0: none).")
@click.option("--no-thumbnails", is_flag=True, help="Do not decode frames of the videos.")
def report(labels_dir: Path | None, eval_dir: Path | None, run_dir: Path | None, data: str | None,
           out_html: Path, title: str | None, max_videos: int, gallery: int, no_thumbnails: bool) -> None:
    """Write one self-contained HTML report (pictures inlined, no network, no scripts) for a
    labelling run, an evaluation and/or a training run."""
    from falv.report.html import write_report

    if labels_dir is None and eval_dir is None and run_dir is None and data is None:
        raise click.UsageError("give at least one of --labels, --eval, --run or --data")
    path = write_report(out_html, labels_dir=labels_dir, eval_dir=eval_dir, run_dir=run_dir, data=data,
                        title=title, max_videos=max_videos, thumbnails=not no_thumbnails, gallery=gallery)
    click.echo(f"wrote {path}")
