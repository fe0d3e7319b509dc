"""falv.inference and `falv bench` on the tiny preset (no timed assertions)."""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner

from falv.errors import ConfigError
from falv.inference import (
    InferenceModel,
    PackedLinear,
    choose_device,
    cpu_supports_bf16,
    prepare_for_inference,
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
    with pytest.raises(ConfigError, match="valid values"):
        resolve_precision("int8", CPU)


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
    runner = prepare_for_inference(copy.deepcopy(tiny_model), "cpu", "fp32")
    assert isinstance(runner, InferenceModel) and runner.mode == "fp32" and runner.packed_linears == 0
    logits, embeddings = runner.predict(clips)
    assert logits.dtype == embeddings.dtype == torch.float32
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(embeddings, expected.embeddings, rtol=0, atol=0)


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
    runner = prepare_for_inference(model, "cpu", "bf16")
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    if runner.packed_linears == 0:
        pytest.skip("this torch build has no oneDNN linear")
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
