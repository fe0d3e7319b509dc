"""Every model family through falv's inference path against its reference implementation.

    python benchmarks/families.py                       # one preset per family
    python benchmarks/families.py --family videomae --preset videomae-small --repeats 3
    python benchmarks/families.py --quick               # tiny sizes: checks the harness

For each (family, preset) the reference implementation is built with random weights (random
BatchNorm statistics too), written in its original checkpoint format, and loaded by
``falv.load_model`` from that file, so both sides hold the same weights. Then, on the same
clips in one run: the reference's own eager fp32 forward, falv fp32 and falv's default
precision (``prepare_for_inference``: bf16 weights where the CPU has native bf16), in ms per
clip (best of ``--repeats`` after a warm-up), with parameters and GFLOP per clip (torch's
counter, a multiply-add = 2 FLOPs) and the largest logit difference against the reference.

References: transformers' VideoMAEForVideoClassification (VideoMAE); pytorchvideo's builders
(SlowFast, X3D, MViT-B; installed test-only by tests/oracles.py); the TSM oracle of
tests/model/test_tsm.py (the original code is not a package). Figures and the CPU they came
from are in docs/models.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from falv.cli.bench import _cpu_model_name

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- references: (family, preset config, folder) -> (reference module in eval mode, path of its original
# checkpoint holding the same weights; BatchNorm statistics randomised before it is written) --------------


def _videomae_reference(cfg: Any, folder: Path) -> tuple[torch.nn.Module, Path]:
    import transformers

    hf_cfg = transformers.VideoMAEConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        num_labels=cfg.num_labels, use_mean_pooling=True)
    hf_cfg._attn_implementation = "eager"  # the reference's own eager attention
    model = transformers.VideoMAEForVideoClassification(hf_cfg).eval()
    model.save_pretrained(folder)
    return model, folder


def _x3d_reference(cfg: Any, folder: Path) -> tuple[torch.nn.Module, Path]:
    """pytorchvideo's ``create_x3d`` at the preset's size, written as a pytorchvideo hub file."""
    from tests.oracles import pytorchvideo, randomize_batch_norm

    pytorchvideo()
    from pytorchvideo.models.x3d import create_x3d

    depth = {(3, 5, 11, 7): 2.2, (5, 10, 25, 15): 5.0}.get(tuple(cfg.depths), 2.2)
    # the head's pool comes from the training crop (PySlowFast's TRAIN_CROP_SIZE), clips are the test crop
    train_crop = cfg.head_pool_size[1] * 32 if cfg.head_pool_size else cfg.image_size
    model = create_x3d(input_clip_length=cfg.num_frames, input_crop_size=train_crop,
                       model_num_class=cfg.num_labels, depth_factor=depth, head_activation=None).eval()
    randomize_batch_norm(model)
    folder.mkdir(parents=True)
    name = {4: "X3D_XS.pyth", 13: "X3D_S.pyth"}.get(cfg.num_frames, "X3D_L.pyth" if depth == 5.0 else "X3D_M.pyth")
    torch.save({"model_state": model.state_dict()}, folder / name)  # the name says the clip settings
    return model, folder / name


def _tsm_reference(cfg: Any, folder: Path) -> tuple[torch.nn.Module, Path]:
    """TSM's TSN forward with the temporal shift (transcribed in tests/model/test_tsm.py) on
    transformers' ResNet-50, written as TSM's main.py checkpoint."""
    import transformers

    from tests.model.test_tsm import TSN, _tsm_state, make_temporal_shift
    from tests.oracles import randomize_batch_norm

    base = transformers.ResNetModel(transformers.ResNetConfig(downsample_in_bottleneck=False)).eval()
    make_temporal_shift(base, cfg.num_frames, n_div=8)
    model = TSN(base, cfg.num_labels, cfg.num_frames, dropout=0.5).eval()
    randomize_batch_norm(model)
    folder.mkdir(parents=True)
    path = folder / f"TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment{cfg.num_frames}_e50.pth"
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": _tsm_state(model)}, path)
    return model, path


def _pyslowfast_reference(cfg: Any, folder: Path) -> tuple[torch.nn.Module, Path]:
    """pytorchvideo's ``create_slowfast`` (SlowFast R50 8x8: 32 fast frames, alpha 4), written as a
    PySlowFast ``.pyth`` with its cfg (tests/model/test_slowfast.py's renaming)."""
    from tests.model.test_slowfast import _cfg, write_files
    from tests.oracles import pytorchvideo, randomize_batch_norm

    if cfg.arch != "slowfast" or cfg.depth != 50:
        raise SystemExit("benchmarks/families.py builds the SlowFast R50 reference only (--preset slowfast_r50_8x8)")
    pv = pytorchvideo()
    # pytorchvideo's default head is PySlowFast's test-time head: 7x7 windows at stride 1, averaged
    # after the projection (what falv does at a test crop above the 224 training crop)
    model = pv.slowfast.create_slowfast(model_num_class=cfg.num_labels, dropout_rate=0.0,
                                        head_activation=None).eval()
    randomize_batch_norm(model)
    run = _cfg("slowfast", 64, cfg.num_frames, 2, SLOWFAST={"ALPHA": cfg.alpha, "BETA_INV": 8,
                                                          "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 7})
    run["MODEL"]["NUM_CLASSES"] = cfg.num_labels
    run["DATA"]["TEST_CROP_SIZE"] = cfg.image_size
    folder.mkdir(parents=True)
    pyth = write_files(folder, model, run)[1]
    model.falv_alpha = cfg.alpha
    return model, pyth


def _slowfast_call(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """PySlowFast's input: the fast pathway's frames and every alpha-th of them for the slow one."""
    x = x.permute(0, 2, 1, 3, 4)
    t = x.shape[2]
    slow = torch.index_select(x, 2, torch.linspace(0, t - 1, t // model.falv_alpha).long())
    return model([slow, x])


def _mvit_reference(cfg: Any, folder: Path) -> tuple[torch.nn.Module, Path]:
    """pytorchvideo's MViT-B 16x4 (its hub ``mvit_base_16x4`` settings), written as a hub file."""
    from tests.oracles import pytorchvideo

    pv = pytorchvideo()
    model = pv.vision_transformers.create_multiscale_vision_transformers(
        spatial_size=cfg.image_size, temporal_size=cfg.num_frames, head_num_classes=cfg.num_labels,
        embed_dim_mul=[[1, 2.0], [3, 2.0], [14, 2.0]], atten_head_mul=[[1, 2.0], [3, 2.0], [14, 2.0]],
        pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2], [14, 1, 2, 2]], pool_kv_stride_adaptive=[1, 8, 8],
        pool_kvq_kernel=[3, 3, 3]).eval()
    folder.mkdir(parents=True)
    torch.save({"model_state": model.state_dict()}, folder / "MVIT_B_16x4.pyth")
    return model, folder / "MVIT_B_16x4.pyth"


REFERENCES: dict[str, Callable[[Any, Path], tuple[torch.nn.Module, Path]]] = {
    "mvit": _mvit_reference,
    "pyslowfast": _pyslowfast_reference,
    "videomae": _videomae_reference,
    "x3d": _x3d_reference,
    "tsm": _tsm_reference,
}
#: (family, preset) measured by default: one representative per family
DEFAULT_RUNS = [("videomae", "videomae-small"), ("pyslowfast", "slowfast_r50_8x8"), ("x3d", "x3d_m"),
                ("mvit", "mvitv1_b_16x4"), ("tsm", "tsm_r50")]
#: --quick: tiny overrides per family (harness check, seconds)
QUICK = {
    "videomae": ("videomae-small", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=128, image_size=32, num_frames=4)),
    "x3d": ("x3d_xs", dict(image_size=64)),
    "pyslowfast": ("slowfast_r50_8x8", dict(image_size=64)),
    "mvit": ("mvitv1_b_16x4", dict(image_size=64, num_frames=4)),
    "tsm": ("tsm_r50", dict(image_size=64, num_frames=4)),
}


def _time(fn: Callable[[torch.Tensor], torch.Tensor], clips: list[torch.Tensor], repeats: int) -> tuple[list[float], Any]:
    fn(clips[0])  # warm-up
    times, out = [], None
    for i in range(repeats):
        t0 = time.perf_counter()
        out = fn(clips[(i + 1) % len(clips)])
        times.append(time.perf_counter() - t0)
    return times, out


def run_one(family_name: str, preset: str, *, repeats: int = 3, batch: int = 1, overrides: dict | None = None,
            num_labels: int = 400, log: Callable[[str], None] = print) -> dict[str, Any]:
    from falv.hub.families import family, load_model
    from falv.inference import prepare_for_inference, precision_name
    from falv.model.flops import count_flops

    fam = family(family_name)
    cfg = fam.preset(preset, num_labels=num_labels, **(overrides or {}))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        reference, source = REFERENCES[family_name](cfg, Path(tmp) / "checkpoint")
        model = load_model(source)
    shape = (batch, model.config.num_frames, model.config.num_channels, model.config.image_size, model.config.image_size)
    gen = torch.Generator().manual_seed(1)
    clips = [torch.randn(shape, generator=gen) for _ in range(2)]
    flops = count_flops(model.config, model_class=type(model))
    params = sum(p.numel() for p in model.parameters())
    reference_call = REFERENCE_CALLS.get(family_name, lambda m, x: m(x).logits)

    def ref_fp32(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return reference_call(reference, x)

    fp32 = prepare_for_inference(copy.deepcopy(model), "cpu", "fp32")
    auto = prepare_for_inference(copy.deepcopy(model), "cpu", "auto")
    rows = {}
    for name, fn in (("reference fp32 (eager)", ref_fp32), ("falv fp32", lambda x: fp32.predict(x)[0]),
                     (f"falv {precision_name(auto.dtype)}", lambda x: auto.predict(x)[0])):
        log(f"  timing {family_name} {preset}: {name}")
        times, out = _time(fn, clips, repeats)
        rows[name] = {"ms_per_clip": 1000 * min(times) / batch, "ms_median": 1000 * statistics.median(times) / batch,
                      "logits": out.float()}
    reference_logits = rows["reference fp32 (eager)"]["logits"]
    scale = float(reference_logits.abs().max()) or 1.0
    for row in rows.values():
        row["max_rel_logit_diff"] = float((row.pop("logits") - reference_logits).abs().max()) / scale
    base = rows["reference fp32 (eager)"]["ms_per_clip"]
    for row in rows.values():
        row["speedup_vs_reference"] = base / row["ms_per_clip"]
    return {"family": family_name, "preset": preset, "clip": f"{shape[1]}x{shape[-1]}", "batch": batch,
            "params_m": params / 1e6, "gflop_per_clip": flops / 1e9, "rows": rows}


#: family -> how the reference module is called on (B, T, C, H, W) clips (default: ``.logits`` of ``m(x)``)
REFERENCE_CALLS: dict[str, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]] = {
    "pyslowfast": _slowfast_call,
    "mvit": lambda m, x: m(x.permute(0, 2, 1, 3, 4)),
    "x3d": lambda m, x: m(x.permute(0, 2, 1, 3, 4)),  # PySlowFast/pytorchvideo take (B, C, T, H, W)
    "tsm": lambda m, x: m(x.flatten(1, 2)),  # TSM's loader stacks a video's frames: (B, T*C, H, W)
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", default=None, help="family to measure (repeatable)")
    parser.add_argument("--preset", default=None, help="preset of --family (default: the family's default run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness in seconds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = [(f, p) for f, p in DEFAULT_RUNS if args.family is None or f in args.family]
    if args.preset is not None:
        if not args.family or len(args.family) != 1:
            parser.error("--preset needs exactly one --family")
        runs = [(args.family[0], args.preset)]
    results = []
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    for fam, preset in runs:
        overrides = None
        if args.quick:
            preset, overrides = QUICK[fam]
        results.append(run_one(fam, preset, repeats=args.repeats, batch=args.batch, overrides=overrides, log=say))
    print(f"CPU: {_cpu_model_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'family':10} {'preset':22} {'clip':>7} {'params(M)':>9} {'GFLOP':>7}  {'path':24} {'ms/clip':>9} "
          f"{'x ref':>6} {'rel dlogit':>11}")
    for res in results:
        for name, row in res["rows"].items():
            print(f"{res['family']:10} {res['preset']:22} {res['clip']:>7} {res['params_m']:>9.1f} "
                  f"{res['gflop_per_clip']:>7.1f}  {name:24} {row['ms_per_clip']:>9.1f} {row['speedup_vs_reference']:>6.2f} "
                  f"{row['max_rel_logit_diff']:>11.2e}")
    out = {"cpu": _cpu_model_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
