"""``falv features INPUTS --model M --out DIR``: one feature vector per bucket of every video."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from falv.cli.configfile import config_option, write_resolved_config
from falv.cli.main import EXIT_OK, EXIT_SOME_FAILED, engine_options


@click.command()
@config_option
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", required=True,
              help="Any model falv reads: a falv or transformers directory, a hub id, or a checkpoint file "
                   "(TimeSformer, PySlowFast .pyth/.pkl, pytorchvideo, TSM).")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: features.jsonl (the manifest), embeddings/<video_id>.safetensors, labels.jsonl.")
@click.option("--bucket-seconds", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Seconds of one bucket instead of the model's clip duration (needed for models that record "
                   "none, e.g. TSN/TSM segments over whole videos).")
@engine_options
@click.option("--no-resume", is_flag=True, help="Extract every input again even if the folder has it.")
@click.option("--retry-failed", is_flag=True, help="Retry inputs whose earlier attempt failed for good "
                                                    "(not a video, no video stream).")
@click.option("--quiet", "-q", is_flag=True, help="No per-failure lines and no summary.")
def features(inputs, model, out_dir, bucket_seconds, batch_size, workers, timeout, precision, runtime, device,
             no_resume, retry_failed, quiet):
    """Per-time-segment features of INPUTS (videos or folders): the model's pooled features
    (before its head) of every bucket of its clip duration, the last bucket filled from the last
    frames, with each bucket's start and end seconds (docs/features.md).

    Exit code 0: all extracted; 1: some inputs failed (their manifest lines say why); 2: usage
    error; 3: the run could not start (e.g. bad model).
    """
    from falv.errors import ConfigError
    from falv.hub.families import load_model
    from falv.labeling.features import MANIFEST_NAME, bucket_seconds as model_bucket, extract_features
    from falv.labeling.inputs import collect_inputs
    from falv.labeling.stages import LabelOptions
    from falv.processing import FALImageProcessor

    try:
        options = LabelOptions(batch_size=batch_size, workers=workers, timeout=timeout, precision=precision,
                               runtime=runtime, device=device)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    found = collect_inputs(list(inputs))
    for item, reason in found.problems:
        click.echo(f"skipping {item}: {reason}", err=True)
    if not found.paths:
        raise click.UsageError("no input videos found")
    net = load_model(model)
    net.name_or_path = model
    try:
        seconds = model_bucket(net.config, bucket_seconds)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if no_resume:
        from falv.cli.label import _set_aside

        _set_aside(out_dir)
    write_resolved_config(click.get_current_context(), out_dir, "features")
    started = time.monotonic()
    ok = failed = 0
    for record in extract_features(found.paths, net, out_dir, seconds=seconds, options=options,
                                   resume=not no_resume, retry_failed=retry_failed, copy_model=False,
                                   processor=FALImageProcessor.from_model_dir(model)):
        if record.error is None:
            ok += 1
        else:
            failed += 1
            if not quiet:
                message = record.error.message
                click.echo(f"failed: {message if record.path in message else f'{record.path}: {message}'}", err=True)
    entries = [json.loads(line) for line in (out_dir / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()]
    failed_total = sum(1 for e in entries if e.get("error"))
    if not quiet:
        elapsed = time.monotonic() - started
        click.echo(f"{ok} extracted, {failed} failed, {len(found.paths) - ok - failed} already done, in "
                   f"{elapsed:.1f} s (buckets of {seconds:.3g} s)", err=True)
        click.echo(f"manifest: {out_dir / MANIFEST_NAME}")
    sys.stdout.flush()
    return EXIT_SOME_FAILED if failed_total else EXIT_OK
