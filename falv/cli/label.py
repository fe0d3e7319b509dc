"""``falv label INPUTS... --model M --out DIR``: label videos, resumably, in several formats."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click

from falv.cli.configfile import config_option, write_resolved_config
from falv.cli.main import EXIT_OK, EXIT_SOME_FAILED, engine_options, hierarchy_options, model_time_options

FORMAT_CHOICES = ("jsonl", "csv", "label-studio", "fiftyone", "activitynet", "webvtt")


def _formats(value: tuple[str, ...]) -> list[str]:
    names = []
    for item in value:
        names.extend(p.strip() for p in item.split(",") if p.strip())
    from falv.labeling.formats import normalize_format

    try:
        return list(dict.fromkeys(normalize_format(n) for n in names))
    except Exception as exc:  # UnknownFormatError: a usage error
        raise click.BadParameter(str(exc), param_hint="--format") from None


@click.command()
@config_option
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", required=True,
              help="falv directory, transformers TimeSformer directory or hub id, or a TimeSformer .pyth file.")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; labels.jsonl there is appended to and makes runs resumable.")
@click.option("--format", "-f", "formats", multiple=True, default=("jsonl",), show_default=True,
              help=f"Output formats, repeatable or comma-separated: {', '.join(FORMAT_CHOICES)}.")
@click.option("--clips", default=None, type=click.IntRange(1),
              help="K windows of the model's clip duration spread over each video (default: such windows side "
                   "by side over the whole video); video scores are their average. With --window: K windows "
                   "of --window seconds.")
@click.option("--crops", default=1, show_default=True, type=click.Choice(["1", "3"]),
              help="Spatial crops per clip (3: along the long side).")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sliding windows of this many seconds instead of the model's clip duration.")
@click.option("--stride", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stride of the sliding windows in seconds (default: --window).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Labels kept per video and window.")
@click.option("--threshold", "background_threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Window scores below this are background when segmenting.")
@click.option("--smoothing", default=1, show_default=True, type=click.IntRange(1),
              help="Moving average over this many windows before segmenting.")
@click.option("--min-duration", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Drop segments shorter than this many seconds.")
@click.option("--refine-edges/--no-refine-edges", default=True, show_default=True,
              help="Put segment edges where the scores of the windows around them cross (a stride finer than "
                   "the window makes them sharper), not half-way between the windows.")
@click.option("--url-mode", type=click.Choice(["path", "local-files", "prefix"]), default="path", show_default=True,
              help="Label Studio tasks' video URL: the path as recorded; Label Studio's local-files URL "
                   "(/data/local-files/?d=<path under --document-root>); or --url-prefix + the path under "
                   "--document-root.")
@click.option("--document-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the videos' URLs are relative to; for local-files, Label Studio's "
                   "LOCAL_FILES_DOCUMENT_ROOT (default /).")
@click.option("--url-prefix", default=None, help="With --url-mode prefix: the URL the videos' relative paths "
                                                  "are appended to (e.g. https://host/videos/).")
@click.option("--embeddings", is_flag=True, help="Also write clip and video embeddings (safetensors).")
@click.option("--thresholds", "class_thresholds", default=None,
              help="Multi-label models: decision thresholds instead of the config's tuned ones: one number for "
                   "every class, or CLASS=T pairs, comma-separated (the other classes keep theirs).")
@model_time_options
@hierarchy_options
@engine_options
@click.option("--engine", "engine_name", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: worker processes and a model thread here; ray: the same stages on a Ray cluster "
                   "(pip install 'falv[ray]'; docs/scaling.md).")
@click.option("--address", default=None,
              help="--engine ray: the Ray cluster to join (default: $RAY_ADDRESS, else a local Ray for this run).")
@click.option("--actors", default=None, type=click.IntRange(1),
              help="--engine ray: model actors (default: one per GPU; without GPUs one per 2 x --actor-cpus cores).")
@click.option("--actor-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="--engine ray: cores per model actor on CPU clusters.")
@click.option("--task-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="--engine ray: cores per planning/decoding task.")
@click.option("--stall-timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              help="--engine ray: seconds without progress after which the videos the cluster has not finished "
                   "are labelled on this machine (default: max(180, 2 x --timeout)).")
@click.option("--no-resume", is_flag=True, help="Label every input again even if labels.jsonl has it.")
@click.option("--retry-failed", is_flag=True,
              help="Try every input that failed before again; by default a resumed run skips inputs that can "
                   "only fail again (not a video, no video stream).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def label(inputs, model, out_dir, formats, clips, crops, window, stride, top_k, background_threshold, smoothing,
          min_duration, refine_edges, url_mode, document_root, url_prefix, embeddings, class_thresholds, clip_seconds,
          frame_selection, temperature, level, max_depth, batch_size, workers, timeout, precision, runtime, device, engine_name, address, actors,
          actor_cpus, task_cpus, stall_timeout, no_resume, retry_failed, quiet) -> int:
    """Label INPUTS (video files, folders, glob patterns, or .txt/.csv lists of paths).

    Writes DIR/labels.jsonl (one record per input, errors included: the newest when a run
    resumes an earlier one) and the other --format files. Exit code 0: all labelled; 1: some inputs failed (they have
    error records); 2: usage error; 3: the run could not start (e.g. bad model).
    """
    from falv.errors import ConfigError
    from falv.export.runtime import check_runtime
    from falv.labeling.engine import LabelOptions, label as run_label
    from falv.labeling.export import export_formats, latest_records
    from falv.labeling.store import record_key
    from falv.labeling.inputs import collect_inputs
    from falv.hub.families import load_model

    names = _formats(formats)
    try:
        options = LabelOptions(clips=clips, crops=int(crops), window=window, stride=stride, top_k=top_k,
                               batch_size=batch_size, workers=workers, timeout=timeout, smoothing=smoothing,
                               min_duration=min_duration, background_threshold=background_threshold,
                               refine_edges=refine_edges, embeddings=embeddings, precision=precision, device=device,
                               runtime=runtime, clip_seconds=clip_seconds, temperature=temperature,
                               frame_selection=frame_selection, level=level, max_depth=max_depth)
        ray_options = None
        if engine_name == "ray":
            from falv.labeling.ray_engine import RayOptions

            ray_options = RayOptions(address=address, actors=actors, actor_cpus=actor_cpus, task_cpus=task_cpus,
                                     stall_s=stall_timeout)
        elif address is not None or actors is not None or stall_timeout is not None:
            raise ConfigError("--address, --actors and --stall-timeout need --engine ray")
        if runtime != "torch":  # a precision or device the runtime lacks: a usage error (torch: checked by the run)
            check_runtime(runtime, precision, device)
    except ConfigError as exc:  # contradictory options: a usage error
        raise click.UsageError(str(exc)) from None
    found = collect_inputs(list(inputs))
    for item, reason in found.problems:
        click.echo(f"skipping {item}: {reason}", err=True)
    if not found.paths:
        raise click.UsageError("no input videos found")
    url_options = _url_options(names, url_mode, document_root, url_prefix, found.paths)
    from falv.processing import FALImageProcessor

    net = load_model(model)
    net.name_or_path = model
    processor = FALImageProcessor.from_model_dir(model)  # preprocessor_config.json where there is one
    if class_thresholds is not None:
        try:
            options = dataclasses.replace(options, thresholds=parse_thresholds(class_thresholds, net.config))
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--thresholds") from None
    if no_resume:
        _set_aside(out_dir)
    write_resolved_config(click.get_current_context(), out_dir, "label")

    show = not quiet and sys.stderr.isatty()
    started = time.monotonic()
    ok = failed = 0
    with click.progressbar(length=len(found.paths), label="labelling", file=sys.stderr,
                           item_show_func=lambda s: s, show_eta=True) if show else _NoBar() as bar:
        for record in run_label(found.paths, net, out_dir=out_dir, options=options, resume=not no_resume,
                                retry_failed=retry_failed, copy_model=False, processor=processor,
                                engine=engine_name, ray_options=ray_options):
            if record.error is None:
                ok += 1
            else:
                failed += 1
                if not quiet:
                    message = record.error.message
                    if record.path not in message:
                        message = f"{record.path}: {message}"
                    click.echo(f"failed: {message}", err=True)
            rate = (ok + failed) / max(time.monotonic() - started, 1e-9)
            bar.update(1, f"{rate:.2f} videos/s")
    unwritable: list[tuple[str, str, str]] = []
    classes = net.config.action_labels
    if level is not None or max_depth is not None:  # a hierarchical model's level: the classes of the records
        classes = net.config.taxonomy.view(level, max_depth)[0]
    written = export_formats(out_dir, names, classes=classes, failures=unwritable, **url_options)
    for path, name, message in unwritable if not quiet else ():
        click.echo(f"failed: {path}: could not be written as {name} ({message})", err=True)
    elapsed = time.monotonic() - started
    skipped = len(found.paths) - ok - failed
    # Inputs that failed in an earlier run of this output folder count as failed too.
    keys = {record_key(p) for p in found.paths}
    failed_total = sum(1 for r in latest_records(out_dir) if r.error is not None and record_key(r.path) in keys)
    if not quiet:
        click.echo(
            f"{ok} labelled, {failed} failed, {skipped} already done, in {elapsed:.1f} s"
            + (f" ({(ok + failed) / elapsed:.2f} videos/s)" if ok + failed else ""),
            err=True,
        )
        for name, path in written.items():
            click.echo(f"{name}: {path}")
    return EXIT_SOME_FAILED if failed_total or unwritable else EXIT_OK


def parse_thresholds(text: str, config) -> tuple[float, ...]:
    """``--thresholds``: ``0.3`` (every class) or ``cat=0.3,dog=0.6`` (those classes; the others
    keep the config's thresholds, 0.5 when it has none) -> one threshold per class."""
    from falv.errors import ConfigError

    text = text.strip()
    if not config.is_multilabel:
        raise ConfigError("thresholds apply to multi-label models only")
    current = list(config.thresholds or [0.5] * config.num_labels)

    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"cannot read thresholds {text!r}: give a number or CLASS=NUMBER pairs") from None

    if "=" not in text:
        return tuple([number(text)] * config.num_labels)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.rpartition("=")
        if name not in config.label2id:
            raise ConfigError(f"unknown class {name!r}; the model's classes: {', '.join(config.labels[:10])}"
                              + (" ..." if config.num_labels > 10 else ""))
        current[config.label2id[name]] = number(value)
    return tuple(current)


def _url_options(names: list[str], url_mode: str, document_root: Path | None, url_prefix: str | None,
                 paths: list[str]) -> dict[str, object]:
    """The Label Studio URL options, checked before any video is labelled (usage errors)."""
    from falv.labeling.formats import FormatError, video_url

    if url_mode == "prefix" and not url_prefix:
        raise click.BadParameter("--url-mode prefix needs --url-prefix", param_hint="--url-prefix")
    if url_prefix and url_mode != "prefix":
        raise click.BadParameter("--url-prefix is only used with --url-mode prefix", param_hint="--url-prefix")
    if document_root is not None and url_mode == "path":
        raise click.BadParameter("--document-root is only used with --url-mode local-files or prefix",
                                 param_hint="--document-root")
    if url_mode == "path":
        return {}
    if "label-studio" not in names:
        raise click.BadParameter("--url-mode only changes the label-studio format: add --format label-studio",
                                 param_hint="--url-mode")
    options: dict[str, object] = {"url_mode": url_mode, "document_root": str(document_root or "/"),
                                  "url_prefix": url_prefix}
    for path in paths:  # every video must lie under the root, or its task would have no URL
        try:
            video_url(path, **options)  # type: ignore[arg-type]
        except FormatError as exc:
            raise click.BadParameter(str(exc), param_hint="--document-root") from None
    return options


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *_):
        pass


def _set_aside(out_dir: Path) -> None:
    """--no-resume: keep the previous labels.jsonl under a new name rather than deleting it."""
    from falv.labeling.store import LABELS_NAME

    old = out_dir / LABELS_NAME
    if old.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = out_dir / f"labels.{stamp}.jsonl"
        old.rename(target)
        click.echo(f"previous {LABELS_NAME} kept as {target.name}", err=True)
