"""Order ablation of divided attention: time-then-space (default) against space-then-time."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from falv import FALConfig, FALForVideoClassification
from falv.errors import ConfigError
from falv.model.flops import count_flops, count_parameters
from falv.model.schemes import DropPath, comparisons_per_patch, scheme_steps
from falv.model.transformer import Block

from .conftest import randomize_, tiny_config


def _pair(seed: int = 0) -> tuple[FALForVideoClassification, FALForVideoClassification]:
    """A time-first and a space-first model holding the same weights."""
    first = randomize_(FALForVideoClassification(tiny_config()), seed=seed).eval()
    second = FALForVideoClassification(tiny_config(divided_order="space_time")).eval()
    second.load_state_dict(first.state_dict(), strict=True)
    return first, second


def test_default_is_time_then_space():
    assert FALConfig().divided_order == "time_space"
    assert [s[0] for s in scheme_steps("divided_space_time")] == ["time", "space"]
    assert [s[0] for s in scheme_steps("divided_space_time", "space_time")] == ["space", "time"]


@pytest.mark.parametrize("bad,message", [
    (dict(divided_order="spacetime"), "valid values: time_space, space_time"),
    (dict(divided_order="space_time", attention_type="joint_space_time"), "only to attention_type"),
    (dict(divided_order="space_time", attention_type="axial"), "only to attention_type"),
])
def test_invalid_orders_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**bad)
    with pytest.raises(ConfigError):
        scheme_steps(bad.get("attention_type", "divided_space_time"), bad["divided_order"])


def test_json_round_trip(tmp_path):
    space_first = tiny_config(divided_order="space_time")
    space_first.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["divided_order"] == "space_time"
    assert FALConfig.from_json_file(tmp_path / "config.json") == space_first
    # The default is not written: configs of default models are unchanged by the option.
    default = tiny_config()
    assert "divided_order" not in default.to_dict()
    assert FALConfig.from_dict(json.loads(default.to_json_string())) == default


def test_same_parameters_same_flops_different_outputs():
    time_first, space_first = _pair()
    assert time_first.state_dict().keys() == space_first.state_dict().keys()
    assert time_first.num_parameters() == space_first.num_parameters()
    assert count_parameters(tiny_config()) == count_parameters(tiny_config(divided_order="space_time"))
    assert count_flops(tiny_config()) == count_flops(tiny_config(divided_order="space_time"))
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        a, b = time_first(x).logits, space_first(x).logits
    assert not torch.allclose(a, b, atol=1e-4)


def test_default_order_is_unchanged():
    """Explicitly asking for time-then-space builds exactly the default model."""
    torch.manual_seed(1)
    default = FALForVideoClassification(tiny_config()).eval()
    torch.manual_seed(1)
    explicit = FALForVideoClassification(tiny_config(divided_order="time_space")).eval()
    for (k1, v1), (k2, v2) in zip(default.state_dict().items(), explicit.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(default(x).logits, explicit(x).logits)


def test_attention_records_follow_the_order_and_paths_agree():
    _, space_first = _pair()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = space_first(x, output_attentions=True)
        assert [rec.step for rec in out.attentions[0]] == ["space", "time"]
        fused = space_first.set_attention_backend("sdpa")(x).logits
        reference = space_first.set_attention_backend("reference")(x).logits
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter_but_the_last_time_step():
    """The logits read the CLS token only, and the time step leaves it out: in the space-first
    order the last block's time step comes after the last CLS update, so it cannot change the
    output and gets no gradient (documented in docs/model.md)."""
    model = randomize_(FALForVideoClassification(tiny_config(divided_order="space_time")))
    model(torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([0, 2])).loss.backward()
    last = f"fal.blocks.{model.config.num_hidden_layers - 1}.steps.time."
    for name, p in model.named_parameters():
        if name.startswith(last):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_save_and_load_keeps_the_order(tmp_path):
    _, space_first = _pair()
    space_first.save_pretrained(tmp_path)
    loaded = FALForVideoClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.divided_order == "space_time"
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(space_first(x).logits, loaded(x).logits)


@pytest.mark.parametrize("T,H,W", [(8, 14, 14), (4, 4, 4), (16, 7, 9)])
def test_comparisons_per_patch_do_not_depend_on_the_order(T, H, W):
    for order in ("time_space", "space_time"):
        assert comparisons_per_patch("divided_space_time", (T, H, W), order) == H * W + T + 1


@pytest.mark.parametrize("grid", [(4, 4, 4), (3, 5, 6)])
@pytest.mark.parametrize("order", ["time_space", "space_time"])
def test_receptive_field_after_each_step(order, grid):
    """Perturb one patch and run a block's attention steps one by one: the first step
    reaches the patch's own position across frames (time first) or its own frame (space
    first); after both, every patch. The CLS token sees the change after the space step."""
    T, H, W = grid
    d = 16
    cfg = tiny_config(hidden_size=d, num_attention_heads=2, divided_order=order)
    # float64: effects two steps away are small (~1e-6) but far above rounding; untouched tokens are exact.
    block = randomize_(Block(cfg, drop_path=0.0), std=0.3).double().eval()
    cls, x = torch.randn(1, 1, d, dtype=torch.float64), torch.randn(1, T * H * W, d, dtype=torch.float64)
    q = (T - 1, H // 2, 1)
    x2 = x.clone()
    x2[0, (q[0] * H + q[1]) * W + q[2]] += torch.randn(d, dtype=torch.float64)
    everything = set(itertools.product(range(T), range(H), range(W)))
    expected_tokens = {
        "time": {(t, q[1], q[2]) for t in range(T)},
        "space": {(q[0], h, w) for h in range(H) for w in range(W)},
    }
    states = [(cls, x), (cls, x2)]
    names = list(block.steps)
    assert names == (["time", "space"] if order == "time_space" else ["space", "time"])
    cls_changed_after = []
    with torch.no_grad():
        for i, step in enumerate(block.steps.values()):
            states = [step(c, y, grid, DropPath())[:2] for c, y in states]
            (c1, y1), (c2, y2) = states
            changed = (y1 - y2).abs().amax(-1)[0] > 1e-12
            got = {(j // (H * W), (j // W) % H, j % W) for j in changed.nonzero().flatten().tolist()}
            assert got == (expected_tokens[names[0]] if i == 0 else everything)
            cls_changed_after.append(bool((c1 - c2).abs().amax() > 1e-12))
    assert cls_changed_after == ([False, True] if order == "time_space" else [True, True])
