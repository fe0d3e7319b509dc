"""falv.inference and `falv bench` on the tiny preset (no timed assertions)."""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner

from falv.errors import ConfigError
from falv.inference import (
    InferenceModel,
    Int8Linear,
    PackedLinear,
    int8_available,
    choose_device,
    cpu_supports_bf16,
    prepare_for_inference,
    quantize_uint8,
    resolve_precision,
)
from falv.model.presets import preset
from falv.model.transformer import FALForVideoClassification

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_model() -> FALForVideoClassification:
    torch.manual_seed(0)
    return FALForVideoClassification(preset("tiny", id2label={i: str(i) for i in range(10)})).eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.randn(4, 8, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_resolve_precision_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import falv.inference as inf

    for native, auto in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(inf, "cpu_supports_bf16", lambda native=native: native)
        assert resolve_precision("auto", CPU) == auto
        assert resolve_precision("fp32", CPU) == torch.float32
        assert resolve_precision("bf16", CPU) == torch.bfloat16
        with pytest.raises(ConfigError, match="fp16"):
            resolve_precision("fp16", CPU)
    assert resolve_precision("fp16", "cuda") == torch.float16
    assert resolve_precision("fp32", "cuda") == torch.float32
    assert resolve_precision("int8", CPU) == torch.int8
    with pytest.raises(ConfigError, match="CPU"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ConfigError, match="valid values"):
        resolve_precision("int4", CPU)


def test_choose_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device(None).type == expected
    assert choose_device("auto").type == expected
    assert choose_device("cpu") == CPU
    with pytest.raises(ConfigError):
        choose_device("not-a-device")


def test_cpu_supports_bf16_is_bool() -> None:
    assert isinstance(cpu_supports_bf16(), bool)


def test_fp32_path_equals_plain_forward(tiny_model: FALForVideoClassification, clips: torch.Tensor) -> None:
    with torch.no_grad():
        expected = tiny_model(clips)
    runner = prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "fp32", pack=False)
    assert isinstance(runner, InferenceModel) and runner.mode == "fp32" and runner.packed_linears == 0
    logits, embeddings = runner.predict(clips)
    assert logits.dtype == embeddings.dtype == torch.float32
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(embeddings, expected.embeddings, rtol=0, atol=0)


def test_fp32_default_packs_linears_on_cpu_and_stays_within_rounding(tiny_model: FALForVideoClassification,
                                                                      clips: torch.Tensor) -> None:
    from falv.inference import _packing_works

    with torch.no_grad():
        expected = tiny_model(clips)
    model = copy.deepcopy(tiny_model)
    runner = prepare_for_inference(model, "cpu", "fp32")
    if _packing_works(torch.float32):
        n_linear = sum(isinstance(m, torch.nn.Linear) for m in tiny_model.modules())
        assert runner.packed_linears == n_linear and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    else:  # a torch build without oneDNN's linear: plain linears
        assert runner.packed_linears == 0
    logits, embeddings = runner.predict(clips)
    assert logits.dtype == embeddings.dtype == torch.float32
    torch.testing.assert_close(logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeddings, expected.embeddings, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(-1), expected.logits.argmax(-1))


@pytest.mark.parametrize("bf16_mode", ["weights", "autocast"])
def test_bf16_path_agrees_with_fp32(tiny_model: FALForVideoClassification, clips: torch.Tensor, bf16_mode: str) -> None:
    with torch.no_grad():
        ref = tiny_model(clips).logits
    runner = prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "bf16", bf16_mode=bf16_mode)
    assert runner.dtype == torch.bfloat16 and runner.mode == bf16_mode
    logits, embeddings = runner(clips)
    assert logits.dtype == embeddings.dtype == torch.float32
    assert (logits - ref).abs().max() < 0.05
    margin = ref.topk(2, dim=-1).values
    clear = (margin[:, 0] - margin[:, 1]) > 0.1  # top-1 must agree wherever fp32 is not a near-tie
    assert (logits.argmax(-1) == ref.argmax(-1))[clear].all()


def test_bf16_weights_mode_packs_linears_and_fuses_gelu(tiny_model: FALForVideoClassification) -> None:
    model = copy.deepcopy(tiny_model)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    from falv.inference import _onednn_linear_available, _packing_works

    if not _onednn_linear_available():
        pytest.skip("this torch build has no oneDNN linear")
    if not _packing_works(torch.bfloat16):  # e.g. AVX2-only CPUs: falv keeps plain linears there
        pytest.skip("this CPU has no oneDNN bf16 linear kernel (needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT)")
    runner = prepare_for_inference(model, "cpu", "bf16")
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == n_linear == runner.packed_linears
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(p.activation == "gelu" for p in packed) == model.config.num_hidden_layers
    assert runner.options["attention_backend"] == "reference"  # short groups on CPU


def test_packed_linear_matches_linear() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(2, 5, 32, dtype=torch.bfloat16)
    try:
        packed = PackedLinear(lin)
    except (RuntimeError, AttributeError):
        pytest.skip("this torch build has no oneDNN linear")
    torch.testing.assert_close(packed(x).float(), lin(x).float(), rtol=0.02, atol=0.02)


needs_int8 = pytest.mark.skipif(not int8_available(), reason="no accurate oneDNN int8 linear in this torch build or on this CPU")


@pytest.mark.parametrize(
    "values",
    [
        [-1.0, 0.0, 2.0, 0.5],  # both signs
        [0.5, 3.0, 7.25],  # positive only: the range is stretched to include 0
        [-4.0, -0.25],  # negative only
        [0.0, 0.0],  # constant zero
        [1e-8, -3e-8],  # tiny
        [-0.17, 0.0, 50.0],  # GELU-like: small negative tail, large positive values
    ],
)
def test_quantize_uint8_round_trip(values: list[float]) -> None:
    x = torch.tensor(values)
    q, scale, zero_point = quantize_uint8(x)
    assert q.dtype == torch.uint8 and 0 <= zero_point <= 255 and scale > 0
    back = scale * (q.float() - zero_point)
    assert (back - x).abs().max() <= scale * (0.5 + 1e-3)  # at most half a step off (+ float32 rounding)
    assert (back[x == 0] == 0).all()  # zero is exact


@needs_int8
@pytest.mark.parametrize(("activation", "act"), [("none", lambda y: y), ("gelu", torch.nn.functional.gelu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_linear(activation: str, act, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96)
    x = torch.randn(3, 7, 64)
    expected = act(lin(x))
    got = Int8Linear(lin, activation)(x.to(dtype))
    assert got.dtype == dtype and got.shape == (3, 7, 96)
    assert ((got.float() - expected).norm() / expected.norm()) < 0.02


@needs_int8
def test_int8_linear_propagates_non_finite_inputs() -> None:
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    x[0, 0] = float("nan")
    assert not torch.isfinite(Int8Linear(lin)(x)).all()  # the engine turns this into a non_finite_scores record


@needs_int8
def test_int8_path_agrees_with_fp32(tiny_model: FALForVideoClassification, clips: torch.Tensor) -> None:
    with torch.no_grad():
        ref = tiny_model(clips)
    model = copy.deepcopy(tiny_model)
    runner = prepare_for_inference(model, "cpu", "int8")
    assert runner.precision == "int8" and runner.mode == "int8"
    assert runner.dtype in (torch.bfloat16, torch.float32)  # what runs outside the int8 linears
    config = model.config
    assert runner.int8_linears == 7 * config.num_hidden_layers  # divided: 2 x (qkv, proj), time fc, fc1, fc2
    assert isinstance(model.fal.embeddings.patch_embed.proj, (torch.nn.Linear, PackedLinear))  # not quantized
    assert not any(isinstance(m, Int8Linear) for m in model.head.modules())
    logits, embeddings = runner.predict(clips)
    assert logits.dtype == embeddings.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(embeddings, ref.embeddings).min() > 0.99
    margin = ref.logits.topk(2, dim=-1).values
    clear = (margin[:, 0] - margin[:, 1]) > 0.2
    assert (logits.argmax(-1) == ref.logits.argmax(-1))[clear].all()


@needs_int8
def test_int8_scores_do_not_depend_on_the_batch(tiny_model: FALForVideoClassification, clips: torch.Tensor) -> None:
    runner = prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "int8")
    loud = clips.clone()
    loud[0] *= 50  # a clip with a much wider range would coarsen a shared activation scale
    batch_logits, batch_emb = runner.predict(loud)
    for i in range(len(loud)):
        logits, emb = runner.predict(loud[i : i + 1])
        torch.testing.assert_close(batch_logits[i : i + 1], logits, rtol=0, atol=0)
        torch.testing.assert_close(batch_emb[i : i + 1], emb, rtol=0, atol=0)


@needs_int8
def test_int8_speed_times_one_block_in_int8_and_in_the_default(tiny_model: FALForVideoClassification) -> None:
    from falv.inference import compute_dtype_for_int8, int8_speed, precision_name

    speed = int8_speed(tiny_model.config, clips=2, repeats=1)
    assert speed["int8_ms"] > 0 and speed["default_ms"] > 0
    assert speed["default"] == precision_name(compute_dtype_for_int8())
    assert speed["ratio"] == pytest.approx(speed["int8_ms"] / speed["default_ms"], rel=0.01, abs=0.002)


def test_int8_speed_is_none_for_a_model_it_cannot_build() -> None:
    from falv.inference import int8_speed

    assert int8_speed(object()) is None  # not a FAL-shaped config (another family, a bare module)


@needs_int8
@pytest.mark.parametrize("ratio, warns", [(1.6, True), (0.7, False)])
def test_int8_says_plainly_when_it_is_slower_here(
    tiny_model: FALForVideoClassification, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    ratio: float, warns: bool,
) -> None:
    import logging

    import falv.inference

    measured = {"int8_ms": 10.0 * ratio, "default_ms": 10.0, "default": "bf16", "ratio": ratio}
    monkeypatch.setattr(falv.inference, "int8_speed", lambda *args, **kwargs: measured)
    with caplog.at_level(logging.WARNING, logger="falv.inference"):
        runner = prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "int8")
    assert runner.precision == "int8" and runner.options["int8_speed"] == measured  # int8 runs as asked
    said = [r.getMessage() for r in caplog.records if r.name == "falv.inference"]
    assert len(said) == int(warns)
    if warns:
        assert said[0].startswith("int8 is slower than bf16 for this model on this CPU")
        assert "16.0 ms per clip in int8 against 10.0 ms in bf16 (1.60x" in said[0] and "--precision auto" in said[0]
    with caplog.at_level(logging.WARNING, logger="falv.inference"):
        prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "bf16" if cpu_supports_bf16() else "fp32")
    assert len([r for r in caplog.records if r.name == "falv.inference"]) == int(warns)  # other precisions: no check


def test_int8_refuses_models_without_blocks() -> None:
    if not int8_available():
        pytest.skip("this torch build has no oneDNN int8 linear")
    with pytest.raises(ConfigError, match="blocks"):
        prepare_for_inference(torch.nn.Sequential(torch.nn.Linear(4, 4)), "cpu", "int8")


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_folding_the_attention_scale_keeps_the_output(backend: str) -> None:
    from falv.model.attention import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4).eval()
    attn.backend = backend
    x = torch.randn(5, 9, 32)
    with torch.no_grad():
        before = attn(x)[0]
        attn.fold_scale()
        assert attn.scale == 1.0
        after = attn(x)[0]
        attn.fold_scale()  # a second fold changes nothing
        again = attn(x)[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, after, rtol=0, atol=0)


@needs_int8
def test_bench_cli_int8_tiny() -> None:
    from falv.cli.main import cli

    result = CliRunner().invoke(
        cli, ["bench", "--preset", "tiny", "--repeats", "1", "--warmup", "0", "--no-transformers", "--precision", "int8"]
    )
    assert result.exit_code == 0, result.output
    assert "falv int8" in result.output and "falv fp32" in result.output


def test_bench_cli_tiny() -> None:
    from falv.cli.main import cli

    result = CliRunner().invoke(
        cli, ["bench", "--preset", "tiny", "--repeats", "1", "--warmup", "0", "--no-transformers", "--precision", "bf16"]
    )
    assert result.exit_code == 0, result.output
    for column in ("ms/clip", "GFLOP", "GFLOP/s", "%peak", "matmul peak", "falv bf16", "falv fp32", "agreement"):
        assert column in result.output


def test_bench_cli_rejects_unknown_preset() -> None:
    from falv.cli.main import cli

    result = CliRunner().invoke(cli, ["bench", "--preset", "nope", "--no-transformers"])
    assert result.exit_code != 0
    assert "valid presets" in result.output
