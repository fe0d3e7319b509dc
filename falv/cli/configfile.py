"""``--config FILE``: a command's options from a YAML or JSON file, in sections.

The file holds a command's options under their flag names (``batch_size`` or
``batch-size`` for ``--batch-size``), grouped in sections (``model``, ``data``,
``training``, ``augmentation``, ``scheduler`` for ``falv train``), e.g.::

    model: {preset: small, attention: divided_space_time}
    data: {data: videos/, val_fraction: 0.2}
    training: {epochs: 30, batch_size: 8}
    augmentation: {flip: false, color_jitter: 0.2}
    scheduler: {scheduler: step, step_epochs: 10}

Flags given on the command line override the file (the file's values become click's
defaults through ``ctx.default_map``); an unknown section or option is a usage error that
lists the valid ones; ``null`` means the option's default. After the options are resolved,
:func:`write_resolved_config` writes every one of them, in the same sections and the same
format, into the output folder (``config.yaml`` or ``config.json``), so that
``--config OUT/config.yaml`` repeats the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from falv.hub.io import atomic_write_text

#: command -> (section -> option keys, the section of every other option). Options a command
#: gains later land in its default section until they are placed here.
SECTIONS: dict[str, tuple[dict[str, tuple[str, ...]], str]] = {
    "train": ({
        "model": ("preset", "attention", "init", "freeze_backbone", "frames", "image_size", "patch_size", "drop_path"),
        "data": ("data", "val", "val_fraction", "split", "untrimmed", "untrimmed_subset", "untrimmed_window",
                 "untrimmed_stride", "workers", "cache", "cache_gb"),
        "augmentation": ("scale", "flip", "color_jitter", "rotate", "mixup", "cutmix"),
        "scheduler": ("warmup_epochs", "scheduler", "min_lr", "step_epochs", "step_gamma", "plateau_patience",
                      "plateau_factor"),
    }, "training"),
    "label": ({
        "model": ("model", "precision", "runtime", "device", "batch_size", "workers", "timeout"),
        "data": ("inputs",),
        "output": ("out", "format", "embeddings", "url_mode", "document_root", "url_prefix"),
    }, "labeling"),
    "features": ({
        "model": ("model", "precision", "runtime", "device", "batch_size", "workers", "timeout"),
        "data": ("inputs",),
        "output": ("out",),
    }, "features"),
    "evaluate": ({
        "model": ("model", "precision", "runtime", "device", "batch_size", "workers", "timeout"),
        "data": ("data", "split", "untrimmed", "untrimmed_subset"),
        "output": ("out",),
    }, "evaluation"),
}
#: Options that describe one invocation, not a run: never read from or written to the file.
PER_INVOCATION = {"config", "resume", "no_resume", "quiet", "help"}
FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def option_key(param: click.Parameter) -> str:
    """The file key of a parameter: its long flag name with underscores (``--top-k`` -> ``top_k``)."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        if longs:
            return max(longs, key=len)[2:].replace("-", "_")
    return param.name or ""


def command_keys(command: click.Command, name: str) -> dict[str, tuple[click.Parameter, str]]:
    """``{file key: (parameter, section)}`` for every parameter of ``command`` a file may set."""
    sections, default = SECTIONS[name]
    placed = {key: section for section, keys in sections.items() for key in keys}
    out = {}
    for param in command.params:
        key = option_key(param)
        if param.name in PER_INVOCATION or key in PER_INVOCATION:
            continue
        out[key] = (param, placed.get(key, default))
    return out


def section_names(name: str) -> list[str]:
    sections, default = SECTIONS[name]
    return [*sections, default]


def read_config_file(path: Path) -> tuple[dict[str, Any], str]:
    """The file's mapping and its format (``yaml`` or ``json``, from the extension)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise click.BadParameter(f"{path}: a configuration file ends in .yaml, .yml or .json", param_hint="--config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from None
    try:
        if fmt == "json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError: one line with the position
        detail = " ".join(str(exc).split())
        raise click.BadParameter(f"{path} is not valid {fmt.upper()}: {detail}", param_hint="--config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of sections, not a {type(data).__name__}",
                                 param_hint="--config")
    return data, fmt


def _normalise(param: click.Parameter, value: Any) -> Any:
    """A file value as the parameter's type expects it from the command line."""
    if isinstance(value, list) and not (param.multiple or param.nargs != 1):
        return ",".join(str(v) for v in value)  # e.g. scale: [0.5, 1.0] -> "0.5,1.0"
    if isinstance(param.type, click.Choice) and not isinstance(value, (str, list, bool)):
        return str(value)  # crops: 3 -> "3"
    return value


def defaults_from_file(command: click.Command, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``{parameter name: value}`` for click's ``default_map``, or a usage error naming the
    unknown or misplaced keys and the valid ones."""
    keys = command_keys(command, name)
    sections = section_names(name)
    defaults: dict[str, Any] = {}
    problems: list[str] = []

    def take(key: str, value: Any, section: str | None) -> None:
        norm = key.replace("-", "_")
        if norm not in keys:
            where = f" in section {section!r}" if section else ""
            problems.append(f"unknown option {key!r}{where}")
            return
        param, home = keys[norm]
        if section is not None and section != home:
            problems.append(f"{key!r} belongs in section {home!r}, not {section!r}")
            return
        if value is not None:
            defaults[param.name] = _normalise(param, value)

    for top, value in data.items():
        if top in sections:
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(f"section {top!r} must be a mapping of options")
                continue
            for key, item in value.items():
                take(str(key), item, top)
        else:
            if str(top).replace("-", "_") not in keys:
                problems.append(f"unknown section or option {top!r}")
                continue
            take(str(top), value, None)  # a flat key outside any section
    if problems:
        valid = "; ".join(f"{s}: {', '.join(k for k, (_p, home) in keys.items() if home == s)}"
                          for s in sections if any(home == s for _p, home in keys.values()))
        raise click.BadParameter(f"{'; '.join(problems)}. Valid sections and options: {valid}",
                                 param_hint="--config")
    return defaults


def _load(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    name = ctx.command.name or ""
    ctx.meta["falv.config_format"] = "yaml"
    if value is None:
        return
    data, fmt = read_config_file(value)
    ctx.meta["falv.config_format"] = fmt
    ctx.default_map = {**(ctx.default_map or {}), **defaults_from_file(ctx.command, name, data)}


def config_option(fn: Any) -> Any:
    """The eager ``--config FILE`` option (YAML or JSON); flags on the command line override it."""
    return click.option(
        "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True,
        expose_value=False, callback=_load,
        help="Options from a YAML or JSON file, in sections (docs/configuration.md); flags given here override "
             "it. The resolved options are written to the output folder as config.yaml (or .json).",
    )(fn)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def resolved_config(ctx: click.Context, name: str) -> dict[str, dict[str, Any]]:
    """Every option of this invocation (command line, file and defaults), by section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in section_names(name)}
    for key, (param, section) in command_keys(ctx.command, name).items():
        if param.name in ctx.params:
            out[section][key] = _plain(ctx.params[param.name])
    return {s: opts for s, opts in out.items() if opts}


def write_resolved_config(ctx: click.Context, folder: Path, name: str) -> Path:
    """Write :func:`resolved_config` to ``folder/config.yaml`` (``.json`` when the options came
    from a JSON file), atomically; returns the path."""
    fmt = ctx.meta.get("falv.config_format", "yaml")
    data = resolved_config(ctx, name)
    if fmt == "json":
        path, text = folder / "config.json", json.dumps(data, indent=2) + "\n"
    else:
        import yaml

        path = folder / "config.yaml"
        text = (f"# falv {name}: the resolved options of this run; repeat it with "
                f"`falv {name} --config {path.name}`\n" + yaml.safe_dump(data, sort_keys=False))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
