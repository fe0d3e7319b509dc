"""``falv serve --model M``: a labeling service with a review page and Label Studio's ML backend."""

from __future__ import annotations

from pathlib import Path

import click

from falv.cli.main import engine_options


@click.command()
@click.option("--model", "-m", required=True,
              help="falv directory, transformers TimeSformer directory or hub id, or a TimeSformer .pyth file.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Jobs, uploads and corrections (default: ~/.cache/falv/serve).")
@click.option("--allow-root", "allow_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder whose videos jobs may name by path (repeatable); other paths get 403.")
@click.option("--token", default=None, envvar="FALV_SERVE_TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on /v1 requests (env FALV_SERVE_TOKEN).")
@click.option("--basic-auth", default=None, envvar="FALV_SERVE_BASIC_AUTH", metavar="USER:PASSWORD",
              help="HTTP Basic credentials Label Studio must send to /setup, /predict and /webhook.")
@click.option("--max-upload-mb", default=2048.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--max-queue", default=10_000, show_default=True, type=click.IntRange(1),
              help="Unfinished jobs accepted before new ones get 429.")
@engine_options
@click.option("--train-epochs", type=click.IntRange(1), default=None,
              help="Epochs of the fine-tune Label Studio's START_TRAINING starts (default: falv train's).")
@click.option("--train-on-annotations", is_flag=True,
              help="New annotations in Label Studio (webhook) start a fine-tune too.")
@click.option("--allow-stream", "allow_streams", multiple=True, metavar="PREFIX",
              help="Live sources /v1/stream may open: URLs or devices starting with PREFIX (repeatable), "
                   "e.g. udp://127.0.0.1:5000 or /dev/video0; paths under --allow-root are allowed anyway.")
@click.option("--max-streams", default=4, show_default=True, type=click.IntRange(1),
              help="Live streams open at once (each loads the model once more).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(model, host, port, data_dir, allow_roots, token, basic_auth, max_upload_mb, max_queue, batch_size,
          workers, timeout, precision, runtime, device, train_epochs, train_on_annotations, allow_streams, max_streams, log_level) -> int:
    """Serve labeling over HTTP: jobs, a review page at /, Label Studio's ML backend.

    Binds 127.0.0.1 unless --host says otherwise (which needs --token). Jobs persist
    in --data-dir: a server killed and started again finishes every job.
    """
    try:
        import uvicorn

        from falv.serve.app import create_app
        from falv.serve.service import LabelService, ServeSettings, default_data_dir
    except ImportError as exc:
        raise click.ClickException(f"falv serve needs the serve extra ({exc.name} is missing): "
                                   "pip install -e '.[serve]'") from None
    from falv.errors import ConfigError

    if basic_auth is not None and ":" not in basic_auth:
        raise click.BadParameter("give USER:PASSWORD", param_hint="--basic-auth")
    try:
        settings = ServeSettings(model=model, host=host, port=port, data_dir=data_dir or default_data_dir(),
                                 allow_roots=tuple(allow_roots), token=token, basic_auth=basic_auth,
                                 max_upload_mb=max_upload_mb, max_queue=max_queue, precision=precision, runtime=runtime,
                                 device=device, batch_size=batch_size, workers=workers, timeout=timeout,
                                 train_epochs=train_epochs, train_on_annotations=train_on_annotations,
                                 allow_streams=tuple(allow_streams), max_streams=max_streams)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    service = LabelService(settings)
    click.echo(f"falv serve: {len(service.labels)} labels, data in {settings.data_dir}, "
               f"http://{host}:{port}/", err=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10)
    return 0
