"""Fast inference: device and precision choice, and a prepared model with ``predict``.

The labeling engine and ``falv bench`` share this one path::

    runner = prepare_for_inference(model, device="auto", precision="auto")
    logits, embeddings = runner.predict(pixel_values)   # both float32

``precision="auto"`` picks bf16 on CPUs with native bf16 dot products
(AVX512-BF16 or AMX) and on CUDA devices that support it, fp32 elsewhere.
``precision="int8"`` (CPU, opt-in) runs the transformer blocks' linears in int8
(:class:`Int8Linear`: weights per output channel, activations quantized per call)
and the rest of the model as "auto" would; see docs/performance.md for its speed
and its agreement with fp32.
In bf16 the weights themselves are cast (``mode="weights"``), which measured
faster on CPU than autocast (docs/performance.md), and on CPU every
``nn.Linear`` is replaced by a oneDNN linear with its weight reordered once
(prepacked) and, in the MLP, GELU (exact) fused into the first matmul; short
attention groups use the model's explicit-softmax attention, faster on CPU than
SDPA's flash kernel at 8 and 197 tokens. LayerNorm and softmax keep float
accumulation inside their bf16 kernels.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from falv.errors import ConfigError

_log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BF16_MODES = ("auto", "weights", "autocast")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}


# -- hardware ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16).

    Without them torch still runs bf16, but by conversion to fp32, which is slower
    than fp32 itself. On non-Linux systems (no /proc/cpuinfo) this answers False.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return False
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU; any other value is used as given."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but torch sees no CUDA device; use --device cpu")
    return device


def device_supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype for a precision name on a device.

    ========  ==========================  ==========================
    name      CPU                          CUDA
    ========  ==========================  ==========================
    auto      bf16 if native bf16, fp32   bf16 if supported, fp32
    fp32      fp32                         fp32
    bf16      bf16 (slow without native)  bf16
    fp16      error (no fast CPU kernels)  fp16
    int8      int8 (block linears only)    error (CPU only)
    ========  ==========================  ==========================

    ``torch.int8`` means: int8 linears in the transformer blocks, everything else in
    :func:`compute_dtype_for_int8` (bf16 with native bf16, else fp32).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid values: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device_supports_bf16(device) else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 is only supported on CUDA; use bf16 or fp32 on CPU")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("int8 is a CPU (oneDNN) precision; use bf16 or fp16 on CUDA")
    return _DTYPES[precision]


def check_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """:func:`resolve_precision`, and for int8 also whether its kernels work here: what a run
    checks before it starts (prepare_for_inference, the labeling engine)."""
    dtype = resolve_precision(precision, device)
    if dtype == torch.int8 and not int8_available():
        raise ConfigError("int8 needs oneDNN's quantized linear kernels, which this torch build or CPU lacks or "
                          "runs inaccurately (no VNNI: 16-bit accumulation saturates); use --precision auto")
    return dtype


def compute_dtype_for_int8() -> torch.dtype:
    """What runs outside the int8 linears (attention, LayerNorm, GELU, head): bf16 where native."""
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


def default_num_threads() -> int:
    """CPU cores this process may run on (what torch should use for intra-op threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- prepacked oneDNN linears -----------------------------------------------------------------------


def _longest_group(model: nn.Module) -> int | None:
    """Longest attention sequence (group length + CLS) of a FAL model at its own clip shape."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "attention_type"):
        return None
    from falv.model.schemes import scheme_steps

    side = config.image_size // config.patch_size
    longest = 0
    for _name, grouping, cls_mode, _fc in scheme_steps(config.attention_type):
        for idx in grouping(config.num_frames, side, side):
            longest = max(longest, idx.shape[1] + (cls_mode != "none"))
    return longest


#: Above this sequence length "auto" keeps SDPA (the explicit softmax needs L x L memory per head).
REFERENCE_ATTENTION_MAX_LEN = 512


def _auto_attention_backend(model: nn.Module, device: torch.device, mode: str) -> str | None:
    """On CPU in bf16, the explicit-softmax attention measured faster than SDPA's flash kernel for
    short groups (divided 8x224: 8 and 197 tokens; docs/performance.md); elsewhere keep the model's."""
    if device.type != "cpu" or mode not in ("weights", "int8") or not hasattr(model, "set_attention_backend"):
        return None
    longest = _longest_group(model)
    if longest is not None and longest <= REFERENCE_ATTENTION_MAX_LEN:
        return "reference"
    return None


def _onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """An ``nn.Linear`` whose weight is reordered once into oneDNN's blocked layout.

    ``activation`` ("none", "gelu", "gelu_tanh", "relu") is fused into the matmul.
    Inference only: the packed weight is no parameter (no grad, not in state_dict).
    """

    _ATTRS = {"none": ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", "")}

    def __init__(self, linear: nn.Linear, activation: str = "none", rows_hint: int = 1024) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        self._attr, self._algorithm = self._ATTRS[activation]
        weight = linear.weight.detach()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self._attr, [], self._algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


def _gelu_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    if isinstance(module, nn.ReLU):
        return "relu"
    return None


def replace_linears(
    model: nn.Module, make: Any, fuse_activation: bool = True, within: str | None = None
) -> int:
    """Replace the ``nn.Linear`` layers of ``model`` by ``make(linear, activation)``, fusing the
    activation of ``fc1 -> act -> fc2`` MLPs into ``fc1`` (``act`` becomes Identity). ``within``:
    only modules whose qualified name has that component (e.g. ``"blocks"``). Returns the count."""
    count = 0
    for name, module in list(model.named_modules()):
        if within is not None and within not in name.split("."):
            continue
        if fuse_activation:
            fc1, act = getattr(module, "fc1", None), getattr(module, "act", None)
            kind = _gelu_kind(act) if act is not None else None
            if type(fc1) is nn.Linear and kind is not None:
                module.fc1 = make(fc1, kind)
                module.act = nn.Identity()
                count += 1
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, make(child, "none"))
                count += 1
    return count


def pack_linears(model: nn.Module, rows_hint: int = 1024, fuse_activation: bool = True) -> int:
    """Replace every ``nn.Linear`` of ``model`` (CPU, fp32 or bf16) by a :class:`PackedLinear`,
    fusing the activation of ``fc1 -> act -> fc2`` MLPs; returns how many were replaced."""
    return replace_linears(model, lambda linear, act: PackedLinear(linear, act, rows_hint), fuse_activation)


def _kernel_works(make: Any, dtype: torch.dtype) -> bool:
    """Run ``make(linear, "gelu")`` once on a small input against ``gelu(linear(x))`` (some
    builds or CPUs lack a kernel); any failure means: not available."""
    try:
        # a layer wide enough to show int8 saturation (u8 x s8 products added in 16 bits on CPUs
        # without VNNI): a relative error over 2% means the kernel is not fit to use here
        generator = torch.Generator().manual_seed(0)
        lin = nn.Linear(64, 96)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(96, 64, generator=generator) / 8)
            lin.bias.copy_(torch.randn(96, generator=generator) / 8)
        x = torch.randn(3, 7, 64, generator=generator)
        expected = nn.functional.gelu(lin(x))  # before make(), which may cast lin in place
        got = make(lin, "gelu")(x.to(dtype)).float()
        return bool(torch.isfinite(got).all() and (got - expected).norm() / expected.norm() < 0.02)
    except Exception:  # noqa: BLE001
        return False


def _packing_works(dtype: torch.dtype) -> bool:
    return _onednn_linear_available() and _kernel_works(lambda lin, act: PackedLinear(lin.to(dtype), act), dtype)


# -- int8 linears ------------------------------------------------------------------------------------


def _int8_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """An ``nn.Linear`` computed in int8 by oneDNN (u8 x s8 dot products, VNNI on x86).

    Weights: symmetric int8 per output channel (scale = max |w| / 127), reordered
    once. Activations: quantized on every call to uint8 with one scale and zero point
    for the whole input (its min and max), so no calibration data is needed
    ("dynamic" quantization). The int32 sums are scaled back, the bias added and the
    fused ``activation`` applied inside the kernel; the output has the input's dtype.
    Inference only: nothing here is a parameter.
    """

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        self._attr, self._algorithm = PackedLinear._ATTRS[activation]
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        qweight = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.weight_scale = scale
        self.weight_zero_point = torch.zeros(self.out_features, dtype=torch.int64)
        self.packed_weight = torch.ops.onednn.qlinear_prepack(qweight, None)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        qx, scale, zero_point = quantize_uint8(x2)
        out = torch.ops.onednn.qlinear_pointwise(
            qx, scale, zero_point, self.packed_weight, self.weight_scale, self.weight_zero_point, self.bias,
            1.0, 0, x.dtype, self._attr, [], self._algorithm,
        )
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


def quantize_uint8(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """Affine uint8 quantization of a whole tensor: ``x ~ scale * (q - zero_point)``.

    The range always includes 0 (so zero padding and ReLU/GELU zeros are exact); a
    constant input gets scale 1. Plain tensor ops (no quantized tensor types).
    """
    lo, hi = (float(v) for v in torch.aminmax(x))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        # let NaN/inf reach the output (the engine reports non-finite scores) instead of a garbage scale
        return torch.full_like(x, 0, dtype=torch.uint8), float("nan"), 0
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero_point = int(min(255, max(0, round(-lo / scale))))
    # A copy first (x.float() would be x itself for a float32 input), then in place: rounding as
    # floor(v + 0.5) by the truncating uint8 conversion of a non-negative value (one pass less
    # than round(); ~20% faster quantization, half-way ties go up instead of to even).
    q = x.to(torch.float32, copy=True).mul_(1.0 / scale).add_(zero_point + 0.5).clamp_(0.0, 255.0)
    q = q.to(torch.uint8)
    return q, scale, zero_point


def quantize_linears(model: nn.Module, fuse_activation: bool = True) -> int:
    """Replace the ``nn.Linear`` layers inside the model's transformer blocks by :class:`Int8Linear`
    (GELU fused into ``fc1``); the patch embedding and the head stay as they are (a common
    choice: first and last layers are the most sensitive and cost little). Returns the count."""
    return replace_linears(model, Int8Linear, fuse_activation, within="blocks")


def _int8_works(dtype: torch.dtype) -> bool:
    return _int8_linear_available() and _kernel_works(Int8Linear, dtype)


@functools.lru_cache(maxsize=1)
def int8_available() -> bool:
    """Whether ``precision="int8"`` can run here (oneDNN's int8 linear works on this CPU and build)."""
    return _int8_works(compute_dtype_for_int8())


def int8_speed(config: Any, model_class: type | None = None, clips: int = 2, repeats: int = 2) -> dict[str, Any] | None:
    """Whether int8 pays on this CPU for a model of ``config``'s shape, measured: a batch of
    ``clips`` clips (int8 runs a batch's clips one at a time, the default precision at once) through a one-block model of that shape (random weights: speed does not
    depend on them), prepared in int8 and in the precision int8 keeps for the rest
    (:func:`compute_dtype_for_int8`), each timed ``repeats`` times alternately after a warm-up
    call, best of each. Returns ``{"int8_ms", "default_ms", "default", "ratio"}`` (milliseconds
    per clip; ratio = int8 / default: above 1 means int8 is slower), or None for a model that
    cannot be built from its config this way.

    One block is what int8 changes (its linears); the embedding and head are the same in both,
    so the ratio understates the difference a little. The measurement follows the CPU, the
    model's width, its token count and torch's threads, which a table of CPU models would not:
    on a 2-core Zen 4, int8 is 1.47x faster than bf16 for ViT-B and slower for the tiny preset
    (docs/performance.md, "int8").
    """
    if model_class is None:
        from falv.model.transformer import FALForVideoClassification as model_class
    try:
        probe = model_class(dataclasses.replace(config, num_hidden_layers=1))
        pixels = torch.zeros(clips, config.num_frames, config.num_channels, config.image_size, config.image_size)
    except Exception:  # not a FAL-shaped config (e.g. another model family)
        return None
    default = precision_name(compute_dtype_for_int8())
    runners = {"int8": prepare_for_inference(copy.deepcopy(probe), "cpu", "int8", check_int8_speed=False),
               "default": prepare_for_inference(probe, "cpu", default)}
    best = {name: math.inf for name in runners}
    for round_ in range(repeats + 1):  # round 0 warms both up (oneDNN primitive creation)
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.predict(pixels)
            if round_:
                best[name] = min(best[name], time.perf_counter() - t0)
    int8_ms, default_ms = 1e3 * best["int8"] / clips, 1e3 * best["default"] / clips
    return {"int8_ms": round(int8_ms, 3), "default_ms": round(default_ms, 3), "default": default,
            "ratio": round(int8_ms / default_ms, 3)}


def int8_slower_message(speed: dict[str, Any]) -> str:
    """What ``precision="int8"`` says when :func:`int8_speed` found it slower than the default."""
    return (f"int8 is slower than {speed['default']} for this model on this CPU: one block takes "
            f"{speed['int8_ms']:.1f} ms per clip in int8 against {speed['default_ms']:.1f} ms in {speed['default']} "
            f"({speed['ratio']:.2f}x the time). Running int8 as asked; --precision auto is faster here "
            f"(int8 pays on wide models, docs/performance.md).")


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution into that convolution
    (``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``) and replace it by
    ``nn.Identity``; returns how many were folded. The pairs come from the model's own
    ``conv_bn_pairs()`` (``(parent module, conv attribute, BatchNorm attribute)``, or ``(conv's
    parent, conv attribute, BatchNorm's parent, BatchNorm attribute)``: the families with BatchNorm
    say where a BatchNorm reads a convolution's output and nothing else), so a model without that
    method is left alone. Inference only: the BatchNorms leave the state dict."""
    pairs = getattr(model, "conv_bn_pairs", None)
    if pairs is None:
        return 0
    count = 0
    with torch.no_grad():
        for pair in list(pairs()):
            parent, conv_name, bn_parent, bn_name = pair if len(pair) == 4 else (pair[0], pair[1], pair[0], pair[2])
            conv, bn = getattr(parent, conv_name), getattr(bn_parent, bn_name)
            if not isinstance(conv, nn.modules.conv._ConvNd) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
                continue
            if bn.running_var is None or bn.num_features != conv.out_channels:
                continue
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
            weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight = nn.Parameter(weight.to(conv.weight.dtype))
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
            setattr(bn_parent, bn_name, nn.Identity())
            count += 1
    return count


def to_channels_last(model: nn.Module) -> str | None:
    """Put the weights of a convolutional model in channels-last order (oneDNN's fast layout on
    CPU; activations follow the weights): ``channels_last_3d`` when it has 3D convolutions,
    ``channels_last`` for 2D ones; returns which, or None for a model without convolutions."""
    kinds = {m.weight.dim() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)}
    if 5 in kinds:
        fmt, name = torch.channels_last_3d, "channels_last_3d"
    elif 4 in kinds:
        fmt, name = torch.channels_last, "channels_last"
    else:
        return None
    dims = 5 if fmt is torch.channels_last_3d else 4
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() == dims:
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    return name


def fold_attention_scales(model: nn.Module) -> int:
    """Multiply every attention's query projection by its 1/sqrt(head_dim) scale, once, so
    that attention skips that multiplication; returns how many were folded. Only for
    models about to be prepacked (their linears leave the state dict anyway)."""
    from falv.model.attention import MultiHeadAttention

    count = 0
    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and type(module.qkv) is nn.Linear:
            module.fold_scale()
            count += 1
    return count


# -- scores ----------------------------------------------------------------------------------------


def scores_from_logits(logits: torch.Tensor, multilabel: bool, temperature: float | None = 1.0) -> torch.Tensor:
    """Class scores of ``logits``: ``softmax(logits / T)``, or ``sigmoid(logits / T)`` for
    multi-label models (temperature scaling, Guo et al. 2017; ``T`` = 1 or None: raw scores).
    ``T`` is the model's ``config.temperature``, fitted by ``falv train`` on its validation split."""
    z = logits if temperature in (None, 1.0) else logits / temperature
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=-1)


def config_scores(logits: torch.Tensor, config: Any, temperature: float | None = None) -> torch.Tensor:
    """:func:`scores_from_logits` with the model ``config``'s problem type and temperature
    (``temperature`` overrides it; 1 gives the raw scores)."""
    t = temperature if temperature is not None else getattr(config, "temperature", None)
    return scores_from_logits(logits, bool(config.is_multilabel), t)


# -- the prepared model ---------------------------------------------------------------------------


@dataclass
class InferenceModel:
    """A model made ready for inference on one device in one precision.

    ``mode``: ``"fp32"`` (plain), ``"weights"`` (weights and inputs cast to ``dtype``)
    or ``"autocast"`` (fp32 weights, matmuls in ``dtype`` under torch.autocast).
    """

    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    mode: str
    packed_linears: int = 0
    int8_linears: int = 0
    compiled: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return "int8" if self.mode == "int8" else precision_name(self.dtype)

    def _context(self) -> contextlib.AbstractContextManager:
        if self.mode == "autocast":
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def _input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype if self.mode in ("weights", "int8") else torch.float32
        return pixel_values.to(self.device, dtype, non_blocking=True)

    def forward(self, pixel_values: torch.Tensor) -> Any:
        """The model's own output object (tensors in the compute dtype)."""
        with torch.inference_mode(), self._context():
            return self._call(self._input(pixel_values))

    def _call(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def predict(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, C, H, W)`` clips -> ``(logits, embeddings)``, both float32 on the model's device.

        In int8 the clips run one at a time: activations are quantized with one scale per
        call, so a batch would make each clip's scores depend on its neighbours (batching
        gains nothing on CPU anyway). Every other mode runs the batch at once."""
        if self.mode == "int8" and pixel_values.shape[0] > 1:
            parts = [self.predict(clip) for clip in pixel_values.split(1)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        out = self.forward(pixel_values)
        return out.logits.float(), out.embeddings.float()

    __call__ = predict

    def predict_scores(self, pixel_values: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``(B, T, C, H, W)`` clips -> calibrated class scores ``(B, K)`` float32: softmax (sigmoid
        for multi-label models) of the logits over the config's temperature (:func:`config_scores`)."""
        logits, _ = self.predict(pixel_values)
        return config_scores(logits, self.model.config, temperature)


def prepare_for_inference(
    model: nn.Module,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    *,
    bf16_mode: str = "auto",
    pack: bool | None = None,
    attention_backend: str | None = "auto",
    num_threads: int | None = None,
    compile: bool = False,
    check_int8_speed: bool = True,
    channels_last: bool = True,
) -> InferenceModel:
    """Move ``model`` to ``device``, cast it for ``precision`` and return an :class:`InferenceModel`.

    The model is converted **in place** (like ``Module.to``), and on CPU its linears
    are replaced by prepacked ones; pass ``copy.deepcopy(model)`` to keep the original
    trainable. ``bf16_mode`` "auto" means "weights" (measured faster than autocast on
    CPU). ``precision="int8"`` quantizes the block linears (:func:`quantize_linears`) and
    runs the rest in :func:`compute_dtype_for_int8`. ``attention_backend`` "auto" picks the
    explicit-softmax attention on CPU in bf16 or int8 when every attention group is at most
    :data:`REFERENCE_ATTENTION_MAX_LEN` tokens long (faster there than SDPA's flash kernel),
    None keeps the model's. ``pack`` (None: on CPU, but not with bf16 autocast) prepacks the remaining
    linears for oneDNN and folds the attention scale into the query weights (fp32 then differs
    from the plain forward by float rounding, ~1e-6 on logits; ``pack=False`` gives the
    plain forward exactly). ``num_threads``
    sets torch's intra-op threads (None: leave torch's default, one per core).
    ``compile`` wraps the model in ``torch.compile`` (slow first call, opt-in).
    ``check_int8_speed`` (int8 only): time one block of this model's shape in int8 and in the
    default precision (:func:`int8_speed`: 0.1 s for the tiny preset, 1.5 s for ViT-B on a 2-core
    Zen 4, paid once when the model is prepared) and log a warning
    that says so when int8 is the slower one here; the figures go to ``runner.options``.
    Convolutional models (the PySlowFast zoo, X3D, TSM, the CNN baseline) also get their
    BatchNorms folded into the convolutions before them (:func:`fold_batch_norms`) and, on CPU
    with ``channels_last``, channels-last weights (:func:`to_channels_last`).
    """
    device = choose_device(device)
    dtype = check_precision(precision, device)
    if bf16_mode not in BF16_MODES:
        raise ConfigError(f"unknown bf16 mode {bf16_mode!r}; valid values: {', '.join(BF16_MODES)}")
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if dtype == torch.int8:
        mode, dtype = "int8", compute_dtype_for_int8()
    elif dtype == torch.float32:
        mode = "fp32"
    else:
        mode = "weights" if bf16_mode == "auto" else bf16_mode
    model.eval()
    model.to(device=device, dtype=dtype if mode in ("weights", "int8") else torch.float32)
    if attention_backend == "auto":
        attention_backend = _auto_attention_backend(model, device, mode)
    if attention_backend is not None and hasattr(model, "set_attention_backend"):
        model.set_attention_backend(attention_backend)
    if pack is None:  # fp32 too: 1.22x on ViT-B 8x224 on a Zen 4 CPU, on par with OpenVINO (docs/performance.md)
        pack = device.type == "cpu" and mode in ("fp32", "weights", "int8") and dtype in (torch.bfloat16, torch.float32)
    if pack and device.type != "cpu":
        raise ConfigError("prepacked linears are a CPU (oneDNN) feature; use pack=False on CUDA")
    weight_dtype = dtype if mode in ("weights", "int8") else torch.float32
    packed = quantized = 0
    packing = bool(pack) and _packing_works(weight_dtype)
    with torch.no_grad():
        if mode == "int8" or packing:  # linears about to leave the state dict: fold the attention scale
            fold_attention_scales(model)
        if mode == "int8":
            quantized = quantize_linears(model)
            if quantized == 0:
                raise ConfigError(f"int8 quantizes the linears of transformer blocks; {type(model).__name__} has none")
        if packing:
            packed = pack_linears(model)
        # convolutional families: BatchNorms folded into their convolutions; channels-last weights
        # on CPU (measured in docs/models.md)
        folded = fold_batch_norms(model)
        layout = to_channels_last(model) if device.type == "cpu" and channels_last else None
    runner = InferenceModel(model, device, dtype, mode, packed, int8_linears=quantized,
                            options=dict(bf16_mode=bf16_mode, pack=pack, attention_backend=attention_backend,
                                         num_threads=torch.get_num_threads(), compile=compile,
                                         folded_batch_norms=folded, memory_format=layout))
    if mode == "int8" and check_int8_speed and getattr(model, "config", None) is not None:
        speed = int8_speed(model.config, type(model))
        if speed is not None:
            runner.options["int8_speed"] = speed
            if speed["ratio"] > 1.0:
                _log.warning("%s", int8_slower_message(speed))
    if compile:
        compiled = torch.compile(model, dynamic=False)
        runner._call = compiled  # type: ignore[method-assign]
        runner.compiled = True
    return runner


# -- timing helpers shared by falv bench and benchmarks/ ------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    dtype: torch.dtype = torch.bfloat16,
    sizes: tuple[int, ...] = (2048, 3072),
    repeats: int = 5,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Best measured GFLOP/s of square ``n x n @ n x n`` matmuls (2*n^3 FLOPs), best over
    ``sizes`` and ``repeats``; returns ``{"gflops", "size", "per_size"}``."""
    import time

    device = torch.device(device)
    per_size = {}
    with torch.inference_mode():
        for n in sizes:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            a @ b
            best = float("inf")
            for _ in range(repeats):
                synchronize(device)
                t0 = time.perf_counter()
                a @ b
                synchronize(device)
                best = min(best, time.perf_counter() - t0)
            per_size[n] = 2 * n**3 / best / 1e9
    size = max(per_size, key=per_size.get)
    return {"gflops": per_size[size], "size": size, "per_size": per_size}
