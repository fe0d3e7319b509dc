"""Model loading: falv against transformers' own ``from_pretrained``, same weights.

Writes one set of TimeSformer weights (random, the base preset by default) three ways: a
transformers directory (``TimesformerForVideoClassification.save_pretrained``), a falv
directory (``falv convert``'s output) and an original ``.pyth`` file (the
facebookresearch/TimeSformer ``model_state`` layout). Then, in interleaved rounds (every
round loads every path once, the order rotated each round, one warm-up round first), times

- ``transformers``: ``TimesformerForVideoClassification.from_pretrained(hf_dir)``, the reference;
- ``falv dir``, ``falv <- transformers dir``, ``falv <- .pyth``: ``FALForVideoClassification.from_pretrained``.

and prints each median and its ratio to the reference measured in the same run (goal of
issue #19: <= 2x). The files stay in the page cache between rounds for every path alike:
this measures building the model and reading the weights, not the disk.

``--cold`` also times each path's *first* load in a fresh interpreter (its library imported
before the clock starts, the load itself timed), as a command-line run pays it: whatever the
first load imports or initialises lazily counts there and is hidden by the warm rounds. Cold
loads are what found torch's meta-device ``normal_`` importing ``torch._dynamo`` (~2 s) in
every falv start-up.

    python benchmarks/load_bench.py                 # base (ViT-B, 8x224, 400 classes)
    python benchmarks/load_bench.py --preset tiny --rounds 3
    python benchmarks/load_bench.py --cold 3        # also 3 rounds of first loads in fresh processes
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def write_checkpoints(root: Path, preset: str) -> dict[str, Path]:
    """The same weights as a transformers dir, a falv dir and a ``.pyth`` file under ``root``."""
    import transformers

    from falv import FALForVideoClassification
    from falv.hub.convert import transformers_to_original
    from falv.model.presets import preset as preset_config

    cfg = preset_config(preset)
    hf_config = transformers.TimesformerConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_frames=cfg.num_frames,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        attention_type="divided_space_time", num_labels=400)
    hf = transformers.TimesformerForVideoClassification(hf_config).eval()
    paths = {"transformers": root / "hf", "falv dir": root / "falv", "falv <- .pyth": root / "model.pyth"}
    hf.save_pretrained(paths["transformers"])
    FALForVideoClassification.from_pretrained(paths["transformers"]).save_pretrained(paths["falv dir"])
    torch.save({"model_state": transformers_to_original(
        hf.state_dict(), hf_config.num_hidden_layers)},
               paths["falv <- .pyth"])
    return paths


def loaders(paths: dict[str, Path]) -> dict[str, object]:
    from falv import FALForVideoClassification

    def transformers_load() -> object:
        import transformers  # only here: a fresh process timing a falv path never imports it

        return transformers.TimesformerForVideoClassification.from_pretrained(paths["transformers"])

    # a .pyth holds no head count; falv assumes ViT's 64 per head unless told (the base preset is)
    heads = json.loads((paths["transformers"] / "config.json").read_text())["num_attention_heads"]
    return {
        "transformers": transformers_load,
        "falv dir": lambda: FALForVideoClassification.from_pretrained(paths["falv dir"]),
        "falv <- transformers dir": lambda: FALForVideoClassification.from_pretrained(paths["transformers"]),
        "falv <- .pyth": lambda: FALForVideoClassification.from_pretrained(paths["falv <- .pyth"],
                                                                   num_attention_heads=heads),
    }


def measure(paths: dict[str, Path], rounds: int) -> dict[str, list[float]]:
    fns = loaders(paths)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):  # round 0 warms up (imports, page cache) and is dropped
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            model = fns[name]()
            elapsed = time.perf_counter() - start
            del model
            if r:
                times[name].append(elapsed)
    return times


def _cold_main(name: str, paths_json: str) -> None:
    """In a fresh interpreter: import the path's library (untimed: transformers' TimeSformer for the
    reference, falv for the others, as a command has it imported), then time the first load of ``name``."""
    if name == "transformers":
        import transformers
        from transformers import TimesformerForVideoClassification  # noqa: F401  (its lazy import, untimed)

        transformers.logging.set_verbosity_error()
    else:
        import falv  # noqa: F401
    fns = loaders({k: Path(v) for k, v in json.loads(paths_json).items()})
    start = time.perf_counter()
    fns[name]()
    print(json.dumps({"seconds": time.perf_counter() - start, "dynamo": "torch._dynamo" in sys.modules}))


def measure_cold(paths: dict[str, Path], rounds: int) -> dict[str, list[dict]]:
    """Each path's first load in a fresh process, ``rounds`` times, the order rotated each round."""
    names = list(loaders(paths))
    spec = json.dumps({k: str(v) for k, v in paths.items()})
    times: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out = subprocess.run([sys.executable, __file__, "_cold", name, spec], capture_output=True,
                                 text=True, timeout=600, check=True)
            times[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return times


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_cold"]:
        _cold_main(*argv[1:3])
        return {}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", type=int, default=0, metavar="N",
                        help="also N rounds of first loads, each in a fresh process (default 0: none)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_checkpoints(Path(tmp), args.preset)
        times = measure(paths, args.rounds)
        cold = measure_cold(paths, args.cold) if args.cold else None
    ref = statistics.median(times["transformers"])
    print(f"loading the {args.preset} preset, {args.rounds} interleaved rounds, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"{'path':26s} {'median s':>9s} {'best s':>8s} {'x transformers':>15s}")
    result = {"preset": args.preset, "rounds": args.rounds, "paths": {}}
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:26s} {med:9.3f} {min(ts):8.3f} {med / ref:15.2f}")
        result["paths"][name] = {"median_s": med, "best_s": min(ts), "ratio": med / ref, "times": ts}
    if cold:
        cold_ref = statistics.median(c["seconds"] for c in cold["transformers"])
        print(f"\nfirst load in a fresh process, {args.cold} rounds")
        print(f"{'path':26s} {'median s':>9s} {'best s':>8s} {'x transformers':>15s}  imports torch._dynamo")
        result["cold"] = {"rounds": args.cold, "paths": {}}
        for name, runs in cold.items():
            ts = [c["seconds"] for c in runs]
            med = statistics.median(ts)
            dynamo = any(c["dynamo"] for c in runs)
            print(f"{name:26s} {med:9.3f} {min(ts):8.3f} {med / cold_ref:15.2f}  {'yes' if dynamo else 'no'}")
            result["cold"]["paths"][name] = {"median_s": med, "best_s": min(ts), "ratio": med / cold_ref,
                                             "times": ts, "imports_dynamo": dynamo}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
