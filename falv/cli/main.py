"""Entry point of the ``falv`` command.

Commands are loaded lazily (``falv --help`` does not import torch), and every
:class:`falv.errors.FalvError` becomes one clear line on stderr with exit code
:data:`EXIT_USAGE` or the command's own code, never a traceback; any other exception
(a bug) is one line too, with exit code :data:`EXIT_ERROR` (``FALV_DEBUG=1`` shows
its traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from falv import __version__
from falv.errors import FalvError

#: Exit codes shared by every command (documented in the README).
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

#: falv.inference.PRECISIONS, repeated here so that ``--help`` does not import torch
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")


def _check_preset(_ctx: Any, _param: Any, value: str | None) -> str | None:
    from falv.model.presets import PRESETS

    if value is not None and value not in PRESETS:
        raise click.BadParameter(f"unknown preset {value!r}; valid presets: {', '.join(PRESETS)}")
    return value


def preset_option(default: str, help: str) -> Any:
    """The ``--preset`` option: an unknown name is a usage error (exit code 2)."""
    return click.option("--preset", default=default, show_default=True, help=help, callback=_check_preset)


def precision_option(help: str = "auto: bf16 on CPUs and GPUs that support it, else fp32.") -> Any:
    """The ``--precision`` option of the commands that run a model."""
    return click.option(
        "--precision", default="auto", show_default=True, type=click.Choice(PRECISION_CHOICES),
        help=help + " int8: CPU only, opt-in, int8 linears in the transformer blocks (faster; check its "
        "agreement on your model, docs/performance.md).",
    )

#: falv.export.runtime.RUNTIMES, repeated here so that ``--help`` does not import the runtimes
RUNTIME_CHOICES = ("torch", "onnxruntime", "openvino")


def runtime_option(help: str = "What runs the model: torch (falv's own path), or its ONNX export in "
                               "onnxruntime or openvino (falv[export]; exported once and cached, or taken "
                               "from a falv export folder given as --model; docs/export.md).") -> Any:
    """The ``--runtime`` option of the commands that run a model (falv.export.runtime.prepare_runtime)."""
    return click.option("--runtime", default="torch", show_default=True, type=click.Choice(RUNTIME_CHOICES),
                        help=help)


def engine_options(fn: Any) -> Any:
    """The options of the commands that run the labeling engine (label, evaluate, serve):
    --batch-size, --workers, --timeout, --precision, --runtime, --device."""
    for option in reversed([
        click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1), help="Clips per model call."),
        click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Decoding processes."),
        click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
                     help="Seconds a decoding task may take before the video is reported as failed."),
        precision_option(),
        runtime_option(),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    ]):
        fn = option(fn)
    return fn


def model_time_options(fn: Any) -> Any:
    """Overrides of what the model's config says about time and scores (label, evaluate):
    --clip-seconds (window duration), --frame-selection (where a window's frames go) and
    --temperature (score calibration)."""
    for option in reversed([
        click.option("--clip-seconds", default=None, type=click.FloatRange(min=0, min_open=True),
                     help="Seconds one clip of the model spans, instead of its config's sampling "
                          "(e.g. 8.53 for 8 frames 32 apart at 30 fps). Windows have this duration."),
        click.option("--frame-selection", default=None, type=click.Choice(["uniform", "key-moments"]),
                     help="Where a window's frames go: one per equal part of it, or key-moments: more where "
                          "the picture changes (cuts, motion), in order, spacing bounded; decodes 5 "
                          "candidates per frame. Default: as the model was trained (its config's sampling)."),
        click.option("--temperature", default=None, type=click.FloatRange(min=0, min_open=True),
                     help="Scores are softmax/sigmoid(logits / T); default: the config's fitted "
                          "temperature; 1 gives the raw scores."),
    ]):
        fn = option(fn)
    return fn


def hierarchy_options(fn: Any) -> Any:
    """--level and --max-depth: which level of a hierarchical model's taxonomy to report
    (label, evaluate, serve's defaults are the leaves)."""
    for option in reversed([
        click.option("--level", default=None, type=click.IntRange(1),
                     help="Hierarchical models: report the taxonomy's nodes this deep (1: the top), their "
                          "scores the sums of their leaves'. Default: the leaves."),
        click.option("--max-depth", default=None, type=click.IntRange(1),
                     help="Hierarchical models: cut every leaf's path to this many names (the whole tree, no "
                          "deeper than this). Default: the leaves."),
    ]):
        fn = option(fn)
    return fn


# command name -> "module:function"; each module holds one click command.
COMMANDS = {
    "convert": "falv.cli.convert:convert",
    "export": "falv.cli.export:export",
    "label": "falv.cli.label:label",
    "stream": "falv.cli.stream:stream",
    "bench": "falv.cli.bench:bench",
    "presets": "falv.cli.presets:presets",
    "probe": "falv.cli.probe:probe",
    "synth": "falv.cli.synth:synth",
    "train": "falv.cli.train:train",
    "evaluate": "falv.cli.evaluate:evaluate",
    "features": "falv.cli.features:features",
    "explain": "falv.cli.explain:explain",
    "report": "falv.cli.report:report",
    "serve": "falv.cli.serve:serve",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="falv")
def cli() -> None:
    """falv: label folders of videos with a FAL video transformer."""


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="falv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except FalvError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:  # disk full, permissions, a file where a folder should be, ...
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("FALV_DEBUG"):
            raise
        click.echo(f"Error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                   "this is a bug in falv: please report it (FALV_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
