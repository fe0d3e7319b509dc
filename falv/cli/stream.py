"""``falv stream SOURCE --model M --window W``: label a live source as its frames arrive."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from falv.cli.main import EXIT_ERROR, EXIT_OK, hierarchy_options, precision_option


@click.command()
@click.argument("source")
@click.option("--model", "-m", required=True,
              help="falv directory, transformers TimeSformer directory or hub id, or a TimeSformer .pyth file.")
@click.option("--window", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Window length in seconds (default: the model's clip duration, from its config's sampling).")
@click.option("--stride", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between window starts (default: --window; must not exceed it).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Labels per window line.")
@click.option("--threshold", "background_threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Window scores below this are background when segmenting.")
@click.option("--smoothing", default=1, show_default=True, type=click.IntRange(1),
              help="Moving average over this many windows before segmenting (a segment's line then comes "
                   "(N-1)//2 windows later).")
@click.option("--min-duration", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Drop segments shorter than this many seconds.")
@click.option("--refine-edges/--no-refine-edges", default=True, show_default=True,
              help="Put segment edges where the scores of the windows around them cross (a stride finer than "
                   "the window makes them sharper), not half-way between the windows.")
@click.option("--crops", default=1, show_default=True, type=click.Choice(["1", "3"]),
              help="Spatial crops per window (3: along the long side).")
@hierarchy_options
@precision_option()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--reconnect/--no-reconnect", default=True, show_default=True,
              help="Reopen a network source that drops, with exponential backoff.")
@click.option("--retries", default=8, show_default=True, type=click.IntRange(0),
              help="Reconnect attempts in a row before giving up (backoff 0.5 s doubling up to 8 s).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for the source to open and for new data (a file being written is "
                   "followed until it stops growing for this long).")
@click.option("--max-lag", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Skip a window whose last frame arrived more than this many seconds before its turn "
                   "(the model cannot keep up); 0 never skips.")
@click.option("--timing", is_flag=True, help="Add model_s (seconds the model took) to each window line.")
def stream(source, model, window, stride, top_k, background_threshold, smoothing, min_duration, refine_edges,
           crops, level, max_depth, precision,
           device, reconnect, retries, timeout, max_lag, timing) -> int:
    """Label SOURCE live: a named pipe or growing file (MPEG-TS...), udp://, rtsp://,
    http(s):// URL or /dev/video* camera.

    Writes one JSON line per event on stdout as it happens: "window" lines
    (start, end in stream seconds, labels), "segment" lines when a segment closes,
    "warning" lines (a skipped window, decoder damage, a reconnect), and a last
    "end" line. Ctrl-C ends cleanly: open segments are flushed, exit code 0.
    Exit code 2: usage error or a source that does not exist; 3: the source cannot
    be read (or is lost for good) or the model cannot run.
    """
    from falv.errors import ConfigError
    from falv.labeling.stages import LabelOptions
    from falv.video.live import StreamSourceError, source_kind

    try:
        options = LabelOptions(window=window, stride=stride if window is not None else None, top_k=top_k, crops=int(crops), smoothing=smoothing,
                               min_duration=min_duration, background_threshold=background_threshold,
                               refine_edges=refine_edges, precision=precision, device=device, level=level,
                               max_depth=max_depth)
        source_kind(source)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except StreamSourceError as exc:  # no such file, a folder, an unknown URL scheme: a usage error
        raise click.BadParameter(str(exc), param_hint="SOURCE") from None
    from falv.labeling.stream import label_stream  # torch: imported once the arguments are known good
    from falv.hub.families import load_model

    from falv.processing import FALImageProcessor

    net = load_model(model)
    net.name_or_path = model
    processor = FALImageProcessor.from_model_dir(model)  # preprocessor_config.json where there is one

    stop = threading.Event()

    def on_sigint(_signum, _frame) -> None:  # first Ctrl-C: end cleanly; a second one: the default
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    code = EXIT_OK
    try:
        events = label_stream(source, net, window=window, stride=stride, options=options, timeout=timeout,
                              reconnect=reconnect, retries=retries, max_lag=max_lag or None, stop=stop,
                              timing=timing, copy_model=False, processor=processor)
        out = sys.stdout
        for event in events:
            try:
                out.write(json.dumps(event) + "\n")
                out.flush()
            except BrokenPipeError:  # the reader of our stdout went away: stop reading the source
                stop.set()
                events.close()
                return EXIT_OK
            if event["type"] == "end" and event["reason"] == "source_lost":
                click.echo(f"Error: {event.get('message', 'the source was lost')}", err=True)
                code = EXIT_ERROR
    finally:
        signal.signal(signal.SIGINT, previous)
    return code
