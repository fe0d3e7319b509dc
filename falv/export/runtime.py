"""Runtimes: one function that makes a model ready to run in torch, ONNX Runtime or OpenVINO.

::

    runner = prepare_runtime(model_or_dir, runtime="onnxruntime", precision="fp32")
    logits, embeddings = runner.predict(pixel_values)   # (B, T, C, H, W) -> both float32

Every runner has the interface of :class:`falv.inference.InferenceModel` that the
labeling engine and ``falv bench`` use (``predict``, ``device``, ``precision``),
so the engine, the formats and the records do not depend on the runtime.

Where the exported file comes from: a folder written by ``falv export`` is used
as it is (its ``model.int8.onnx`` / ``openvino/model.int8.xml`` for int8); any
other model is exported once into the cache (:func:`falv.export.onnx.cache_root`,
keyed by a hash of its config and weights) and reused from there. int8 without
an exported int8 file is made on the fly without data: ONNX Runtime's dynamic
quantisation, OpenVINO's int8 weight compression (NNCF). Calibrated (static)
int8 comes only from ``falv export --quantize int8 --calibrate DIR``.

=============  ==============================  =====================================
runtime        precisions                        auto means
=============  ==============================  =====================================
torch          auto fp32 bf16 fp16 int8          falv.inference (bf16 where native)
onnxruntime    auto fp32 int8                    fp32
openvino       auto fp32 bf16 int8               bf16 where OpenVINO's CPU plugin has it
=============  ==============================  =====================================

ONNX Runtime and OpenVINO run on the CPU here (``device`` auto or cpu).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from falv.errors import ConfigError

RUNTIMES = ("torch", "onnxruntime", "openvino")
RUNTIME_PRECISIONS = {
    "onnxruntime": ("auto", "fp32", "int8"),
    "openvino": ("auto", "fp32", "bf16", "int8"),
}
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def check_runtime_name(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; valid values: {', '.join(RUNTIMES)}")
    return runtime


def openvino_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among its capabilities on this machine."""
    from falv.export.onnx import require

    ov = require("openvino", "--runtime openvino")
    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no CPU plugin: no bf16
        return False


def check_runtime(runtime: str, precision: str = "auto", device: str | None = "auto") -> str:
    """Validate a runtime, precision and device before any work; returns the precision that will
    run ("fp32", "bf16", "int8", ...). Errors are one-line :class:`ConfigError`."""
    check_runtime_name(runtime)
    if runtime == "torch":
        import torch

        from falv.inference import check_precision, choose_device, precision_name

        dtype = check_precision(precision, choose_device(device))
        return "int8" if dtype == torch.int8 else precision_name(dtype)
    choices = RUNTIME_PRECISIONS[runtime]
    if precision not in choices:
        raise ConfigError(f"--runtime {runtime} runs precision {', '.join(choices)}, not {precision!r}"
                          + ("; use --runtime torch or openvino for bf16" if precision == "bf16" else ""))
    if device not in (None, "auto", "cpu"):
        raise ConfigError(f"--runtime {runtime} runs on the CPU in falv; use --device cpu (or auto), "
                          f"or --runtime torch for {device}")
    from falv.export.onnx import require

    require(_PACKAGES[runtime], f"--runtime {runtime}")
    require("onnx", f"--runtime {runtime}")
    if runtime == "openvino":
        if precision == "auto":
            return "bf16" if openvino_supports_bf16() else "fp32"
        if precision == "bf16" and not openvino_supports_bf16():
            raise ConfigError("OpenVINO's CPU plugin has no bf16 on this CPU (it lists "
                              "FP32 and INT8 only); use --precision fp32 or int8")
    return "fp32" if precision == "auto" else precision


class ExportedModel:
    """An exported graph run by ONNX Runtime or OpenVINO, with ``InferenceModel``'s ``predict``.

    ``per_clip``: run the clips of a batch one at a time (dynamic int8 quantises activations
    with one range per call, which would make a clip's scores depend on its neighbours)."""

    runtime = ""

    def __init__(self, path: Path, precision: str, *, method: str = "", per_clip: bool = False,
                 source: Path | None = None) -> None:
        import torch

        self.path = Path(path)
        self.precision = precision
        self.method = method
        self.per_clip = per_clip
        self.source = source
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.mode = f"{self.runtime} {precision}" + (f" ({method})" if method else "")

    def _run(self, x: Any) -> tuple[Any, Any]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def predict(self, pixel_values: Any) -> tuple[Any, Any]:
        """``(B, T, C, H, W)`` clips -> ``(logits, embeddings)``, float32 torch tensors on the CPU."""
        import numpy as np
        import torch

        if self.per_clip and pixel_values.shape[0] > 1:
            parts = [self.predict(clip) for clip in pixel_values.split(1)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        x = np.ascontiguousarray(pixel_values.detach().to("cpu", torch.float32).numpy())
        logits, embeddings = self._run(x)
        return (torch.from_numpy(np.array(logits, dtype=np.float32, copy=True)),
                torch.from_numpy(np.array(embeddings, dtype=np.float32, copy=True)))

    __call__ = predict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, {self.mode})"


class OnnxRuntimeModel(ExportedModel):
    """An ``.onnx`` file in an ONNX Runtime CPU session (all graph optimisations, one thread per core)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, precision: str = "fp32", *, num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(path, precision, **kwargs)
        from falv.export.onnx import require
        from falv.inference import default_num_threads

        ort = require("onnxruntime", "--runtime onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or default_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # no busy-waiting between runs: the engine's decoding workers (and torch in the same
        # process) need those cores; spinning threads made interleaved torch runs several times slower
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.num_threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, x: Any) -> tuple[Any, Any]:
        logits, embeddings = self.session.run(["logits", "embeddings"], {"pixel_values": x})
        return logits, embeddings


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.lru_cache(maxsize=None)
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Give the calling thread its alternate signal stack back after the block.

    OpenVINO's CPU plugin replaces the calling thread's alternate signal stack (``sigaltstack``)
    with one of its own that it unmaps later; Python's signal handlers run on that stack
    (``SA_ONSTACK``), so the next handled signal (Ctrl-C, a timer) killed the process with
    SIGSEGV. Measured in falv's test suite; a no-op where ``sigaltstack`` is not available."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = _libc()
    saved = _SignalStack()
    kept = libc.sigaltstack(None, ctypes.byref(saved)) == 0
    try:
        yield
    finally:
        if kept:
            libc.sigaltstack(ctypes.byref(saved), None)


class OpenVINOModel(ExportedModel):
    """An OpenVINO IR (or ``.onnx`` file, or an ``openvino.Model``) compiled for the CPU, latency hint.

    ``precision`` sets the CPU plugin's inference precision: fp32 -> f32, bf16 -> bf16; int8
    files keep their quantised layers in int8 and run the rest in f32 (bf16 where native)."""

    runtime = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", *, num_threads: int | None = None,
                 model: Any = None, **kwargs: Any) -> None:
        super().__init__(path, precision, **kwargs)
        from falv.export.onnx import require
        from falv.inference import default_num_threads

        ov = require("openvino", "--runtime openvino")
        self.num_threads = int(num_threads or default_num_threads())
        hint = "bf16" if precision == "bf16" or (precision == "int8" and openvino_supports_bf16()) else "f32"
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": self.num_threads}
        core = ov.Core()
        with keep_signal_stack():
            self.compiled = core.compile_model(model if model is not None else str(path), "CPU", config)
            self.request = self.compiled.create_infer_request()
        self._outputs = (self.compiled.output("logits"), self.compiled.output("embeddings"))

    def _run(self, x: Any) -> tuple[Any, Any]:
        with keep_signal_stack():
            result = self.request.infer({"pixel_values": x})
        return result[self._outputs[0]], result[self._outputs[1]]


def _export_dir(model_or_dir: Any, log: Callable[[str], None] | None) -> Path:
    from falv.export.onnx import cached_export, load_model, read_export_dir

    if isinstance(model_or_dir, (str, os.PathLike)):
        if read_export_dir(model_or_dir) is not None:
            return Path(model_or_dir)
        model_or_dir = load_model(model_or_dir)
    return cached_export(model_or_dir, log=log)


def _int8_file(directory: Path, meta: dict[str, Any], runtime: str, log: Callable[[str], None]) -> tuple[Path, Any, str]:
    """(file, in-memory model or None, method) of the int8 graph for ``runtime``: the export
    folder's own, else one made without data (ORT dynamic, cached; OpenVINO weight compression)."""
    from falv.export import onnx as ex

    files = meta.get("files", {})
    key = "onnx_int8" if runtime == "onnxruntime" else "openvino_int8"
    if key in files and (directory / files[key]["file"]).is_file():
        return directory / files[key]["file"], None, str(files[key].get("method", ""))
    if runtime == "onnxruntime":
        target = ex.cache_root() / str(meta["fingerprint"]) / "int8-dynamic" / ex.ONNX_INT8_NAME
        if not target.is_file():
            log("quantising for ONNX Runtime (int8, dynamic)")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{os.getpid()}-{target.name}")
            ex.quantize_onnx(directory / ex.ONNX_NAME, tmp)
            os.replace(tmp, target)
        return target, None, "dynamic"
    ov = ex.require("openvino", "--runtime openvino")
    nncf = ex.quiet_nncf()
    log("compressing weights to int8 for OpenVINO (NNCF, data-free)")
    model = nncf.compress_weights(ov.Core().read_model(str(directory / ex.ONNX_NAME)),
                                  mode=nncf.CompressWeightsMode.INT8_ASYM)
    return directory / ex.ONNX_NAME, model, "weights (data-free)"


def prepare_runtime(
    model_or_dir: Any,
    runtime: str = "torch",
    precision: str = "auto",
    device: str | None = "auto",
    *,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """A runner with ``predict(pixel_values) -> (logits, embeddings)`` for ``runtime``.

    ``model_or_dir``: a loaded model (FAL or the CNN baseline), a model folder, or an
    export folder (``falv export``). ``torch`` is :func:`falv.inference.prepare_for_inference`
    (which converts a loaded model in place); the others run the exported graph and leave
    the model untouched. What a future ``falv serve`` calls, as the labeling engine does.
    """
    say = log or (lambda _msg: None)
    check_runtime_name(runtime)
    if runtime == "torch":
        from falv.inference import prepare_for_inference

        model = model_or_dir
        if isinstance(model, (str, os.PathLike)):
            from falv.export.onnx import load_model

            model = load_model(model)
        return prepare_for_inference(model, device=device, precision=precision, num_threads=num_threads)
    resolved = check_runtime(runtime, precision, device)
    from falv.export.onnx import ONNX_NAME, OPENVINO_NAME, OPENVINO_DIR, read_export_dir

    directory = _export_dir(model_or_dir, say)
    meta = read_export_dir(directory) or {}
    if resolved == "int8":
        path, model, method = _int8_file(directory, meta, runtime, say)
        per_clip = method != "static"
        if runtime == "onnxruntime":
            return OnnxRuntimeModel(path, "int8", num_threads=num_threads, method=method, per_clip=per_clip,
                                    source=directory)
        return OpenVINOModel(path, "int8", num_threads=num_threads, model=model, method=method, per_clip=per_clip,
                             source=directory)
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(directory / ONNX_NAME, resolved, num_threads=num_threads, source=directory)
    ir = directory / OPENVINO_DIR / OPENVINO_NAME
    return OpenVINOModel(ir if ir.is_file() else directory / ONNX_NAME, resolved, num_threads=num_threads,
                         source=directory)
