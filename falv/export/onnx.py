"""``falv export``: a model to ONNX (and OpenVINO IR), with its config and preprocessing beside it.

The exported graph takes ``pixel_values`` float32 ``(batch, T, C, H, W)`` (the
processor's pixels: resized, centre-cropped, rescaled, normalised) and returns
``logits`` ``(batch, num_labels)`` and ``embeddings`` ``(batch, D)`` (the clip
embedding falv label writes): the two outputs of
:meth:`falv.inference.InferenceModel.predict`. The batch axis is dynamic;
frames and size are fixed at export (FAL's attention groups are index tables of
the patch grid, and the positional embeddings are resized for one grid).

An export folder is a falv model folder too (config.json, model.safetensors,
preprocessor_config.json), plus ``model.onnx``, ``export.json`` and what was
asked for: ``model.int8.onnx``, ``openvino/model.xml`` (+ ``.bin``),
``openvino/model.int8.xml``. Every falv command takes it as ``--model``; with
``--runtime onnxruntime`` or ``openvino`` they run its exported files.
See docs/export.md.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from falv.errors import ConfigError, FalvError

#: The ONNX opset of every exported graph (ONNX Runtime >= 1.12 and OpenVINO read it).
OPSET = 17
#: Bumped when the exported graph or the metadata change meaning (part of the cache key).
EXPORT_VERSION = "1"

ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
OPENVINO_DIR = "openvino"
OPENVINO_NAME = "model.xml"
OPENVINO_INT8_NAME = "model.int8.xml"
METADATA_NAME = "export.json"
FORMATS = ("onnx", "openvino")
QUANTIZE = ("int8",)
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("logits", "embeddings")


class ExportError(FalvError):
    """A model cannot be exported or quantised (the message names the operator or the cause)."""


def require(module: str, what: str) -> Any:
    """Import an optional dependency of the export extra, or raise a one-line ConfigError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ConfigError(
            f"{what} needs the {package} package, which is not installed: install falv's export extra "
            f"(pip install \".[export]\" in the falv folder, or make install)"
        ) from exc


# -- loading ----------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike) -> Any:
    """Any model :func:`falv.hub.families.load_model` reads, in eval mode."""
    from falv.hub.families import load_model as load_any

    return load_any(path)


def load_processor(model: Any, source: str | os.PathLike | None = None) -> Any:
    """The checkpoint's own preprocessing when ``source`` has one, else the config's."""
    from falv.processing import FALImageProcessor

    if source is not None and Path(source, "preprocessor_config.json").is_file():
        return FALImageProcessor.from_pretrained(source)
    return FALImageProcessor.from_config(model.config)


# -- fingerprint and metadata -----------------------------------------------------------------------


def fingerprint(model: Any, opset: int = OPSET) -> str:
    """sha256 of the model's config, weights and buffers and the export settings: the key under
    which an export is cached and by which an export folder is recognised as this model's."""
    import torch

    from falv import __version__

    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(f"|{type(model).__name__}|{opset}|{EXPORT_VERSION}|{__version__}|{torch.__version__}|".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def sampling_info(num_frames: int, clip_seconds: float | None = None) -> dict[str, Any]:
    """How falv picks the frames of a clip (what a service must repeat to get falv's scores)."""
    if clip_seconds is None:
        clips = ("falv label --clips K: K consecutive windows of duration/K seconds (default K=1: the whole "
                 "video); --window W --stride S: sliding windows of W seconds")
    else:
        clips = (f"windows of clip_seconds ({clip_seconds:g} s, the model's training clips): by default side by "
                 "side over the video; falv label --clips K: K of them spread evenly over it; a video no longer "
                 "than one window is one window")
    return {
        "num_frames": int(num_frames),
        "clip_seconds": clip_seconds,
        "timestamps": "TSN segment centres: the window is cut into num_frames equal segments and the frame "
                      "shown at each segment's centre is taken (falv.video.sampling.plan_windows)",
        "clips": clips,
        "frame_order": "time order; pixel_values[b, t] is frame t",
        "resize": "shortest side to size.shortest_edge (bilinear, antialiased), centre crop to crop_size",
        "pixels": "RGB, rescale by rescale_factor (1/255), then (x - image_mean) / image_std per channel",
    }


def export_metadata(model: Any, processor: Any, *, opset: int, model_fingerprint: str,
                    source: str | None) -> dict[str, Any]:
    """What ``export.json`` and the ONNX ``metadata_props`` hold (every value JSON-ready)."""
    import torch

    from falv import __version__

    config = model.config
    return {
        "falv_export_version": EXPORT_VERSION,
        "falv_version": __version__,
        "torch_version": torch.__version__,
        "opset": int(opset),
        "model_type": str(getattr(config, "model_type", type(model).__name__)),
        "architecture": type(model).__name__,
        "attention_type": getattr(config, "attention_type", None),
        "source": source,
        "fingerprint": model_fingerprint,
        "labels": list(config.labels),
        "multilabel": bool(config.is_multilabel),
        "thresholds": None if config.thresholds is None else list(config.thresholds),
        "num_frames": int(config.num_frames),
        "image_size": int(config.image_size),
        "num_channels": int(config.num_channels),
        "embedding_size": int(config.hidden_size),
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
        "rescale_factor": float(processor.rescale_factor),
        "size": dict(processor.size),
        "crop_size": dict(processor.crop_size),
        "sampling": sampling_info(config.num_frames, getattr(config, "clip_seconds", None)),
        # scores = softmax (sigmoid: multi-label) of logits / temperature, as falv labels
        "temperature": getattr(config, "temperature", None),
        "inputs": {INPUT_NAME: {"dtype": "float32", "shape": ["batch", int(config.num_frames),
                                                               int(config.num_channels), int(config.image_size),
                                                               int(config.image_size)]}},
        "outputs": {"logits": {"dtype": "float32", "shape": ["batch", len(config.labels)]},
                    "embeddings": {"dtype": "float32", "shape": ["batch", int(config.hidden_size)]}},
        "dynamic_axes": {"batch": "axis 0 of pixel_values, logits and embeddings"},
        "config": config.to_dict(),
        "preprocessor": processor.to_dict(),
    }


def _metadata_props(metadata: dict[str, Any], precision: str) -> dict[str, str]:
    """ONNX ``metadata_props`` are string pairs: every top-level key as ``falv.<key>`` (JSON text
    unless a plain string)."""
    props = {f"falv.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    props["falv.precision"] = precision
    return props


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``falv.*`` metadata of an exported ``.onnx`` file, decoded (``precision`` included)."""
    onnx = require("onnx", "reading ONNX metadata")
    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith("falv."):
            key = prop.key[len("falv."):]
            try:
                out[key] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[key] = prop.value
    return out


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "falv"
    onnx.save(proto, str(path))


# -- ONNX -------------------------------------------------------------------------------------------


def _wrapper(model: Any) -> Any:
    import torch

    class _Outputs(torch.nn.Module):
        """``pixel_values -> (logits, embeddings)``: the exported graph's signature."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.inner(pixel_values)
            return out.logits, out.embeddings

    return _Outputs(model)


_OPERATOR = re.compile(r"operator '?([A-Za-z_0-9.]+::[A-Za-z_0-9.]+)'?|([A-Za-z_]+::[A-Za-z_0-9.]+)")


def _operator_error(exc: BaseException, model: Any, opset: int) -> ExportError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = _OPERATOR.search(str(exc))
    name = type(model).__name__
    if match:
        op = match.group(1) or match.group(2)
        return ExportError(f"{name} cannot be exported to ONNX opset {opset}: operator {op} is not supported "
                           f"({text})")
    return ExportError(f"{name} cannot be exported to ONNX opset {opset}: {text}")


@contextlib.contextmanager
def _no_ir_dump() -> Any:
    """The TorchScript exporter prints the whole IR graph when an operator fails (its log switch
    reads as always on in torch 2.13); the one-line ExportError says what matters."""
    import torch

    original = getattr(torch._C, "_jit_onnx_log", None)
    if original is None:  # pragma: no cover - other torch versions
        yield
        return
    torch._C._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        torch._C._jit_onnx_log = original


def export_onnx(model: Any, path: str | os.PathLike, *, opset: int = OPSET, example_batch: int = 2) -> Path:
    """Write ``model`` (FAL or the CNN baseline, fp32) as an ONNX graph ``pixel_values ->
    (logits, embeddings)`` with a dynamic batch axis; the model itself is left untouched.

    The graph is traced with TorchScript's ONNX exporter at ``example_batch`` clips (2: a
    batch of 1 could be specialised away) on a float32 CPU copy with the explicit-softmax
    attention (plain MatMul/Softmax nodes, the same function as SDPA). An operator the
    opset lacks raises :class:`ExportError` naming it."""
    import torch

    require("onnx", "ONNX export")
    path = Path(path)
    config = model.config
    if getattr(model, "int8_linears", 0) or any(type(m).__name__ in ("PackedLinear", "Int8Linear")
                                                 for m in model.modules()):
        raise ExportError("this model was prepared for inference (prepacked or int8 linears); export the model "
                          "as loaded (falv export MODEL_DIR)")
    net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    if hasattr(net, "set_attention_backend"):
        net.set_attention_backend("reference")
    shape = (example_batch, config.num_frames, config.num_channels, config.image_size, config.image_size)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    try:
        with torch.no_grad(), warnings.catch_warnings(), _no_ir_dump():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings: the graph is checked by tests
            torch.onnx.export(_wrapper(net), (example,), str(path), input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one line naming the cause
        raise _operator_error(exc, model, opset) from exc
    return path


# -- calibration clips ------------------------------------------------------------------------------


def calibration_clips(source: str | os.PathLike, model: Any, processor: Any, *, limit: int = 32,
                      clips_per_video: int = 1) -> list[Any]:
    """Up to ``limit`` clips ``(1, T, C, H, W)`` float32 from the videos under ``source``, cut and
    preprocessed exactly as falv label does (the engine's own stages)."""
    from falv.labeling.engine import clip_tensor
    from falv.labeling.inputs import collect_inputs
    from falv.labeling.stages import LabelOptions, ModelSpec, decode_chunk, plan_video

    found = collect_inputs([str(source)])
    if not found.paths:
        reason = found.problems[0][1] if found.problems else "no video files"
        raise ConfigError(f"--calibrate {source}: {reason}")
    spec = ModelSpec(num_frames=int(model.config.num_frames), short_side=int(processor.size["shortest_edge"]),
                     crop=(int(processor.crop_size["height"]), int(processor.crop_size["width"])),
                     mean=tuple(processor.image_mean), std=tuple(processor.image_std),
                     rescale=processor.rescale_factor,
                     clip_seconds=getattr(model.config, "clip_seconds", None),  # the windows falv label plans
                     frame_selection=getattr(model.config, "frame_selection", "uniform"))
    options = LabelOptions(clips=clips_per_video)
    clips: list[Any] = []
    for path in found.paths:
        try:
            plan = plan_video(path, spec, options)
            result = decode_chunk(path, [ts for *_, ts in plan["windows"]], spec.short_side, 120.0)
        except Exception:  # noqa: BLE001 - an unreadable video is skipped, as falv label would report it
            continue
        for frames in result["frames"]:
            clips.append(clip_tensor(frames, spec, 1))
            if len(clips) >= limit:
                return clips
    if not clips:
        raise ConfigError(f"--calibrate {source}: none of its {len(found.paths)} video(s) could be decoded")
    return clips


# -- int8 -------------------------------------------------------------------------------------------


def _quantizable_nodes(onnx_path: Path, op_types: Sequence[str]) -> tuple[list[str], list[str]]:
    """(nodes to quantise, nodes to keep in float): MatMul/Gemm/Conv with a constant weight inside
    the transformer blocks (or the CNN's residual stages). The patch embedding, the head and the
    attention's activation x activation MatMuls stay float, as in falv's own int8."""
    onnx = require("onnx", "int8 quantisation")
    graph = onnx.load(str(onnx_path)).graph
    consts = {i.name for i in graph.initializer}
    consts |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    keep, skip = [], []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        inside = "/blocks." in node.name or "/stages/" in node.name or "/stages." in node.name
        weighted = len(node.input) > 1 and node.input[1] in consts
        (keep if inside and weighted else skip).append(node.name)
    return keep, skip


def cpu_has_vnni() -> bool:
    """x86 int8 dot products without 16-bit saturation (AVX512-VNNI or AVX-VNNI)."""
    from falv.inference import _cpu_flags

    flags = _cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags


class _Quiet(logging.Filter):
    """Drops the quantisers' advice lines (ONNX Runtime logs them on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx(onnx_path: Path, out_path: Path, calibration: Sequence[Any] | None = None) -> dict[str, Any]:
    """ONNX Runtime int8: dynamic (``calibration=None``: activations quantised per call, weights per
    channel) or static (QDQ, activation ranges from the calibration clips, MinMax).

    Without VNNI (e.g. AVX2-only CPUs) the weights use 7 bits (``reduce_range``): ONNX Runtime's
    u8 x s8 kernels there sum pairs in 16 bits, which saturate with full-range weights (measured:
    0.31 vs 0.09 max logit error on a tiny model). The choice is recorded in the metadata."""
    ort_q = require("onnxruntime.quantization", "int8 quantisation for ONNX Runtime")
    nodes, excluded = _quantizable_nodes(onnx_path, ("MatMul", "Gemm", "Conv"))
    if not nodes:
        raise ExportError("int8 quantises the linears of transformer blocks (or the CNN's stages); "
                          f"{onnx_path} has none")
    reduce_range = not cpu_has_vnni()
    common = dict(per_channel=True, reduce_range=reduce_range, weight_type=ort_q.QuantType.QInt8,
                  nodes_to_exclude=excluded, op_types_to_quantize=["MatMul", "Gemm", "Conv"])
    quiet = _Quiet()
    logging.getLogger().addFilter(quiet)
    try:
        return _quantize_onnx(ort_q, onnx_path, out_path, calibration, common, len(nodes))
    finally:
        logging.getLogger().removeFilter(quiet)


def _quantize_onnx(ort_q: Any, onnx_path: Path, out_path: Path, calibration: Sequence[Any] | None,
                   common: dict[str, Any], count: int) -> dict[str, Any]:
    info = {"nodes": count, "reduce_range": common["reduce_range"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if calibration is None:
            ort_q.quantize_dynamic(str(onnx_path), str(out_path), **common)
            return {"method": "dynamic", **info}

        class _Reader(ort_q.CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(calibration)

            def get_next(self) -> dict[str, Any] | None:
                clip = next(self._it, None)
                return None if clip is None else {INPUT_NAME: clip.numpy().astype("float32")}

        ort_q.quantize_static(str(onnx_path), str(out_path), _Reader(), quant_format=ort_q.QuantFormat.QDQ,
                              activation_type=ort_q.QuantType.QUInt8,
                              calibrate_method=ort_q.CalibrationMethod.MinMax, **common)
    return {"method": "static", **info, "calibration_clips": len(calibration)}


# -- OpenVINO ---------------------------------------------------------------------------------------


def convert_openvino(onnx_path: Path, xml_path: Path, metadata: dict[str, str] | None = None) -> Path:
    """ONNX -> OpenVINO IR (``.xml`` + ``.bin``), weights kept in fp32 (no fp16 compression)."""
    ov = require("openvino", "OpenVINO export")
    model = ov.convert_model(str(onnx_path))
    for key, value in (metadata or {}).items():
        model.set_rt_info(value, ["falv", key.removeprefix("falv.")])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_openvino(xml_path: Path, out_path: Path, calibration: Sequence[Any] | None, *,
                      transformer: bool) -> dict[str, Any]:
    """OpenVINO int8 with NNCF: with calibration clips, post-training quantisation of weights and
    activations (``nncf.quantize``, patch embedding and head kept float); without, data-free int8
    weight compression (``nncf.compress_weights``; the CPU plugin quantises activations itself)."""
    ov = require("openvino", "OpenVINO int8")
    nncf = quiet_nncf()
    model = ov.Core().read_model(str(xml_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if calibration is None:
            quantized = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            info = {"method": "weights (data-free)"}
        else:
            data = nncf.Dataset([clip.numpy().astype("float32") for clip in calibration])
            # as falv's own int8 and ONNX Runtime's: attention's activation x activation MatMuls stay float
            ignored = nncf.IgnoredScope(patterns=[".*patch_embed.*", ".*/head/.*", ".*/attn/MatMul.*"],
                                        validate=False)
            from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                               AdvancedSmoothQuantParameters, OverflowFix)

            kwargs: dict[str, Any] = dict(model_type=nncf.ModelType.TRANSFORMER) if transformer else {}
            advanced: dict[str, Any] = {}
            # SmoothQuant off: its default for transformers (alpha 0.95 on MatMuls) moved scores by up to
            # 0.43 and flipped 3 of 120 top-1s of a trained tiny model; without it 119/120, 0.04
            # (docs/performance.md, "Agreement on a trained model")
            if transformer:
                advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=-1)
            # without VNNI, 7-bit weights everywhere (as ONNX Runtime's reduce_range): 16-bit pair sums saturate
            overflow_fix = not cpu_has_vnni()
            if overflow_fix:
                advanced["overflow_fix"] = OverflowFix.ENABLE
            if advanced:
                kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
            from falv.export.runtime import keep_signal_stack

            with keep_signal_stack():  # NNCF runs OpenVINO inference for its statistics
                quantized = nncf.quantize(model, data, subset_size=len(calibration), ignored_scope=ignored,
                                          **kwargs)
            info = {"method": "static", "calibration_clips": len(calibration), "overflow_fix": overflow_fix}
            if transformer:
                info["smooth_quant"] = False
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return info


def quiet_nncf() -> Any:
    """Import NNCF with its info tables and progress bars off."""
    nncf = require("nncf", "OpenVINO int8 (NNCF)")
    try:
        nncf.set_log_level(logging.ERROR)
    except AttributeError:  # pragma: no cover - older NNCF
        logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


# -- the whole export -------------------------------------------------------------------------------


def _parse_formats(formats: str | Sequence[str]) -> list[str]:
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [p.strip().lower() for item in items for p in str(item).split(",") if p.strip()]
    for name in names:
        if name not in FORMATS:
            raise ConfigError(f"unknown export format {name!r}; valid formats: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names)) or ["onnx"]


def export_model(
    model: Any,
    out_dir: str | os.PathLike,
    *,
    formats: str | Sequence[str] = ("onnx",),
    quantize: str | None = None,
    calibrate: str | os.PathLike | Sequence[Any] | None = None,
    calibration_limit: int = 32,
    opset: int = OPSET,
    processor: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (a loaded model or anything ``falv export`` takes) into ``out_dir``.

    Always writes the falv model folder (config.json, model.safetensors,
    preprocessor_config.json), ``model.onnx`` and ``export.json``; ``formats``
    containing ``"openvino"`` adds ``openvino/model.xml``; ``quantize="int8"`` adds
    ``model.int8.onnx`` (and ``openvino/model.int8.xml``): static, calibrated on up to
    ``calibration_limit`` clips of the videos under ``calibrate`` (or a list of ``(1, T, C, H, W)``
    clips), or dynamic (ONNX
    Runtime) / weight-only (OpenVINO) without. Returns the ``export.json`` content.
    """
    say = log or (lambda _msg: None)
    names = _parse_formats(formats)
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantisation {quantize!r}; valid values: {', '.join(QUANTIZE)}")
    if calibrate is not None and quantize is None:
        raise ConfigError("--calibrate needs --quantize int8 (it calibrates the int8 activation ranges)")
    require("onnx", "ONNX export")
    if "openvino" in names:
        require("openvino", "--format openvino")
    if quantize and "openvino" in names:
        require("nncf", "OpenVINO int8")
    if quantize:
        require("onnxruntime", "int8 quantisation for ONNX Runtime")
    source = None
    if not hasattr(model, "state_dict"):
        source = str(model)
        model = load_model(model)
        processor = processor or load_processor(model, source)
    processor = processor or load_processor(model, getattr(model, "name_or_path", None))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    calibration = None
    if isinstance(calibrate, (list, tuple)):  # clips (1, T, C, H, W) already made (benchmarks, tests)
        calibration = list(calibrate)[:calibration_limit]
    elif calibrate is not None:
        say(f"reading calibration clips from {calibrate}")
        calibration = calibration_clips(calibrate, model, processor, limit=calibration_limit)

    say("writing the falv model folder")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    key = fingerprint(model, opset)
    metadata = export_metadata(model, processor, opset=opset, model_fingerprint=key, source=source)
    files: dict[str, Any] = {}
    say(f"exporting ONNX (opset {opset})")
    onnx_path = export_onnx(model, out / ONNX_NAME, opset=opset)
    _set_metadata(onnx_path, _metadata_props(metadata, "fp32"))
    files["onnx"] = {"file": ONNX_NAME, "precision": "fp32"}
    if quantize:
        say("quantising for ONNX Runtime (int8, " + ("static" if calibration else "dynamic") + ")")
        q_info = quantize_onnx(onnx_path, out / ONNX_INT8_NAME, calibration)
        _set_metadata(out / ONNX_INT8_NAME, _metadata_props(metadata, f"int8-{q_info['method']}"))
        files["onnx_int8"] = {"file": ONNX_INT8_NAME, "precision": "int8", **q_info}
    if "openvino" in names:
        say("converting to OpenVINO IR")
        xml = convert_openvino(onnx_path, out / OPENVINO_DIR / OPENVINO_NAME, _metadata_props(metadata, "fp32"))
        files["openvino"] = {"file": f"{OPENVINO_DIR}/{OPENVINO_NAME}", "precision": "fp32"}
        if quantize:
            say("quantising for OpenVINO (int8, NNCF)")
            transformer = hasattr(model.config, "attention_type")
            v_info = quantize_openvino(xml, out / OPENVINO_DIR / OPENVINO_INT8_NAME, calibration,
                                       transformer=transformer)
            files["openvino_int8"] = {"file": f"{OPENVINO_DIR}/{OPENVINO_INT8_NAME}", "precision": "int8", **v_info}
    record = {**metadata, "files": files}
    from falv.hub.io import atomic_write_text

    atomic_write_text(out / METADATA_NAME, json.dumps(record, indent=2) + "\n")
    return record


def read_export_dir(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``export.json`` of an export folder, or None when ``directory`` is none."""
    path = Path(directory) / METADATA_NAME
    if not (path.is_file() and (Path(directory) / ONNX_NAME).is_file()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def cache_root() -> Path:
    """Where models exported on the fly (``--runtime onnxruntime`` on a plain model folder) are kept:
    ``$FALV_CACHE_DIR/export``, else ``$XDG_CACHE_HOME/falv/export``, else ``~/.cache/falv/export``."""
    base = os.environ.get("FALV_CACHE_DIR")
    if base:
        return Path(base) / "export"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "falv" / "export"


def cached_export(model: Any, key: str | None = None, *, formats: Sequence[str] = ("onnx",),
                  log: Callable[[str], None] | None = None) -> Path:
    """The export folder of ``model``: its own folder when it was loaded from an export of the same
    weights, else ``cache_root()/<fingerprint>``, exported there on first use (atomically: a
    half-written export is never picked up). ``formats`` missing from a cached folder are added."""
    key = key or fingerprint(model)
    own = getattr(model, "name_or_path", None)
    if own:
        meta = read_export_dir(own)
        if meta is not None and meta.get("fingerprint") == key and all(
                name in meta.get("files", {}) for name in formats):
            return Path(own)
    target = cache_root() / key
    meta = read_export_dir(target)
    if meta is not None and all(name in meta.get("files", {}) for name in formats):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=target.parent))
    try:
        export_model(model, tmp, formats=formats, log=log)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
