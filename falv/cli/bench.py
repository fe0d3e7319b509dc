"""``falv bench``: model speed per clip against the machine's matmul peak and transformers' TimeSformer.

The work is done by :func:`run_bench` (also used by ``benchmarks/model_bench.py``);
the command only parses options and prints :func:`format_bench`.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from falv.cli.main import precision_option, runtime_option
from falv.config import ATTENTION_TYPES

# Schemes that transformers' TimeSformer implements (the others have no public counterpart).
_TRANSFORMERS_SCHEMES = ("divided_space_time", "space_only", "joint_space_time")


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class _CpuLoad:
    """Share of the machine's CPU time used by *other* processes while timing (Linux only)."""

    def __enter__(self) -> _CpuLoad:
        self.value: float | None = None
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self._start and end:
            total = end[0] - self._start[0]
            busy = end[1] - self._start[1]
            mine = end[2] - self._start[2]
            if total > 0:
                self.value = max(0.0, (busy - mine) / total)

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            with open("/proc/self/stat", encoding="utf-8") as fh:
                s = fh.read().rsplit(")", 1)[1].split()
            return sum(v[:8]), sum(v[:8]) - v[3] - v[4], int(s[11]) + int(s[12])
        except (OSError, IndexError, ValueError):
            return None


def _time_path(fn: Callable[[Any], Any], clips: list[Any], warmup: int, repeats: int, device: Any) -> dict[str, Any]:
    """Run ``fn`` on ``warmup`` then ``repeats`` inputs; seconds per call and the timed outputs."""
    from falv.inference import synchronize

    for i in range(warmup):
        fn(clips[i % len(clips)])
    times, outputs = [], []
    with _CpuLoad() as load:
        for i in range(repeats):
            x = clips[(warmup + i) % len(clips)]
            synchronize(device)
            t0 = time.perf_counter()
            out = fn(x)
            synchronize(device)
            times.append(time.perf_counter() - t0)
            outputs.append(out.float().cpu())
    return {"times": times, "outputs": outputs, "other_cpu_load": load.value}


def _timesformer_twin(config: Any, directory: Path) -> Any:
    """A random-init transformers TimeSformer of the same size, saved to ``directory``."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    ts_config = TimesformerConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        num_frames=config.num_frames,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias,
        attention_type=config.attention_type,
        num_labels=config.num_labels,
    )
    model = TimesformerForVideoClassification(ts_config).eval()
    model.save_pretrained(directory)
    return model


def run_bench(
    preset: str = "base",
    attention_type: str = "divided_space_time",
    batch_size: int = 1,
    precision: str = "auto",
    repeats: int = 3,
    warmup: int = 1,
    transformers: bool = True,
    device: str = "auto",
    num_threads: int | None = None,
    num_labels: int = 400,
    seed: int = 0,
    peak_sizes: tuple[int, ...] = (2048, 3072),
    log: Callable[[str], None] | None = None,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Time falv (its chosen precision, fp32, bf16 autocast) and, if installed, transformers'
    TimeSformer (fp32, bf16 autocast) with the same weights on the same clips.
    ``runtime`` onnxruntime or openvino: the model's ONNX export in that runtime at ``precision``
    takes the place of falv's reduced-precision paths (falv fp32 stays the reference).

    Returns a JSON-ready dict: machine, matmul peak, FLOPs, one row per path (ms per
    clip best and median over ``repeats``, GFLOP/s, % of peak, ratios) and the
    agreement of falv's reduced precision with its fp32 logits.
    """
    import torch

    from falv.inference import (
        choose_device,
        default_num_threads,
        device_supports_bf16,
        matmul_peak,
        precision_name,
        prepare_for_inference,
        resolve_precision,
    )
    from falv.model.flops import count_flops
    from falv.model.presets import preset as make_preset
    from falv.model.transformer import FALForVideoClassification

    say = log or (lambda _msg: None)
    repeats = max(1, int(repeats))
    dev = choose_device(device)
    rt_precision = None
    if runtime != "torch":
        from falv.export.runtime import check_runtime

        rt_precision = check_runtime(runtime, precision, device)
        dtype = torch.float32  # the torch side: the fp32 reference (and transformers) only
    else:
        dtype = resolve_precision(precision, dev)
    threads = num_threads or default_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = make_preset(preset, attention_type=attention_type, id2label={i: f"LABEL_{i}" for i in range(num_labels)})
    flops = count_flops(config, batch_size=batch_size)

    # -- models: a TimeSformer twin and falv loaded from its save, or falv alone ------------------
    with_ts = transformers and attention_type in _TRANSFORMERS_SCHEMES
    ts_note = None
    if transformers and not with_ts:
        ts_note = f"transformers' TimeSformer has no {attention_type} scheme"
    ts = None
    if with_ts:
        try:
            import transformers as _transformers  # noqa: F401
        except ImportError:
            with_ts, ts_note = False, "transformers is not installed"
    if with_ts:
        say("building transformers TimeSformer and loading its weights into falv")
        with tempfile.TemporaryDirectory() as tmp:
            ts = _timesformer_twin(config, Path(tmp)).to(dev)
            fal = FALForVideoClassification.from_pretrained(tmp)
    else:
        fal = FALForVideoClassification(config)

    gen = torch.Generator().manual_seed(seed + 1)
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    clips = [torch.randn(shape, generator=gen) for _ in range(max(1, warmup + repeats))]

    # the float dtype of the peak (int8 and fp32 runs are compared with the bf16 peak where bf16
    # is native; without native bf16 its "peak" is an emulation that takes minutes to measure
    # and means nothing, so the fp32 peak stands in)
    native = device_supports_bf16(dev)
    peak_dtype = torch.bfloat16 if dtype in (torch.float32, torch.int8) else dtype
    if peak_dtype == torch.bfloat16 and not native:
        peak_dtype = torch.float32
    say(f"measuring the {precision_name(peak_dtype)} matmul peak")
    peak = matmul_peak(peak_dtype, sizes=peak_sizes, device=dev)

    # -- paths -----------------------------------------------------------------------------------
    paths: list[tuple[str, Callable[[Any], Any]]] = []
    tmp_export = None
    if rt_precision is not None:
        from falv.export.onnx import export_model
        from falv.export.runtime import prepare_runtime

        say(f"exporting to ONNX for {runtime}")
        tmp_export = tempfile.TemporaryDirectory(prefix="falv-bench-export-")
        export_model(fal, tmp_export.name)
        rt = prepare_runtime(tmp_export.name, runtime, rt_precision, device, num_threads=threads, log=say)
        main_name = f"{runtime} {rt_precision}" + (f" ({rt.method})" if rt.method else "")
        paths.append((main_name, lambda x: rt.predict(x)[0]))
    fp32_runner = prepare_for_inference(copy.deepcopy(fal) if dtype != torch.float32 else fal, dev, "fp32")
    if rt_precision is None:
        main_name = f"falv {precision_name(dtype)}"
    if dtype != torch.float32:
        main = prepare_for_inference(copy.deepcopy(fal), dev, precision_name(dtype))
        main_name += f" ({main.mode}{', packed' if main.packed_linears else ''})"
        paths.append((main_name, lambda x: main.predict(x)[0]))
        if dtype != torch.int8:  # int8 has no autocast counterpart
            autocast = prepare_for_inference(copy.deepcopy(fal), dev, precision_name(dtype), bf16_mode="autocast",
                                             pack=False)
            paths.append((f"falv {precision_name(dtype)} autocast", lambda x: autocast.predict(x)[0]))
    paths.append(("falv fp32", lambda x: fp32_runner.predict(x)[0]))
    if ts is not None:
        ac_dtype = peak_dtype
        ac_name = precision_name(ac_dtype)

        def ts_fp32(x: Any) -> Any:
            with torch.inference_mode():
                return ts(pixel_values=x.to(dev)).logits

        def ts_autocast(x: Any) -> Any:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=ac_dtype):
                return ts(pixel_values=x.to(dev)).logits

        paths.append(("transformers fp32", ts_fp32))
        paths.append((f"transformers {ac_name} autocast", ts_autocast))

    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[Any]] = {}
    for name, fn in paths:
        say(f"timing {name}")
        res = _time_path(fn, clips, warmup, repeats, dev)
        best, median = min(res["times"]), statistics.median(res["times"])
        outputs[name] = res["outputs"]
        rows.append({
            "name": name,
            "ms_per_clip": 1000 * best / batch_size,
            "ms_per_clip_median": 1000 * median / batch_size,
            "gflop_per_clip": flops / batch_size / 1e9,
            "gflops": flops / best / 1e9,
            "other_cpu_load": res["other_cpu_load"],
        })
    # The peak again after the model runs; the better of the two counts (a busy machine only lowers it).
    peak_after = matmul_peak(peak_dtype, sizes=peak_sizes, device=dev)
    if peak_after["gflops"] > peak["gflops"]:
        peak = peak_after
    for row in rows:
        row["pct_of_peak"] = 100 * row["gflops"] / peak["gflops"]
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        for ref in ("transformers fp32", f"transformers {precision_name(peak_dtype)} autocast"):
            if ref in by_name:
                row[f"speedup_vs_{ref.replace(' ', '_')}"] = by_name[ref]["ms_per_clip"] / row["ms_per_clip"]

    # -- agreement -------------------------------------------------------------------------------
    def compare(a: list[Any], b: list[Any]) -> dict[str, Any]:
        la, lb = torch.cat(a), torch.cat(b)
        return {
            "clips": int(la.shape[0]),
            "top1_agreement": float((la.argmax(-1) == lb.argmax(-1)).float().mean()),
            "max_abs_logit_diff": float((la - lb).abs().max()),
        }

    agreement = {}
    if dtype != torch.float32 or rt_precision is not None:
        agreement[f"{main_name} vs falv fp32"] = compare(outputs[main_name], outputs["falv fp32"])
    if tmp_export is not None:
        tmp_export.cleanup()
    if ts is not None:
        agreement["falv fp32 vs transformers fp32"] = compare(outputs["falv fp32"], outputs["transformers fp32"])

    return {
        "preset": preset,
        "attention_type": attention_type,
        "clip": f"{config.num_frames}x{config.image_size}",
        "batch_size": batch_size,
        "precision": rt_precision or precision_name(dtype),
        "runtime": runtime,
        "device": str(dev),
        "machine": {
            "cpu": _cpu_model_name(),
            "cores": default_num_threads(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "peak": {"dtype": precision_name(peak_dtype), "gflops": peak["gflops"], "shape": f"{peak['size']}^3 square matmul",
                 "per_size": {str(k): v for k, v in peak["per_size"].items()}},
        "gflop_per_clip": flops / batch_size / 1e9,
        "repeats": repeats,
        "warmup": warmup,
        "rows": rows,
        "agreement": agreement,
        "notes": [ts_note] if ts_note else [],
    }


def format_bench(result: dict[str, Any]) -> str:
    """The result of :func:`run_bench` as a fixed-width table."""
    m, p = result["machine"], result["peak"]
    lines = [
        f"falv bench: preset {result['preset']} ({result['attention_type']}, {result['clip']}, batch {result['batch_size']}) "
        f"on {result['device']}: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)",
        f"{p['dtype']} matmul peak: {p['gflops']:.0f} GFLOP/s ({p['shape']}, best of 5 runs per size, before and after the model runs)",
        f"model: {result['gflop_per_clip']:.1f} GFLOP per clip (torch counter, multiply-add = 2 FLOPs); "
        f"best of {result['repeats']} runs after {result['warmup']} warm-up",
        "",
    ]
    ratio_keys = [k for k in (result["rows"][0] if result["rows"] else {}) if k.startswith("speedup_vs_")]
    head = f"{'path':34} {'ms/clip':>9} {'median':>9} {'GFLOP':>7} {'GFLOP/s':>8} {'%peak':>6}"
    for key in ratio_keys:
        label = key.removeprefix("speedup_vs_transformers_").replace("_", " ")
        head += f" {'x vs TS ' + label:>18}"
    lines.append(head)
    for row in result["rows"]:
        line = (f"{row['name']:34} {row['ms_per_clip']:>9.1f} {row['ms_per_clip_median']:>9.1f} {row['gflop_per_clip']:>7.1f} "
                f"{row['gflops']:>8.1f} {row['pct_of_peak']:>6.1f}")
        for key in ratio_keys:
            line += f" {row[key]:>18.2f}"
        lines.append(line)
    loads = [r["other_cpu_load"] for r in result["rows"] if r.get("other_cpu_load") is not None]
    if loads and max(loads) > 0.05:
        lines.append(f"warning: other processes used up to {100 * max(loads):.0f}% of the CPU while timing; "
                     "figures are pessimistic")
    if result["agreement"]:
        lines.append("")
        for name, a in result["agreement"].items():
            lines.append(f"agreement {name}: top-1 {100 * a['top1_agreement']:.0f}% of {a['clips']} clips, "
                         f"max |logit diff| {a['max_abs_logit_diff']:.4f}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def run_family_bench(family_name: str, preset: str, batch_size: int = 1, precision: str = "auto",
                     repeats: int = 3, warmup: int = 1, num_labels: int = 400, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time a preset of any model family (random weights) through falv's inference path: fp32 and
    ``precision`` (its default: bf16 where the CPU has it natively), ms per clip, GFLOP per clip and
    parameters. The reference implementations (transformers, pytorchvideo, TSM's code) are timed
    beside falv in ``benchmarks/families.py``, which needs the test oracles."""
    import torch

    from falv.hub.families import family
    from falv.inference import choose_device, precision_name, prepare_for_inference, resolve_precision
    from falv.model.flops import count_flops

    say = log or (lambda _msg: None)
    fam = family(family_name)
    if not fam.presets or preset not in fam.presets:
        from falv.errors import ConfigError

        raise ConfigError(f"{family_name} has no preset {preset!r}; presets: {', '.join(fam.presets or {})}")
    torch.manual_seed(seed)
    config = fam.preset(preset, id2label={i: f"LABEL_{i}" for i in range(num_labels)})
    model = fam.model_class(config).eval()
    flops = count_flops(config, batch_size=batch_size, model_class=fam.model_class)
    dev = choose_device("auto")
    dtype = resolve_precision(precision, dev)
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    gen = torch.Generator().manual_seed(seed + 1)
    clips = [torch.randn(shape, generator=gen) for _ in range(max(1, warmup + repeats))]
    runners = [("falv fp32", prepare_for_inference(copy.deepcopy(model), dev, "fp32"))]
    if dtype != torch.float32:
        runners.insert(0, (f"falv {precision_name(dtype)}", prepare_for_inference(copy.deepcopy(model), dev,
                                                                                  precision_name(dtype))))
    rows = []
    for name, runner in runners:
        say(f"timing {name}")
        res = _time_path(lambda x, r=runner: r.predict(x)[0], clips, warmup, repeats, dev)
        best = min(res["times"])
        rows.append({"name": name, "ms_per_clip": 1000 * best / batch_size,
                     "ms_per_clip_median": 1000 * statistics.median(res["times"]) / batch_size,
                     "gflops": flops / best / 1e9, "other_cpu_load": res["other_cpu_load"],
                     "folded_batch_norms": runner.options.get("folded_batch_norms"),
                     "memory_format": runner.options.get("memory_format")})
    return {"family": family_name, "preset": preset, "clip": f"{config.num_frames}x{config.image_size}",
            "batch_size": batch_size, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop_per_clip": flops / batch_size / 1e9, "device": str(dev), "rows": rows,
            "machine": {"cpu": _cpu_model_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}}


def format_family_bench(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"falv bench: {result['family']} {result['preset']} ({result['clip']}, batch {result['batch_size']}, "
             f"{result['params_m']:.1f} M parameters, {result['gflop_per_clip']:.1f} GFLOP per clip) on "
             f"{result['device']}: {m['cpu']}, torch {m['torch']} ({m['torch_threads']} threads)", "",
             f"{'path':16} {'ms/clip':>9} {'median':>9} {'GFLOP/s':>8}"]
    for row in result["rows"]:
        lines.append(f"{row['name']:16} {row['ms_per_clip']:>9.1f} {row['ms_per_clip_median']:>9.1f} {row['gflops']:>8.1f}")
    lines.append("")
    lines.append("Against the reference implementation (same weights, same clips): python benchmarks/families.py")
    return "\n".join(lines)


@click.command()
@click.option("--preset", default=None, help="Model preset (falv presets lists them); default: base, or the "
                                             "family's first preset with --family.")
@click.option("--family", "family_name", default="fal", show_default=True,
              help="Model family: fal (against transformers' TimeSformer), or another family's preset through "
                   "falv's inference path (falv presets --family all lists them).")
@click.option("--attention", "attention_type", type=click.Choice(ATTENTION_TYPES), default="divided_space_time",
              show_default=True, help="Attention scheme.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=1, show_default=True, help="Clips per forward pass.")
@precision_option("falv's precision; auto = bf16 where the device supports it natively.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs per path (best is reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed runs per path first.")
@click.option("--transformers/--no-transformers", "with_transformers", default=True, show_default=True,
              help="Also time transformers' TimeSformer with the same weights.")
@runtime_option("What runs falv's model: torch, or its ONNX export in onnxruntime or openvino "
                "(timed against falv fp32 and transformers; docs/export.md).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: one per core).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the results to this JSON file.")
def bench(preset: str | None, family_name: str, attention_type: str, batch_size: int, precision: str, repeats: int,
          warmup: int, with_transformers: bool, runtime: str, device: str, num_threads: int | None,
          json_path: str | None) -> None:
    """Time one forward pass per clip: ms, GFLOP, GFLOP/s against the measured matmul peak, vs transformers;
    with --family, any model family's preset through falv's inference path."""
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if family_name != "fal":
        from falv.errors import FalvError
        from falv.hub.families import family

        try:
            fam = family(family_name)
            name = preset or next(iter(fam.presets or {}), None)
            if name is None or name not in fam.presets:
                raise FalvError(f"{family_name} has no preset {name!r}; presets: {', '.join(fam.presets or {}) or 'none'}")
        except FalvError as exc:  # an unknown family or preset: a usage error
            raise click.BadParameter(str(exc), param_hint="--family/--preset") from None
        result = run_family_bench(family_name, name, batch_size, precision, repeats, warmup, log=say)
        click.echo(format_family_bench(result))
    else:
        from falv.model.presets import PRESETS

        preset = preset or "base"
        if preset not in PRESETS:
            raise click.BadParameter(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}",
                                     param_hint="--preset")
        result = run_bench(preset, attention_type, batch_size, precision, repeats, warmup, with_transformers, device,
                           num_threads, log=say, runtime=runtime)
        click.echo(format_bench(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
