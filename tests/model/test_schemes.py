"""Each attention scheme: shapes, gradients, fused vs reference path, receptive fields."""

import itertools

import pytest
import torch

from falv import ATTENTION_TYPES, FALForVideoClassification
from falv.errors import ConfigError
from falv.model.schemes import AttentionStep, DropPath, comparisons_per_patch, scheme_steps

from .conftest import randomize_, tiny_config


@pytest.mark.parametrize("scheme", ATTENTION_TYPES)
def test_shapes_and_outputs(scheme):
    model = FALForVideoClassification(tiny_config(attention_type=scheme)).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (2, 3)
    assert model.forward_features(x).shape == (2, 32)
    assert torch.allclose(model.forward_head(model.forward_features(x)), out.logits, atol=1e-6)
    assert len(out.hidden_states) == 3  # input of each block + final output
    k = 4 if scheme == "space_only" else 1  # per-frame CLS tokens in space-only
    assert out.hidden_states[0].shape == (2, k + 4 * 16, 32)
    assert len(out.attentions) == 2
    names = [s[0] for s in scheme_steps(scheme)]
    assert [rec.step for rec in out.attentions[0]] == names
    for rec in out.attentions[0]:
        for w, idx in zip(rec.weights, rec.groups):
            g, length = idx.shape
            length += rec.has_cls
            assert w.shape == (2, g, 4, length, length)
            torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


@pytest.mark.parametrize("scheme", ATTENTION_TYPES)
def test_gradients_reach_every_parameter(scheme):
    model = randomize_(FALForVideoClassification(tiny_config(attention_type=scheme)))
    out = model(torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([0, 2]))
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("scheme", ATTENTION_TYPES)
def test_sdpa_matches_reference_path(scheme):
    model = randomize_(FALForVideoClassification(tiny_config(attention_type=scheme))).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        fused = model.set_attention_backend("sdpa")(x).logits
        reference = model.set_attention_backend("reference")(x).logits
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        tiny_config(attention_type="spacetime")
    for name in ATTENTION_TYPES:
        assert name in str(err.value)


# Expected neighbourhood of a query patch (t0, h0, w0), written independently of the groupings.
def _neighbours(step, q, grid):
    t0, h0, w0 = q
    T, H, W = grid
    hh, wh = (H + 1) // 2, (W + 1) // 2
    rule = {
        "time": lambda t, h, w: (h, w) == (h0, w0),
        "space": lambda t, h, w: t == t0,
        "joint": lambda t, h, w: True,
        "width": lambda t, h, w: (t, h) == (t0, h0),
        "height": lambda t, h, w: (t, w) == (t0, w0),
        "local": lambda t, h, w: (h < hh) == (h0 < hh) and (w < wh) == (w0 < wh),
        "global": lambda t, h, w: (t % 2, h % 2, w % 2) == (t0 % 2, h0 % 2, w0 % 2),
    }[step]
    return {(t, h, w) for t, h, w in itertools.product(range(T), range(H), range(W)) if rule(t, h, w)}


STEP_CASES = [(scheme, i) for scheme in ATTENTION_TYPES for i in range(len(scheme_steps(scheme)))]


@pytest.mark.parametrize("grid", [(4, 4, 4), (3, 5, 6)])
@pytest.mark.parametrize("scheme,step_index", STEP_CASES)
def test_receptive_field_of_one_step(scheme, step_index, grid):
    """Perturb one patch: exactly the tokens of its neighbourhood (and no others) change."""
    name, grouping, cls_mode, out_fc = scheme_steps(scheme)[step_index]
    d = 16
    step = randomize_(AttentionStep(name, grouping, d, 2, qkv_bias=True, attn_drop=0.0, proj_drop=0.0,
                                    eps=1e-6, cls_mode=cls_mode, out_fc=out_fc)).eval()
    T, H, W = grid
    k = T if cls_mode == "per_group" else 1
    cls, x = torch.randn(1, k, d), torch.randn(1, T * H * W, d)
    q = (T - 1, H // 2, 1)
    qi = (q[0] * H + q[1]) * W + q[2]
    x2 = x.clone()
    x2[0, qi] += torch.randn(d)  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        c1, y1, _ = step(cls, x, grid, DropPath())
        c2, y2, _ = step(cls, x2, grid, DropPath())
    changed = (y1 - y2).abs().amax(-1)[0] > 1e-6
    got = {(i // (H * W), (i // W) % H, i % W) for i in changed.nonzero().flatten().tolist()}
    assert got == _neighbours(name, q, grid)
    cls_changed = ((c1 - c2).abs().amax(-1)[0] > 1e-6).tolist()
    if cls_mode == "none":
        assert not any(cls_changed)
    elif cls_mode == "per_group":  # space-only: only the CLS token of the query's frame
        assert cls_changed == [t == q[0] for t in range(T)]
    else:
        assert cls_changed == [True]


@pytest.mark.parametrize("T,H,W", [(8, 14, 14), (4, 4, 4), (16, 7, 9)])
def test_comparisons_per_patch(T, H, W):
    n = H * W
    assert comparisons_per_patch("joint_space_time", (T, H, W)) == n * T + 1
    # The paper's N + F + 2 counts the CLS key in the temporal step too (its Eq. 7);
    # TimeSformer's code, and so falv, leaves it out there: one comparison fewer.
    assert comparisons_per_patch("divided_space_time", (T, H, W)) == n + T + 2 - 1
    assert comparisons_per_patch("space_only", (T, H, W)) == n + 1
    assert comparisons_per_patch("axial", (T, H, W)) == T + W + H + 1


def test_cls_token_is_averaged_over_frames_in_space_only():
    """Space-only follows the original TimeSformer: frame CLS tokens averaged, then LN, then head."""
    model = randomize_(FALForVideoClassification(tiny_config(attention_type="space_only"))).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        last = out.hidden_states[-1][:, :4]  # the 4 per-frame CLS tokens after the last block
        expected = model.head(model.fal.norm(last.mean(1)))
    torch.testing.assert_close(out.logits, expected)
