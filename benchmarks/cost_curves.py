"""Experiment 6 (paper Figure 3): cost per clip against frames and resolution, joint vs divided.

    python benchmarks/cost_curves.py --margin-gb 3 --json docs/figures/cost_curves.json \
        --plot docs/figures/cost_curves.png
    python benchmarks/cost_curves.py --quick --json /tmp/cost_quick.json      # CI: tiny model, ~15 s

For ViT-B (the ``base`` preset, 400 classes) with joint and divided space-time
attention, over frames (8, 16, 32, 64, 96 at 224 px) and resolution (224, 336,
448 px at 8 frames):

* **GFLOP per clip**: :func:`falv.model.flops.count_flops` (torch's FLOP counter
  on the meta device: exact for the code that runs, a multiply-add = 2 FLOPs).
* **Peak memory, measured**: every (shape, scheme, precision, attention path) runs
  one forward pass (batch 1, ``torch.no_grad``, weights in that precision) in a
  fresh Python process. Once the model and the clip are in memory (and the model
  has run once on a one-patch clip, so thread pools start outside the
  measurement), the process resets its peak-RSS mark, reads it, runs the
  forward and reads it again; the difference is the memory the forward pass
  needs on top of the loaded model. The mark is read as ``VmHWM`` from
  /proc/self/status, not ``ru_maxrss``, which in a child process starts at the
  parent's peak (see :func:`child_main`); both are in the JSON. Children run with
  a fixed glibc mmap threshold (:data:`CHILD_ENV`) so RSS follows the live
  tensors. ``--quick`` runs all its tiny runs in one process (one start-up),
  resetting the mark before each. Both attention paths of :mod:`falv.model.attention`
  are measured: ``sdpa`` (fused kernel, never holds the L x L attention matrix) and
  ``reference`` (explicit softmax, holds it).
* **Fit check first**: each run's peak is predicted analytically
  (:func:`predict_memory`: weights, residual-stream activations and attention
  matrices) and the run is skipped when the prediction exceeds the memory this
  machine has free (``MemAvailable`` in /proc/meminfo, minus ``--margin-gb``);
  it is reported as "does not fit (predicted X GB > Y GB)". A watchdog also
  stops a run whose RSS passes that limit, and a run that dies or times out is
  reported as such: the script itself is never OOM-killed.

Output: a table on stdout, ``--json`` (every number, rewritten after every run so a
long run can be inspected), ``--plot`` (PNG: GFLOP and peak memory against frames
and resolution, log-log); ``--replot JSON`` redraws from saved numbers. Results and their
discussion: docs/results.md, "Experiment 6".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

SCHEMES = ("joint_space_time", "divided_space_time")
SCHEME_LABELS = {"joint_space_time": "joint (ST)", "divided_space_time": "divided (T+S)"}
DTYPES = ("fp32", "bf16")
BACKENDS = ("sdpa", "reference")
NUM_LABELS = 400  # Kinetics-400 head, as in the paper

FULL = dict(frames=(8, 16, 32, 64, 96), frames_size=224, sizes=(224, 336, 448), sizes_frames=8)
# CI: a tiny-width model on small clips; the same code paths, seconds instead of an hour.
# 8x8 patches so that joint attention over up to 1152 tokens holds a measurable matrix (~40 MB).
QUICK = dict(frames=(8, 16), frames_size=64, sizes=(64, 96), sizes_frames=8)
QUICK_MODEL = dict(patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)

GB = 1e9
# Python + torch + falv imported, before any model exists (measured here: 0.23 GB; rounded up).
INTERPRETER_BYTES = 0.4 * GB
# Forward-pass memory that does not grow with the clip (oneDNN/BLAS packing buffers, kernel
# scratch), after a warm-up call on one patch: under 10 MB at ViT-B.
WORKSPACE_BYTES = 0.01 * GB


@dataclass(frozen=True)
class Point:
    """One clip shape for one scheme, in one sweep ("frames" or "resolution")."""

    sweep: str
    scheme: str
    num_frames: int
    image_size: int


def sweep_points(quick: bool, schemes: tuple[str, ...] = SCHEMES) -> list[Point]:
    grid = QUICK if quick else FULL
    points = []
    for scheme in schemes:
        points += [Point("frames", scheme, f, grid["frames_size"]) for f in grid["frames"]]
        points += [Point("resolution", scheme, grid["sizes_frames"], s) for s in grid["sizes"]]
    return points


def model_config(point: Point, quick: bool):
    """The FALConfig of ``point``: ViT-B (or the quick tiny-width model) built for that clip shape."""
    from falv.model.presets import preset

    extra = QUICK_MODEL if quick else {}
    return preset("base", attention_type=point.scheme, num_frames=point.num_frames, image_size=point.image_size,
                  id2label={i: str(i) for i in range(NUM_LABELS)}, **extra)


def num_tokens(config) -> int:
    """Patch tokens of a clip, T * N (the CLS token not counted)."""
    return config.num_frames * (config.image_size // config.patch_size) ** 2


# -- memory prediction ------------------------------------------------------------------------------


def predict_memory(config, dtype: str, backend: str, num_params: int) -> dict[str, float]:
    """Analytical peak memory (bytes) of one no-grad forward pass at batch 1.

    * ``weights``: parameters x bytes per element.
    * ``activations``: under ``no_grad`` only one block's tensors are alive at a time.
      The largest set is about 12 residual-stream tensors of L x D (input, LayerNorm
      output, gathered groups, CLS concatenation, q/k/v, attention output and its
      re-layout, projection) or, in the MLP, 3 stream tensors + 2 hidden tensors of
      L x 4D (fc1 output and GELU output): ``max(12 L D, 3 L D + 2 L D_mlp)``.
    * ``attention``: the reference path holds the scores and their softmax at once,
      2 x G x heads x L_g^2 elements for the step with the largest groups (joint: one
      group of L = TN + 1; divided: T groups of N + 1). The fused SDPA kernel works on
      blocks and holds no L x L matrix: 0.
    * ``forward``: activations + attention + a constant workspace: the predicted forward peak.
    * ``total``: interpreter + weights + clip + forward, for the fit check.
    """
    from falv.model.schemes import scheme_steps

    b = 4 if dtype == "fp32" else 2
    t, side = config.num_frames, config.image_size // config.patch_size
    length = t * side * side + 1
    d, d_mlp, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    activations = max(12 * length * d, 3 * length * d + 2 * length * d_mlp) * b
    attention = 0
    if backend == "reference":
        for _name, grouping, cls_mode, _fc in scheme_steps(config.attention_type):
            for idx in grouping(t, side, side):
                groups, group_len = idx.shape
                group_len += cls_mode != "none"
                attention = max(attention, 2 * groups * heads * group_len**2 * b)
    weights = num_params * b
    clip = t * config.num_channels * config.image_size**2 * b
    forward = WORKSPACE_BYTES + activations + attention
    return dict(weights=weights, activations=activations, attention=attention, forward=forward,
                total=INTERPRETER_BYTES + weights + clip + forward)


def mem_available() -> int:
    """Bytes the kernel reports as available for new allocations (MemAvailable)."""
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- one measurement, in a fresh process --------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Set this process's peak RSS back to its current RSS (writes 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Ask glibc to give free heap memory back to the system (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: glibc keeps freed blocks of up to 32 MB in its heap once it has seen such sizes (dynamic mmap
#: threshold), so RSS would lag behind the live tensors. A fixed threshold gives every tensor of
#: 64 KiB or more its own mapping, returned to the system when freed: RSS then follows live tensors.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def child_main(specs: list[dict[str, Any]]) -> None:
    """Runs in the fresh process: for each spec, build the model, load a clip, run one forward
    and print one JSON line. The full experiment gives every process a single spec."""
    import gc
    import resource

    import torch

    from falv.config import FALConfig
    from falv.model.transformer import FALForVideoClassification

    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    def peak_rss() -> int:
        # The kernel's peak-RSS mark of this process's memory (VmHWM). ru_maxrss reads the same mark
        # but also keeps the largest value the process inherited: after fork + exec it starts at the
        # *parent's* peak (a child of a 1 GB parent reports >= 1 GB), and a thread's exit copies the
        # mark there too, where resetting the mark cannot clear it. Fallback: ru_maxrss.
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return maxrss()

    try:  # on a shared machine, let the kernel's OOM killer pick this process first
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write("1000")
    except OSError:
        pass
    interpreter = peak_rss()
    for spec in specs:
        torch.set_num_threads(spec["threads"])
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
        config = FALConfig.from_dict(spec["config"])
        # Built on the meta device and materialised directly in the target dtype, so loading
        # never holds two copies of the weights.
        with torch.device("meta"):
            model = FALForVideoClassification(config)
        model = model.to(dtype).to_empty(device="cpu")
        with torch.no_grad():
            model.init_weights()  # in place, in the target dtype
        model.eval().set_attention_backend(spec["backend"])
        with torch.no_grad():  # one patch of one frame: thread pools and kernel libraries start up
            model(torch.zeros(1, 1, config.num_channels, config.patch_size, config.patch_size, dtype=dtype))
        gen = torch.Generator().manual_seed(0)
        clip = torch.randn(1, config.num_frames, config.num_channels, config.image_size, config.image_size,
                           generator=gen, dtype=dtype)
        # Reset the peak-RSS mark to the current RSS (Linux >= 4.0; ru_maxrss follows it), so
        # transient peaks of importing and building cannot hide a smaller forward peak; without
        # it, the baseline is the peak so far.
        _malloc_trim()  # return freed heap pages (of building, or of an earlier run) to the system
        reset = _reset_peak_rss()
        loaded, ru_loaded = peak_rss(), maxrss()  # the idle process with model and clip loaded: the baseline
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(clip).logits
        seconds = time.perf_counter() - start
        peak, ru_peak = peak_rss(), maxrss()
        print(json.dumps(dict(interpreter=interpreter, loaded=loaded, peak=peak, seconds=seconds, peak_reset=reset,
                              ru_maxrss_loaded=ru_loaded, ru_maxrss_peak=ru_peak,
                              finite=bool(torch.isfinite(logits.float()).all()))), flush=True)
        del model, clip, logits
        gc.collect()


def run_child(specs: list[dict[str, Any]], limit_bytes: int, timeout: float) -> list[dict[str, Any]]:
    """Run :func:`child_main` in a fresh interpreter, stopping it if its RSS passes ``limit_bytes``
    or it runs past ``timeout`` seconds. Returns one result per spec: the child's numbers, or
    a failure status (for the spec that failed and every one after it)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(specs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **CHILD_ENV})
    state = {"over": 0}

    def watch() -> None:
        while proc.poll() is None:
            rss = _rss_of(proc.pid)
            if rss > limit_bytes:
                state["over"] = rss
                proc.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    failure = None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        failure = dict(status="timed out", reason=f"timed out after {timeout:.0f} s")
    watcher.join()
    results = [dict(json.loads(line), status="ok") for line in out.splitlines() if line.startswith("{")]
    if failure is None and state["over"]:
        failure = dict(status="does not fit",
                       reason=f"stopped at {state['over'] / GB:.1f} GB RSS > {limit_bytes / GB:.1f} GB free")
    if failure is None and proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        if proc.returncode == -9:
            how += ", killed: out of memory?"
        tail = err.strip().splitlines()[-1] if err.strip() else "no message"
        failure = dict(status="died", reason=f"process died ({how}): {tail}")
    if failure is None and len(results) < len(specs):
        failure = dict(status="died", reason="process ended without reporting")
    return results + [dict(failure) for _ in range(len(specs) - len(results))]


# -- the experiment -----------------------------------------------------------------------------------


def measure(points: list[Point], quick: bool, dtypes: tuple[str, ...], backends: tuple[str, ...],
            margin_gb: float, timeout: float, threads: int, log=print,
            progress: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """FLOPs for every point, and one measured (or predicted-not-to-fit) run per dtype and backend.

    Every run gets a fresh process; ``quick`` runs all its (tiny) runs in one process instead,
    resetting the peak-RSS mark before each, so that CI pays for one interpreter start-up.
    """
    from falv.model.flops import count_flops, count_parameters

    rows = []
    runs: dict[tuple, dict[str, Any]] = {}  # the shape both sweeps share runs once
    pending: list[tuple[tuple, dict[str, Any]]] = []
    for point in points:
        config = model_config(point, quick)
        params = count_parameters(config)
        row = dict(asdict(point), tokens=num_tokens(config), gflops=count_flops(config) / 1e9, params=params,
                   runs={})
        for dtype in dtypes:
            for backend in backends:
                key = (point.scheme, point.num_frames, point.image_size, dtype, backend)
                if key not in runs:
                    pred = predict_memory(config, dtype, backend, params)
                    runs[key] = dict(predicted_gb=pred["forward"] / GB, predicted_total_gb=pred["total"] / GB)
                    pending.append((key, dict(config=config.to_dict(), dtype=dtype, backend=backend,
                                              threads=threads)))
                row["runs"][f"{dtype}/{backend}"] = runs[key]
        rows.append(row)

    def label(key: tuple) -> str:
        return f"{key[0]} {key[1]}x{key[2]} {key[3]}/{key[4]}"

    def record(key: tuple, result: dict[str, Any]) -> None:
        run = runs[key]
        run.update(result)
        if result["status"] == "ok":
            run.update(peak_gb=(result["peak"] - result["loaded"]) / GB, baseline_gb=result["loaded"] / GB,
                       total_peak_gb=result["peak"] / GB)
            log(f"  {label(key)}: forward peak {run['peak_gb']:.3f} GB above {run['baseline_gb']:.2f} GB loaded "
                f"(predicted {run['predicted_gb']:.3f}), {result['seconds']:.1f} s")
        else:
            log(f"  {label(key)}: {result['reason']}")

    batch: list[tuple[tuple, dict[str, Any]]] = []
    for key, spec in pending:
        limit = int(mem_available() - margin_gb * GB)
        runs[key]["limit_gb"] = limit / GB
        if runs[key]["predicted_total_gb"] * GB > limit:
            record(key, dict(status="does not fit", reason=(
                f"does not fit (predicted {runs[key]['predicted_total_gb']:.1f} GB > {limit / GB:.1f} GB)")))
        elif quick:
            batch.append((key, spec))
        else:
            log(f"  {label(key)}: running (predicted {runs[key]['predicted_total_gb']:.2f} GB in all)")
            record(key, run_child([spec], limit, timeout)[0])
            if progress is not None:
                progress(rows)  # e.g. save what is measured so far: a long run can be inspected
    if batch:
        limit = int(mem_available() - margin_gb * GB)
        for (key, _), result in zip(batch, run_child([spec for _, spec in batch], limit, timeout)):
            record(key, result)
    return rows


def machine_info() -> dict[str, Any]:
    import torch

    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    with open("/proc/meminfo", encoding="utf-8") as fh:
        total = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemTotal:"))
    return dict(cpu=model, cores=os.cpu_count(), mem_total_gb=total / GB, torch=torch.__version__,
                python=platform.python_version(), torch_threads=torch.get_num_threads())


def _cell(run: dict[str, Any]) -> str:
    if run["status"] == "ok":
        return f"{run['peak_gb']:.3g}"
    if run["status"] == "does not fit":
        return f"does not fit ({run['predicted_total_gb']:.0f} > {run['limit_gb']:.0f})"
    return run["status"]


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables: GFLOP and forward peak memory (GB above the loaded model), then seconds."""
    combos = result["combos"]
    head = ["sweep", "scheme", "frames", "px", "tokens", "GFLOP"] + [f"{c} GB" for c in combos]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for row in result["rows"]:
        cells = [row["sweep"], SCHEME_LABELS[row["scheme"]], str(row["num_frames"]), str(row["image_size"]),
                 str(row["tokens"]), f"{row['gflops']:.1f}"] + [_cell(row["runs"][c]) for c in combos]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Forward time (s per clip, batch 1; shared machine):", ""]
    head = ["scheme", "frames", "px"] + [f"{c} s" for c in combos] + [f"{c} predicted GB" for c in combos]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 1 + "---:|" * (len(head) - 1)]
    seen = set()
    for row in result["rows"]:
        key = (row["scheme"], row["num_frames"], row["image_size"])
        if key in seen:
            continue
        seen.add(key)
        secs = [f"{r['seconds']:.1f}" if r["status"] == "ok" else "-" for r in (row["runs"][c] for c in combos)]
        preds = [f"{row['runs'][c]['predicted_gb']:.3g}" for c in combos]
        lines.append("| " + " | ".join([SCHEME_LABELS[row["scheme"]], str(row["num_frames"]),
                                         str(row["image_size"])] + secs + preds) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Two rows (GFLOP, forward peak memory) x two columns (frames, resolution), log-log axes
    (a slope of 1 is linear cost, 2 quadratic). Runs that do not fit are drawn at their
    predicted memory with open markers; the grey line is the memory the fit check allowed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.8), sharey="row")
    colors = {"joint_space_time": "tab:red", "divided_space_time": "tab:blue"}
    styles = {"fp32/sdpa": ("-", "o"), "fp32/reference": ("--", "s"), "bf16/sdpa": (":", "^"),
              "bf16/reference": ("-.", "D")}
    handles: dict[str, Any] = {}
    for col, sweep in enumerate(("frames", "resolution")):
        xkey = "num_frames" if sweep == "frames" else "image_size"
        xs_all: set[int] = set()
        for scheme in SCHEMES:
            rows = [r for r in result["rows"] if r["sweep"] == sweep and r["scheme"] == scheme]
            if not rows:
                continue
            xs = [r[xkey] for r in rows]
            xs_all.update(xs)
            axes[0, col].plot(xs, [r["gflops"] for r in rows], "-o", color=colors[scheme],
                              label=SCHEME_LABELS[scheme])
            joint = scheme == "joint_space_time"  # drawn larger and hollow: joint and divided SDPA coincide
            for combo in result["combos"]:
                ls, marker = styles.get(combo, ("-", "o"))
                ok = [(r[xkey], r["runs"][combo]["peak_gb"]) for r in rows if r["runs"][combo]["status"] == "ok"]
                miss = [(r[xkey], r["runs"][combo]["predicted_gb"]) for r in rows
                        if r["runs"][combo]["status"] != "ok"]
                if ok:
                    (line,) = axes[1, col].plot(*zip(*ok), ls=ls, marker=marker, color=colors[scheme],
                                                ms=9 if joint else 5, mfc="none" if joint else colors[scheme],
                                                lw=2.2 if joint else 1.2, alpha=0.85)
                    handles.setdefault(f"{SCHEME_LABELS[scheme]}, {combo}", line)
                if miss:
                    axes[1, col].plot(*zip(*miss), ls="none", marker="x", ms=10, mew=2, color=colors[scheme])
                    for x, y in miss:
                        axes[1, col].annotate("does not fit\n(predicted)", (x, y), textcoords="offset points",
                                              xytext=(-62, -4), fontsize=7, color=colors[scheme])
        limits = [run["limit_gb"] for r in result["rows"] for run in r["runs"].values()
                  if run["status"] == "does not fit"] or [run["limit_gb"] for r in result["rows"]
                                                          for run in r["runs"].values()]
        if limits:
            limit = min(limits)
            axes[1, col].axhline(limit, color="gray", lw=1)
            axes[1, col].annotate(f"free RAM at the fit check ({limit:.1f} GB)", (0.02, limit),
                                  xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                                  color="gray", fontsize=8)
        fixed = next((r for r in result["rows"] if r["sweep"] == sweep), None)
        if fixed is not None:
            axes[0, col].set_title(f"against frames (at {fixed['image_size']} px)" if sweep == "frames"
                                   else f"against frame size (at {fixed['num_frames']} frames)")
        for row in range(2):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted(xs_all))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("frames per clip" if sweep == "frames" else "frame size (px)")
    axes[0, 0].set_ylabel("GFLOP per clip")
    axes[1, 0].set_ylabel("forward peak memory, GB above the loaded model")
    axes[0, 0].legend(fontsize=8)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"falv cost curves, {result['model']}: batch 1, forward only (no grad)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_cost_curves(quick: bool = False, dtypes: tuple[str, ...] | None = None,
                    backends: tuple[str, ...] = BACKENDS, schemes: tuple[str, ...] = SCHEMES,
                    margin_gb: float = 2.0, timeout: float | None = None, threads: int | None = None,
                    log=print, save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole experiment; returns the dict that ``--json`` writes (``save`` gets the partial
    result after every run, ``complete: false``)."""
    from falv.inference import default_num_threads

    dtypes = dtypes or (("fp32",) if quick else DTYPES)
    timeout = timeout or (60.0 if quick else 3600.0)
    threads = threads or default_num_threads()
    started = time.time()
    model = "tiny-width (D=64, 2 layers, 8x8 patches)" if quick else "ViT-B (base preset), 400 classes"
    result = dict(experiment="cost_curves (paper Figure 3)", quick=quick, model=model,
                  combos=[f"{d}/{b}" for d in dtypes for b in backends], margin_gb=margin_gb,
                  mem_available_gb_at_start=mem_available() / GB, machine=machine_info(), threads=threads,
                  child_env=CHILD_ENV, complete=False, rows=[])

    def progress(rows: list[dict[str, Any]]) -> None:
        if save is not None:
            save({**result, "rows": rows, "seconds": time.time() - started})

    result["rows"] = measure(sweep_points(quick, schemes), quick, dtypes, backends, margin_gb, timeout, threads,
                             log, progress)
    result.update(complete=True, seconds=time.time() - started)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny-width model, 8/16 frames at 64-112 px (CI)")
    parser.add_argument("--dtypes", default=None, help="comma list of fp32,bf16 (default: both; quick: fp32)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma list of sdpa,reference")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--margin-gb", type=float, default=2.0,
                        help="memory left free for everything else on the machine (default 2 GB)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default 3600; quick 60)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG figure here")
    parser.add_argument("--replot", type=Path, default=None,
                        help="only redraw --plot (and print the table) from a JSON written by --json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return {}
    if args.replot is not None:
        result = json.loads(args.replot.read_text(encoding="utf-8"))
        print(format_table(result))
        if args.plot:
            plot(result, args.plot)
        return result

    def split(text: str | None, valid: tuple[str, ...]) -> tuple[str, ...] | None:
        if text is None:
            return None
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in valid]
        if bad or not values:
            parser.error(f"unknown value(s) {bad or text!r}; valid: {', '.join(valid)}")
        return values

    command = " ".join(["python", "benchmarks/cost_curves.py", *(argv if argv is not None else sys.argv[1:])])

    def save(result: dict[str, Any]) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps({**result, "command": command}, indent=2) + "\n", encoding="utf-8")
            tmp.replace(args.json)

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr
    result = run_cost_curves(args.quick, split(args.dtypes, DTYPES), split(args.backends, BACKENDS),
                             split(args.schemes, SCHEMES), args.margin_gb, args.timeout, args.threads, log, save)
    result["command"] = command
    print(format_table(result))
    save(result)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
