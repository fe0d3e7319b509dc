"""Export to ONNX and OpenVINO, and the runtimes that run the exported files.

``falv export MODEL --out DIR`` (:func:`falv.export.onnx.export_model`) writes
``model.onnx`` (and, on request, an OpenVINO IR and int8 variants) beside the
model's config and preprocessing; :func:`falv.export.runtime.prepare_runtime`
turns a model (or such a folder) into a runner with the interface of
:class:`falv.inference.InferenceModel` for ``torch``, ``onnxruntime`` or
``openvino``. onnx, onnxruntime and openvino are optional (``falv[export]``) and
imported only when one of these functions runs. See docs/export.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falv._lazy import lazy_exports

_EXPORTS = {
    "ExportError": "falv.export.onnx",
    "export_model": "falv.export.onnx",
    "export_onnx": "falv.export.onnx",
    "read_export_metadata": "falv.export.onnx",
    "OPSET": "falv.export.onnx",
    "RUNTIMES": "falv.export.runtime",
    "prepare_runtime": "falv.export.runtime",
    "check_runtime": "falv.export.runtime",
    "OnnxRuntimeModel": "falv.export.runtime",
    "OpenVINOModel": "falv.export.runtime",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from falv.export.onnx import OPSET, ExportError, export_model, export_onnx, read_export_metadata
    from falv.export.runtime import RUNTIMES, OnnxRuntimeModel, OpenVINOModel, check_runtime, prepare_runtime

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
