"""``falv export MODEL --out DIR``: ONNX (and OpenVINO IR) beside the model's config and preprocessing."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write: model.onnx, export.json and the falv model folder (config, weights, "
                   "preprocessing); it works as --model for every falv command.")
@click.option("--format", "-f", "formats", multiple=True, default=("onnx",), show_default=True,
              help="onnx and/or openvino (repeatable or comma-separated); openvino writes openvino/model.xml "
                   "converted from model.onnx.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write int8 files: model.int8.onnx (ONNX Runtime) and, with --format openvino, "
                   "openvino/model.int8.xml (NNCF). Dynamic / weight-only without --calibrate.")
@click.option("--calibrate", type=click.Path(exists=True, path_type=Path), default=None,
              help="Videos (a folder, files or a list) whose clips calibrate static int8 activation ranges.")
@click.option("--calibration-clips", default=32, show_default=True, type=click.IntRange(1),
              help="At most this many calibration clips (one per video, the engine's preprocessing).")
@click.option("--opset", default=None, type=click.IntRange(14), help="ONNX opset (default: falv's, 17).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def export(model: str, out_dir: Path, formats: tuple[str, ...], quantize: str | None, calibrate: Path | None,
           calibration_clips: int, opset: int | None, quiet: bool) -> None:
    """Export MODEL (a falv folder, TimeSformer folder/hub id/.pyth, or the CNN baseline) for deployment.

    The graph takes pixel_values float32 (batch, frames, 3, size, size) and returns logits and
    embeddings; the batch is dynamic, frames and size are the model's. Labels, frames, size,
    mean/std and the frame sampling are in export.json and in the ONNX metadata (falv.*).
    See docs/export.md. Exit code 2: bad option; 3: the model cannot be read or exported.
    """
    from falv.errors import ConfigError
    from falv.export.onnx import OPSET, _parse_formats, export_model

    try:
        names = _parse_formats(formats)
        if calibrate is not None and quantize is None:
            raise ConfigError("--calibrate needs --quantize int8 (it calibrates the int8 activation ranges)")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    say = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    record = export_model(model, out_dir, formats=names, quantize=quantize, calibrate=calibrate,
                          calibration_limit=calibration_clips, opset=opset or OPSET, log=say)
    for kind, entry in record["files"].items():
        extra = f", {entry['method']}" if entry.get("method") else ""
        click.echo(f"{kind}: {out_dir / entry['file']} ({entry['precision']}{extra})")
    click.echo(f"metadata: {out_dir / 'export.json'} (opset {record['opset']}, {len(record['labels'])} labels, "
               f"{record['num_frames']}x{record['image_size']}, dynamic batch)")
