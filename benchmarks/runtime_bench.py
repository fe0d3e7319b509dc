"""falv's torch path against ONNX Runtime and OpenVINO: ms per clip and agreement, in one run.

Speed (random weights, batch 1, per preset): the model is exported once (``falv.export``,
with int8 files calibrated on ``--calib-clips`` clips) and every path below runs the
same clips, **interleaved**: each round times every path once on that round's clip
(in a rotating order), so load from other processes spreads over all paths alike.

======================  ===========================================================
path                    what runs
======================  ===========================================================
torch fp32/bf16/int8    ``falv.inference.prepare_for_inference`` (falv's own path)
torch fp32-plain        the same with ``pack=False``: plain ``nn.Linear`` (speed only)
onnxruntime fp32        ``model.onnx`` in an ONNX Runtime CPU session
onnxruntime int8        ``model.int8.onnx``: static QDQ int8, calibrated
onnxruntime int8-dyn    dynamic int8 (what ``--runtime onnxruntime --precision int8`` makes
                        on the fly for a model without an int8 export)
openvino fp32/bf16      ``openvino/model.xml``, inference precision f32 / bf16
openvino int8           ``openvino/model.int8.xml``: NNCF post-training int8, calibrated
======================  ===========================================================

A path this machine cannot run (torch int8 without oneDNN's int8 kernels, OpenVINO bf16
without bf16 in its CPU plugin) is listed with the reason. Printed per path: best and
median ms/clip, the ratio to torch fp32 and to torch at the same precision, and the
top-1 agreement / max |logit diff| with torch fp32 on the timed clips (random weights:
margins are tiny, so this shows the numerical distance, not the labelling agreement).

Agreement on a **trained** model (``--model DIR --data DIR``, or ``--train`` to make one
with ``falv synth`` + ``falv train``): ``falv evaluate`` runs once per runtime and
precision (the labeling engine, same clips), and each video's top-1 is compared with
torch fp32 (``benchmarks/precision_agreement.py``'s comparison). The static int8 files
are calibrated on the training split's videos.

Usage::

    python benchmarks/runtime_bench.py --presets base,tiny --repeats 5 --json docs/figures/runtime_bench/run.json
    python benchmarks/runtime_bench.py --presets tiny --model runs/x/best --data data/x
    python benchmarks/runtime_bench.py --presets tiny --train   # train a small model here for the agreement part
    python benchmarks/runtime_bench.py --quick          # tiny, 1 round, random model, generated data (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PATHS = [
    ("torch", "fp32"), ("torch", "fp32-plain"), ("torch", "bf16"), ("torch", "int8"),
    ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "int8-dyn"),
    ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
]
REFERENCE = "torch fp32"
#: Timed only: falv's fp32 before its linears were prepacked (``pack=False``, the plain forward).
SPEED_ONLY = {"torch fp32-plain"}


def _precision_agreement() -> Any:
    name = "falv_bench_precision_agreement"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("precision_agreement.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def machine() -> dict[str, Any]:
    import onnxruntime
    import openvino
    import torch

    from falv.cli.bench import _cpu_model_name
    from falv.inference import cpu_supports_bf16, default_num_threads, int8_available
    from falv.export.onnx import cpu_has_vnni
    from falv.export.runtime import openvino_supports_bf16

    return {"cpu": _cpu_model_name(), "cores": default_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
            "native_bf16": cpu_supports_bf16(), "vnni": cpu_has_vnni(), "torch_int8": int8_available(),
            "openvino_bf16": openvino_supports_bf16()}


def make_runner(runtime: str, precision: str, model: Any, export_dir: Path) -> Any:
    """The runner of one path, or a string saying why this machine cannot run it."""
    from falv.errors import FalvError
    from falv.export.runtime import check_runtime, prepare_runtime

    try:
        if runtime == "torch":
            from falv.inference import prepare_for_inference

            if precision == "fp32-plain":
                return prepare_for_inference(copy.deepcopy(model), "cpu", "fp32", pack=False)
            check_runtime("torch", precision, "cpu")
            return prepare_for_inference(copy.deepcopy(model), "cpu", precision)
        if precision == "int8-dyn":  # the model itself (no int8 files): dynamic int8 made on the fly
            return prepare_runtime(copy.deepcopy(model), runtime, "int8", "cpu")
        return prepare_runtime(export_dir, runtime, precision, "cpu")
    except FalvError as exc:
        return str(exc)


def time_paths(runners: dict[str, Any], clips: list[Any], repeats: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Interleaved timing: ``warmup`` untimed rounds, then ``repeats`` rounds that time every path
    once on the round's clip, the path order rotated by one each round."""
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        clip = clips[r % len(clips)]
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            logits, _ = runners[name].predict(clip)
            elapsed = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(elapsed)
                outputs[name].append(logits.float())
    return {n: {"times": times[n], "outputs": outputs[n]} for n in names}


def speed(preset_name: str, repeats: int, warmup: int, calib_clips: int, log: Any,
          skip: tuple[str, ...] = ()) -> dict[str, Any]:
    import torch

    from falv import FALForVideoClassification, preset
    from falv.export.onnx import export_model

    torch.manual_seed(0)
    config = preset(preset_name, id2label={i: f"LABEL_{i}" for i in range(400)})
    model = FALForVideoClassification(config).eval()
    gen = torch.Generator().manual_seed(1)
    shape = (1, config.num_frames, config.num_channels, config.image_size, config.image_size)
    clips = [torch.randn(shape, generator=gen) for _ in range(max(1, repeats))]
    calibration = [torch.randn(shape, generator=gen) for _ in range(calib_clips)]
    result: dict[str, Any] = {"preset": preset_name, "clip": f"{config.num_frames}x{config.image_size}",
                              "batch": 1, "repeats": repeats, "warmup": warmup, "rows": [], "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="falv-runtime-bench-") as tmp:
        t0 = time.perf_counter()
        log(f"[{preset_name}] exporting (ONNX, OpenVINO IR, int8 calibrated on {calib_clips} clips)")
        export_model(model, tmp, formats=("onnx", "openvino"), quantize="int8", calibrate=calibration)
        result["export_seconds"] = time.perf_counter() - t0
        runners: dict[str, Any] = {}
        for runtime, precision in PATHS:
            name = f"{runtime} {precision}"
            if name in skip:
                result["skipped"][name] = "left out of this run (--skip)"
                continue
            log(f"[{preset_name}] preparing {name}")
            runner = make_runner(runtime, precision, model, Path(tmp))
            if isinstance(runner, str):
                result["skipped"][name] = runner
            else:
                runners[name] = runner
        log(f"[{preset_name}] timing {len(runners)} paths, {repeats} interleaved rounds after {warmup} warm-up")
        timed = time_paths(runners, clips, repeats, warmup)
    ref = torch.cat(timed[REFERENCE]["outputs"])
    ref_ms = 1000 * statistics.median(timed[REFERENCE]["times"])
    medians = {n: 1000 * statistics.median(t["times"]) for n, t in timed.items()}
    for name, t in timed.items():
        out = torch.cat(t["outputs"])
        runtime, precision = name.split(" ", 1)
        torch_same = f"torch {precision.split('-')[0]}"
        result["rows"].append({
            "path": name,
            "ms_best": 1000 * min(t["times"]),
            "ms_median": medians[name],
            "x_vs_torch_fp32": ref_ms / medians[name],
            "x_vs_torch_same_precision": (medians[torch_same] / medians[name]) if torch_same in medians else None,
            "top1_vs_torch_fp32": float((out.argmax(-1) == ref.argmax(-1)).float().mean()),
            "max_abs_logit_diff": float((out - ref).abs().max()),
        })
    return result


def agreement(model: str, data: str, split: str | None, calibrate_split: str | None, out: Path, clips: str,
              log: Any, calibrate_data: str | None = None) -> dict[str, Any]:
    """falv evaluate per runtime and precision on a trained model; top-1 compared with torch fp32."""
    from falv.data.sources import load_source
    from falv.evaluation.runner import evaluate
    from falv.export.onnx import export_model

    pa = _precision_agreement()
    source = load_source(calibrate_data or data, split=calibrate_split)
    calib_dir = out / "calibration.txt"
    calib_dir.parent.mkdir(parents=True, exist_ok=True)
    calib_dir.write_text("\n".join(str(e.path) for e in source.entries[:64]) + "\n")
    export_dir = out / "export"
    log(f"exporting {model} with int8 calibrated on {min(64, len(source.entries))} {calibrate_split} videos")
    export_model(model, export_dir, formats=("onnx", "openvino"), quantize="int8", calibrate=calib_dir,
                 calibration_limit=64)
    result: dict[str, Any] = {"model": model, "data": data, "split": split, "clips": clips, "runs": {},
                              "skipped": {}}
    predictions = {}
    for runtime, precision in PATHS:
        name = f"{runtime} {precision}"
        if name in SPEED_ONLY:
            continue
        prec = "int8" if precision == "int8-dyn" else precision
        target = model if precision == "int8-dyn" else str(export_dir)  # a plain folder: dynamic int8
        log(f"# falv evaluate --runtime {runtime} --precision {prec} ({name})")
        t0 = time.perf_counter()
        try:
            metrics = evaluate(target, data, out / name.replace(" ", "-"), clips=clips, split=split,
                               precision=prec, runtime=runtime)
        except Exception as exc:  # noqa: BLE001 - a path this machine cannot run is reported, not fatal
            from falv.errors import FalvError

            if not isinstance(exc, FalvError):
                raise
            result["skipped"][name] = str(exc)
            continue
        predictions[name] = pa.read_predictions(out / name.replace(" ", "-") / "predictions.jsonl")
        result["runs"][name] = {"top1": metrics["top1"], "num_videos": metrics["num_videos"],
                                "seconds": time.perf_counter() - t0}
    for name, preds in predictions.items():
        if name != REFERENCE:
            result["runs"][name]["vs_torch_fp32"] = pa.compare(predictions[REFERENCE], preds)
    return result


def train_model(root: Path, log: Any) -> tuple[str, str]:
    """``falv synth`` + ``falv train``: a small trained tiny model (4 appearance classes, 4 epochs)."""
    from falv.cli.main import main as falv_main

    synth = ["synth", str(root / "data"), "--config", "appearance", "--classes", "4", "-n", "30", "--seed", "11",
             "--duration", "1.5,2"]
    train = ["train", "--data", str(root / "data"), "--out", str(root / "run"), "--epochs", "4"]
    for args in (synth, train):
        log("falv " + " ".join(args))
        try:
            falv_main(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"falv {args[0]} failed with exit code {exc.code}") from None
    return str(root / "run" / "best"), str(root / "data")


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"CPU: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['cpu_capability']}), onnxruntime "
          f"{m['onnxruntime']}, openvino {m['openvino']}; native bf16: {m['native_bf16']}, VNNI: {m['vnni']}, "
          f"torch int8 kernels: {m['torch_int8']}, OpenVINO bf16: {m['openvino_bf16']}")
    for s in result["speed"]:
        print(f"\n{s['preset']} {s['clip']}, batch {s['batch']}: {s['repeats']} interleaved rounds after "
              f"{s['warmup']} warm-up (export {s['export_seconds']:.0f} s)")
        print("| path | ms/clip median | best | x vs torch fp32 | x vs torch same precision | top-1 = torch fp32 "
              "| max abs logit diff |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in s["rows"]:
            same = f"{r['x_vs_torch_same_precision']:.2f}" if r["x_vs_torch_same_precision"] else "-"
            print(f"| {r['path']} | {r['ms_median']:.1f} | {r['ms_best']:.1f} | {r['x_vs_torch_fp32']:.2f} | {same} "
                  f"| {100 * r['top1_vs_torch_fp32']:.0f}% | {r['max_abs_logit_diff']:.2e} |")
        for name, why in s["skipped"].items():
            print(f"| {name} | not run: {why} |||||")
    a = result.get("agreement")
    if a:
        print(f"\nagreement on a trained model: {a['model']}, data {a['data']} (split {a['split'] or 'default'}), "
              f"clips {a['clips']}")
        print("| path | videos | top-1 | top-1 = torch fp32 | max abs score diff | seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in a["runs"].items():
            c = r.get("vs_torch_fp32")
            agree = f"{c['agree']}/{c['videos']} ({100 * c['agreement']:.1f}%)" if c else "-"
            diff = f"{c['max_score_diff']:.4f}" if c else "-"
            print(f"| {name} | {r['num_videos']} | {100 * r['top1']:.1f}% | {agree} | {diff} | {r['seconds']:.1f} |")
        for name, why in a["skipped"].items():
            print(f"| {name} | not run: {why} |||||")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="base,tiny", help="presets to time (comma-separated)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--calib-clips", type=int, default=8, help="clips that calibrate the static int8 files")
    parser.add_argument("--skip", default="", help="paths left out, as PRESET:RUNTIME PRECISION, comma-separated "
                                                   "(e.g. 'base:torch bf16' on a CPU that emulates bf16)")
    parser.add_argument("--model", help="a trained model for the agreement part")
    parser.add_argument("--data", help="its labeled videos (a falv synth folder, class folders, ...)")
    parser.add_argument("--split", default=None, help="split evaluated (default: falv evaluate's)")
    parser.add_argument("--calibrate-split", default="train", help="split whose videos calibrate int8")
    parser.add_argument("--calibrate-data", default=None, help="labeled videos that calibrate int8 (default: --data)")
    parser.add_argument("--clips", default="1", help="clips per video in the agreement part")
    parser.add_argument("--train", action="store_true", help="train a small model (falv synth + train) first")
    parser.add_argument("--no-speed", action="store_true", help="only the agreement part")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temp dir)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, one round, a random model on 6 generated videos (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.repeats, args.warmup, args.calib_clips = "tiny", 1, 1, 2
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result: dict[str, Any] = {"machine": machine(), "speed": []}
    with tempfile.TemporaryDirectory(prefix="falv-runtime-bench-") as tmp:
        out = args.out or Path(tmp)
        if not args.no_speed:
            skips = [item.strip().split(":", 1) for item in args.skip.split(",") if ":" in item]
            for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
                skip = tuple(path for preset_name, path in skips if preset_name == name)
                result["speed"].append(speed(name, args.repeats, args.warmup, args.calib_clips, log, skip))
        if args.quick and not args.model:  # a random tiny model on 6 generated videos: the code paths only
            args.model, args.data = _precision_agreement().quick_setup(out / "inputs")
            args.calibrate_split = "test"
        elif args.train and not args.model:
            args.model, args.data = train_model(out / "trained", log)
        if args.model and args.data:
            result["agreement"] = agreement(args.model, args.data, args.split, args.calibrate_split,
                                            out / "agreement", args.clips, log, args.calibrate_data)
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
