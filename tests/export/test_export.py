"""falv export: every scheme and the CNN baseline in ONNX Runtime and OpenVINO, metadata, int8, errors."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from falv.config import ATTENTION_TYPES
from falv.errors import ConfigError
from falv.export.onnx import (
    OPSET,
    ExportError,
    export_model,
    export_onnx,
    fingerprint,
    read_export_metadata,
)
from falv.export.runtime import OnnxRuntimeModel, OpenVINOModel, check_runtime, prepare_runtime
from falv import FALForVideoClassification
from falv.inference import prepare_for_inference
from tests.model.conftest import randomize_

KINDS = [*ATTENTION_TYPES, "cnn"]


def clips(model, batch: int, seed: int = 1) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.num_frames, c.num_channels, c.image_size, c.image_size,
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_every_scheme_and_the_cnn_match_falv_fp32_in_both_runtimes(kind, tmp_path, make_model):
    model = make_model(kind)
    record = export_model(model, tmp_path / "out", formats=("onnx", "openvino"))
    assert set(record["files"]) == {"onnx", "openvino"}
    x = clips(model, 3)  # exported with 2 clips: 3 shows the batch axis is dynamic
    ref_logits, ref_embeddings = prepare_for_inference(copy.deepcopy(model), "cpu", "fp32").predict(x)
    for runtime, cls in (("onnxruntime", OnnxRuntimeModel), ("openvino", OpenVINOModel)):
        runner = prepare_runtime(tmp_path / "out", runtime, "fp32")
        assert isinstance(runner, cls) and runner.precision == "fp32"
        logits, embeddings = runner.predict(x)
        assert logits.dtype == embeddings.dtype == torch.float32
        assert logits.shape == ref_logits.shape and embeddings.shape == ref_embeddings.shape
        assert (logits - ref_logits).abs().max() < 1e-4, runtime
        assert (embeddings - ref_embeddings).abs().max() < 1e-4, runtime
        one, _ = runner.predict(x[:1])  # batch 1 too
        assert (one - ref_logits[:1]).abs().max() < 1e-4


def test_motion_input_and_two_frame_tokens_export_and_match(tmp_path):
    """The frame differences are computed inside the model, so the exported graph has them too."""
    from tests.export.conftest import tiny_config

    torch.manual_seed(0)
    model = randomize_(FALForVideoClassification(tiny_config(motion_input="frame_diff", patch_frames=2))).eval()
    export_model(model, tmp_path / "out", formats=("onnx",))
    x = clips(model, 2)
    ref_logits, _ = prepare_for_inference(copy.deepcopy(model), "cpu", "fp32").predict(x)
    logits, _ = prepare_runtime(tmp_path / "out", "onnxruntime", "fp32").predict(x)
    assert (logits - ref_logits).abs().max() < 1e-4


def test_metadata_round_trip_and_the_folder_is_a_model(tmp_path, make_model):
    import onnx
    import openvino as ov

    from falv import FALForVideoClassification

    model = make_model("divided_space_time")
    out = tmp_path / "out"
    export_model(model, out, formats="onnx,openvino")
    meta = read_export_metadata(out / "model.onnx")
    written = json.loads((out / "export.json").read_text())
    for key in ("labels", "num_frames", "image_size", "image_mean", "image_std", "rescale_factor", "size",
                "crop_size", "sampling", "opset", "fingerprint", "config", "preprocessor", "embedding_size"):
        assert meta[key] == written[key], key
    assert meta["labels"] == ["a", "b", "c"] and meta["num_frames"] == 4 and meta["image_size"] == 32
    assert meta["opset"] == OPSET and meta["precision"] == "fp32"
    assert meta["fingerprint"] == fingerprint(model)
    assert meta["sampling"]["num_frames"] == 4 and "segment" in meta["sampling"]["timestamps"]
    proto = onnx.load(str(out / "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [4, 3, 32, 32]
    assert [o.name for o in proto.graph.output] == ["logits", "embeddings"]
    ir = ov.Core().read_model(str(out / "openvino" / "model.xml"))
    assert json.loads(ir.get_rt_info(["falv", "labels"]).astype(str)) == ["a", "b", "c"]
    # the export folder is a falv model folder as well: same weights, same preprocessing
    again = FALForVideoClassification.from_pretrained(out)
    assert fingerprint(again) == meta["fingerprint"]
    assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] == meta["image_mean"]


def test_an_unsupported_operator_is_named_in_one_line(tmp_path):
    from falv import FALForVideoClassification

    class Zeta(FALForVideoClassification):
        def forward(self, pixel_values, **kwargs):
            out = super().forward(pixel_values)
            out.logits = out.logits + torch.special.zeta(out.logits.abs() + 2, torch.tensor(2.0))
            return out

    from falv import FALConfig

    config = FALConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=4, intermediate_size=64)
    with pytest.raises(ExportError) as err:
        export_onnx(Zeta(config).eval(), tmp_path / "zeta.onnx")
    message = str(err.value)
    assert "aten::special_zeta" in message and f"opset {OPSET}" in message and "\n" not in message


def test_a_prepared_model_is_refused(tmp_path, make_model):
    runner = prepare_for_inference(make_model("divided_space_time"), "cpu", "fp32", pack=True)
    if not runner.packed_linears:
        pytest.skip("no oneDNN linear kernels in this torch build")
    with pytest.raises(ExportError, match="prepared for inference"):
        export_onnx(runner.model, tmp_path / "m.onnx")


def test_runtime_and_precision_checks():
    assert check_runtime("onnxruntime", "auto") == "fp32"
    assert check_runtime("onnxruntime", "int8") == "int8"
    assert check_runtime("openvino", "fp32") == "fp32"
    with pytest.raises(ConfigError, match="not 'bf16'"):
        check_runtime("onnxruntime", "bf16")
    with pytest.raises(ConfigError, match="--device cpu"):
        check_runtime("openvino", "fp32", "cuda")
    with pytest.raises(ConfigError, match="valid values: torch, onnxruntime, openvino"):
        check_runtime("tensorrt", "fp32")
    from falv.labeling.stages import LabelOptions

    with pytest.raises(ConfigError, match="unknown runtime"):
        LabelOptions(runtime="tvm")


def test_a_model_is_exported_once_into_the_cache(tmp_path, make_model):
    from falv.export.onnx import cache_root

    model = make_model("axial")
    x = clips(model, 2)
    first = prepare_runtime(model, "onnxruntime", "fp32")
    entries = list(cache_root().iterdir())
    assert len(entries) == 1 and entries[0].name == fingerprint(model)
    stamp = (entries[0] / "model.onnx").stat().st_mtime_ns
    second = prepare_runtime(model, "openvino", "fp32")  # same weights: the cached export
    assert (entries[0] / "model.onnx").stat().st_mtime_ns == stamp and len(list(cache_root().iterdir())) == 1
    assert (first.predict(x)[0] - second.predict(x)[0]).abs().max() < 1e-4
    # a model loaded from an export folder uses that folder, not the cache
    export_model(model, tmp_path / "exported")
    from falv import FALForVideoClassification

    loaded = FALForVideoClassification.from_pretrained(tmp_path / "exported")
    assert prepare_runtime(loaded, "onnxruntime", "fp32").source == tmp_path / "exported"


@pytest.fixture(scope="module")
def calibration_videos(tmp_path_factory):
    from falv.video.testing import write_test_video

    root = tmp_path_factory.mktemp("calibration")
    for i in range(4):
        write_test_video(root / f"v{i}.mp4", frames=12 + 4 * i, fps=12, size=(48, 64), texture=True)
    return root


def test_int8_dynamic_and_static_calibrated(tmp_path, calibration_videos, make_model):
    from falv.export.onnx import calibration_clips, load_processor

    model = make_model("divided_space_time")
    out = tmp_path / "int8"
    record = export_model(model, out, formats=("onnx", "openvino"), quantize="int8", calibrate=calibration_videos)
    files = record["files"]
    assert files["onnx_int8"]["method"] == "static" and files["onnx_int8"]["calibration_clips"] == 4
    assert files["openvino_int8"]["method"] == "static"
    assert files["openvino_int8"]["smooth_quant"] is False  # NNCF's SmoothQuant flipped top-1s (performance.md)
    assert read_export_metadata(out / "model.int8.onnx")["precision"] == "int8-static"
    x = torch.cat(calibration_clips(calibration_videos, model, load_processor(model)))
    ref, _ = prepare_for_inference(copy.deepcopy(model), "cpu", "fp32").predict(x)
    spread = float(ref.abs().max())
    runners = {
        "ort static": prepare_runtime(out, "onnxruntime", "int8"),
        "openvino static": prepare_runtime(out, "openvino", "int8"),
        # a plain model folder: ONNX Runtime's dynamic int8, made on the fly and cached
        "ort dynamic": prepare_runtime(model, "onnxruntime", "int8"),
        "openvino weights": prepare_runtime(model, "openvino", "int8"),
    }
    assert runners["ort static"].method == "static" and not runners["ort static"].per_clip
    assert runners["ort dynamic"].method == "dynamic" and runners["ort dynamic"].per_clip
    for name, runner in runners.items():
        logits, embeddings = runner.predict(x)
        assert logits.shape == ref.shape and torch.isfinite(logits).all() and torch.isfinite(embeddings).all()
        assert float((logits - ref).abs().max()) < 0.1 * spread, name  # int8-sized, not garbage
    # dynamic int8 runs clip by clip: a clip's scores do not depend on its batch neighbours
    alone, _ = runners["ort dynamic"].predict(x[:1])
    loud = torch.cat([x[:1], 50 * x[1:2]])
    assert torch.equal(runners["ort dynamic"].predict(loud)[0][:1], alone)


def test_calibrate_needs_videos_and_quantize(tmp_path, make_model):
    model = make_model("space_only")
    with pytest.raises(ConfigError, match="--calibrate needs --quantize"):
        export_model(model, tmp_path / "a", calibrate=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--calibrate"):
        export_model(model, tmp_path / "b", quantize="int8", calibrate=tmp_path / "empty")
    with pytest.raises(ConfigError, match="valid formats: onnx, openvino"):
        export_model(model, tmp_path / "c", formats="tflite")


def test_importing_falv_imports_no_runtime():
    code = ("import sys, falv, falv.export, falv.labeling.stages, falv.cli.main; "
            "from falv.labeling.stages import LabelOptions; LabelOptions(runtime='onnxruntime'); "
            "bad = [m for m in ('onnx', 'onnxruntime', 'openvino', 'nncf', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exported_outputs_are_numpy_free_of_aliasing(tmp_path, make_model):
    """OpenVINO reuses its output buffers between calls: predict returns copies."""
    model = make_model("joint_space_time")
    runner = prepare_runtime(model, "openvino", "fp32")
    a, _ = runner.predict(clips(model, 1, seed=1))
    a_copy = a.clone()
    runner.predict(clips(model, 1, seed=2))
    assert torch.equal(a, a_copy) and isinstance(a.numpy(), np.ndarray)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack")
def test_openvino_leaves_the_threads_signal_stack_as_it_found_it(make_model):
    # OpenVINO's CPU plugin swaps in an alternate signal stack of its own and unmaps it later;
    # a dangling one made the next handled signal kill the process (SIGSEGV)
    import ctypes

    from falv.export.runtime import _SignalStack

    libc = ctypes.CDLL(None, use_errno=True)

    def current():
        stack = _SignalStack()
        assert libc.sigaltstack(None, ctypes.byref(stack)) == 0
        return stack.ss_sp, stack.ss_size, stack.ss_flags

    before = current()
    runner = prepare_runtime(make_model("divided_space_time"), "openvino", "fp32")
    runner.predict(torch.randn(1, 4, 3, 32, 32))
    assert current() == before
