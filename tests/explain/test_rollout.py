"""Attention rollout: mixing matrices, the CLS row, all five schemes, and a model with a known focus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from falv.config import ATTENTION_TYPES
from falv.explain.rollout import (
    Explanation,
    attention_rollout,
    cls_relevance,
    explain,
    mixing_matrix,
    rollout_matrix,
)
from falv.model.schemes import StepAttention

from .conftest import bright_frames, peaked_model, random_model


def num_cls_for(attention_type: str, frames: int) -> int:
    return frames if attention_type == "space_only" else 1


def run_attentions(model, pixel_values):
    with torch.no_grad():
        return model(pixel_values, output_attentions=True).attentions


def softmax_weights(gen: torch.Generator, *shape: int, sharp: float = 2.0) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=gen) * sharp, dim=-1)


# -- every scheme ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_mixing_matrices_are_row_stochastic(attention_type):
    model = random_model(attention_type)
    attentions = run_attentions(model, torch.randn(2, 4, 3, 32, 32))
    grid, k = (4, 4, 4), num_cls_for(attention_type, 4)
    for block in attentions:
        for step in block:
            a = mixing_matrix(step, grid, k)
            assert a.shape == (2, k + 64, k + 64)
            assert (a >= 0).all()
            torch.testing.assert_close(a.sum(-1), torch.ones(2, k + 64))
    full = rollout_matrix(attentions, grid, k)
    assert (full >= 0).all()
    torch.testing.assert_close(full.sum(-1), torch.ones(2, k + 64))


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_cls_row_matches_the_dense_product(attention_type):
    model = random_model(attention_type, seed=1)
    attentions = run_attentions(model, torch.randn(2, 4, 3, 32, 32))
    grid, k = (4, 4, 4), num_cls_for(attention_type, 4)
    row = cls_relevance(attentions, grid, k)
    dense = rollout_matrix(attentions, grid, k)[:, :k].mean(dim=1)  # the pooled embedding averages CLS tokens
    torch.testing.assert_close(row, dense, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(row.sum(-1), torch.ones(2))


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_every_scheme_gives_a_finite_non_negative_map(attention_type):
    """Odd grid (3 frames, 3x5 patches): uneven local windows and parity groups."""
    model = random_model(attention_type, seed=2)
    attentions = run_attentions(model, torch.randn(1, 3, 3, 24, 40))
    maps = attention_rollout(attentions, (3, 3, 5), num_cls_for(attention_type, 3))
    assert maps.shape == (1, 3, 3, 5)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert 0 < float(maps.sum()) <= 1 + 1e-5
    assert float(maps.max()) > 0


def test_joint_one_block_is_the_direct_formula():
    """One step: the CLS row of 0.5 * mean_heads(A) + 0.5 * I, restricted to the patches."""
    model = random_model("joint_space_time", seed=3)
    model.fal.blocks = model.fal.blocks[:1]
    attentions = run_attentions(model, torch.randn(1, 4, 3, 32, 32))
    (step,) = attentions[0]
    weights = step.weights[0][0, 0].mean(0)  # (1 + 64, 1 + 64), heads averaged, CLS first
    expected = 0.5 * weights[0, 1:]
    got = attention_rollout(attentions, (4, 4, 4), 1)[0].reshape(-1)
    torch.testing.assert_close(got, expected)


def test_shared_cls_row_is_the_mean_over_groups():
    """Divided spatial step by hand: a CLS copy per group, its rows averaged (then the residual)."""
    gen = torch.Generator().manual_seed(0)
    groups = torch.tensor([[0, 1], [2, 3]])  # two frames of two patches
    w = softmax_weights(gen, 1, 2, 3, 3, 3)  # (B, G, heads, 1 + 2, 1 + 2)
    step = StepAttention("space", [w], [groups], has_cls=True)
    a = mixing_matrix(step, (2, 1, 2), num_cls=1)[0]
    wbar = w[0].mean(1)  # (G, 3, 3)
    expected_cls = torch.zeros(5)
    expected_cls[0] = 0.5 + 0.5 * (wbar[0, 0, 0] + wbar[1, 0, 0]) / 2
    expected_cls[1:3] = 0.5 * wbar[0, 0, 1:] / 2
    expected_cls[3:5] = 0.5 * wbar[1, 0, 1:] / 2
    torch.testing.assert_close(a[0], expected_cls)
    # patch 2 (token 3) sits in group 1: 0.5 * its attention over [CLS, token 3, token 4] + 0.5 * itself
    expected = torch.zeros(5)
    expected[[0, 3, 4]] = 0.5 * wbar[1, 1]
    expected[3] += 0.5
    torch.testing.assert_close(a[3], expected)


def test_per_group_cls_tokens_stay_in_their_group():
    """Space-only by hand: CLS k belongs to frame k only; the clip row averages the CLS rows."""
    gen = torch.Generator().manual_seed(1)
    groups = torch.tensor([[0, 1], [2, 3]])
    w = softmax_weights(gen, 1, 2, 2, 3, 3)
    step = StepAttention("space", [w], [groups], has_cls=True)
    a = mixing_matrix(step, (2, 1, 2), num_cls=2)[0]  # tokens: CLS0, CLS1, p0, p1, p2, p3
    assert torch.all(a[0, [1, 4, 5]] == 0) and torch.all(a[1, [0, 2, 3]] == 0)
    row = cls_relevance([[step]], (2, 1, 2), num_cls=2)[0]
    torch.testing.assert_close(row, a[:2].mean(0))


def test_steps_without_cls_leave_the_cls_token_alone():
    gen = torch.Generator().manual_seed(2)
    step = StepAttention("time", [softmax_weights(gen, 1, 2, 2, 2, 2)], [torch.tensor([[0, 2], [1, 3]])],
                         has_cls=False)
    a = mixing_matrix(step, (2, 1, 2), num_cls=1)[0]
    torch.testing.assert_close(a[0], torch.eye(5)[0])
    row = cls_relevance([[step]], (2, 1, 2), num_cls=1)
    torch.testing.assert_close(row[0], torch.eye(5)[0])  # the CLS never looked at a patch


# -- properties on random groupings -----------------------------------------------------------------


@st.composite
def random_steps(draw):
    """A few steps over a small grid; each groups a random subset of patches (some patches in none)."""
    t, hp, wp = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = t * hp * wp
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    left_out = set(draw(st.sets(st.integers(0, n - 1), max_size=n)))
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        members = [i for i in torch.randperm(n, generator=gen).tolist() if i not in left_out]
        length = draw(st.integers(1, 4))
        g = len(members) // length
        has_cls = draw(st.booleans())
        if g == 0:
            steps.append(StepAttention("s", [], [], has_cls=False))
            continue
        groups = torch.tensor(members[: g * length]).view(g, length)
        width = length + has_cls
        w = softmax_weights(gen, 2, g, 2, width, width)
        steps.append(StepAttention("s", [w], [groups], has_cls=has_cls))
    return (t, hp, wp), steps, left_out


@settings(max_examples=60, deadline=None)
@given(random_steps())
def test_properties_on_random_groupings(case):
    grid, steps, left_out = case
    attentions = [steps[:1], steps[1:]]  # two "blocks"
    m = 1 + grid[0] * grid[1] * grid[2]
    for step in steps:
        if step.weights:
            a = mixing_matrix(step, grid, 1)
            assert (a >= 0).all()
            torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[0], m))
    row = cls_relevance(attentions, grid, 1)
    assert (row >= 0).all()
    torch.testing.assert_close(row.sum(-1), torch.ones(row.shape[0]))
    if any(step.weights for step in steps):
        torch.testing.assert_close(row, rollout_matrix(attentions, grid, 1)[:, 0], atol=1e-6, rtol=1e-5)
    # a patch that no group of any step contains never receives relevance
    maps = attention_rollout(attentions, grid, 1).reshape(row.shape[0], -1)
    for patch in left_out:
        assert torch.all(maps[:, patch] == 0)


def test_a_token_nobody_attends_to_keeps_zero_relevance():
    """Patch 1 is in every group but no query gives it weight: only its own residual reaches it."""
    gen = torch.Generator().manual_seed(3)
    steps = []
    for _ in range(3):
        w = softmax_weights(gen, 1, 1, 2, 5, 5)  # CLS + 4 patches
        w[..., 2] = 0.0  # column of patch 1 (position 2 after the CLS)
        w = w / w.sum(-1, keepdim=True)
        steps.append(StepAttention("joint", [w], [torch.arange(4).view(1, 4)], has_cls=True))
    maps = attention_rollout([steps], (1, 2, 2), 1)[0].reshape(-1)
    assert maps[1] == 0
    assert torch.all(maps[[0, 2, 3]] > 0)


def test_bad_inputs_are_reported():
    gen = torch.Generator().manual_seed(4)
    step = StepAttention("space", [softmax_weights(gen, 1, 2, 1, 3, 3)], [torch.tensor([[0, 1], [2, 3]])],
                         has_cls=True)
    with pytest.raises(ValueError, match="CLS"):
        mixing_matrix(step, (2, 1, 2), num_cls=3)  # neither shared nor one per group
    with pytest.raises(ValueError, match="outside"):
        mixing_matrix(step, (1, 1, 2), num_cls=1)  # indices beyond the grid
    twice = StepAttention("x", [softmax_weights(gen, 1, 2, 1, 2, 2)], [torch.tensor([[0, 1], [1, 2]])],
                          has_cls=False)
    with pytest.raises(ValueError, match="more than one group"):
        mixing_matrix(twice, (1, 1, 3))
    wrong = StepAttention("x", [softmax_weights(gen, 1, 2, 1, 2, 2)], [torch.tensor([[0, 1], [2, 3]])],
                          has_cls=True)
    with pytest.raises(ValueError, match="do not match"):
        mixing_matrix(wrong, (1, 2, 2))
    with pytest.raises(ValueError, match="no attention steps"):
        cls_relevance([], (1, 2, 2))


# -- a model with a known focus ---------------------------------------------------------------------


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("where", [(1, 2), (3, 0)])
def test_map_peaks_on_the_patch_that_dominates_attention(attention_type, where):
    h, w = where
    model = peaked_model(attention_type)
    result = explain(model, bright_frames([(t, h, w) for t in range(4)]))
    assert isinstance(result, Explanation)
    spatial = result.relevance.sum(axis=0)  # (Hp, Wp)
    assert np.unravel_index(spatial.argmax(), spatial.shape) == (h, w)
    others = np.delete(spatial.reshape(-1), h * 4 + w)
    assert spatial[h, w] > 5 * others.max()


@pytest.mark.parametrize("attention_type", ["joint_space_time", "divided_space_time"])
def test_map_finds_the_frame_too(attention_type):
    model = peaked_model(attention_type)
    result = explain(model, bright_frames([(2, 1, 3)]))
    assert np.unravel_index(result.relevance.argmax(), result.relevance.shape) == (2, 1, 3)


def test_explain_returns_what_the_model_saw():
    model = random_model("divided_space_time")
    model.train()
    video = np.random.default_rng(0).integers(0, 256, size=(4, 48, 64, 3), dtype=np.uint8)
    result = explain(model, video, top_k=2, timestamps=[0, 1, 2, 3], source="clip.mp4")
    assert model.training  # mode restored
    assert result.frames.shape == (4, 32, 32, 3) and result.frames.dtype == np.uint8
    assert result.relevance.shape == (4, 4, 4) and result.relevance.dtype == np.float32
    assert [name for name, _ in result.labels] == sorted([n for n, _ in result.labels],
                                                         key=lambda n: -dict(result.labels)[n])
    assert len(result.labels) == 2 and result.top == result.labels[0]
    assert 0 <= result.cls_share < 1
    assert abs(float(result.relevance.sum()) + result.cls_share - 1) < 1e-4
    assert "clip.mp4" in result.title and "divided space time" in result.title


def test_space_first_divided_order():
    """With space before time, the last block's time step runs after the CLS token's last update:
    it cannot change the relevance (its row for the CLS token is the identity)."""
    from falv import FALConfig

    if "divided_order" not in FALConfig.__dataclass_fields__:
        pytest.skip("this falv has no divided_order")
    from falv import FALForVideoClassification

    from .conftest import tiny_config

    model = FALForVideoClassification(tiny_config(divided_order="space_time")).eval()
    attentions = run_attentions(model, torch.randn(1, 4, 3, 32, 32))
    assert [s.step for s in attentions[-1]] == ["space", "time"]
    without_last_time = [*attentions[:-1], attentions[-1][:1]]
    torch.testing.assert_close(cls_relevance(attentions, (4, 4, 4)), cls_relevance(without_last_time, (4, 4, 4)))
