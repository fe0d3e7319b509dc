"""The five space-time attention schemes of the FAL paper (Fig. 1-2, Table 1).

Patch tokens live in one layout, ``(B, T*N, D)`` in frame-major order (token
``t*N + h*Wp + w``), beside a CLS tensor ``(B, K, D)``. Every scheme is a short
list of :class:`AttentionStep`; a step is pre-LN multi-head attention inside
*groups* of tokens, plus a residual. A grouping is a pure function of the grid
``(T, Hp, Wp)`` that returns index tensors: the whole scheme is visible in how
tokens are grouped.

How the CLS token takes part (following the public TimeSformer where it exists):

* ``joint_space_time``: the CLS token is one more member of the single group.
* ``divided_space_time``: temporal step without CLS, then a projection
  (``temporal_fc``); in the spatial step the CLS token is copied into every frame
  and the copies' outputs are averaged (TimeSformer, Bertasius et al. 2021).
  ``divided_order="space_time"`` runs the same two steps, with the same
  parameters, in the other order (the paper's order ablation).
* ``space_only``: one CLS token per frame (K = T), never mixed across frames;
  the model averages over frames after the last block.
* ``sparse_local_global`` and ``axial`` (no public implementation; falv's
  choices, documented in docs/model.md): CLS stays out of every step but the
  last of the block, where it is copied into every group and the copies'
  outputs are averaged, exactly as in the spatial step of divided attention.
  Local windows are the four non-overlapping ``F x ceil(Hp/2) x ceil(Wp/2)``
  blocks of the clip; the sparse global step groups tokens by the parity of
  ``(t, h, w)``, so each token attends over the whole clip with stride 2 in
  time and in both spatial dimensions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from falv.config import ATTENTION_TYPES, DIVIDED_ORDERS, check_choice
from falv.errors import ConfigError
from falv.model.attention import MultiHeadAttention

Grid = tuple[int, int, int]  # (T, Hp, Wp)
Grouping = Callable[[int, int, int], list[torch.Tensor]]


# -- groupings: (T, Hp, Wp) -> list of (G, L) index tensors, equal L inside one tensor --------


def _grid_index(t: int, hp: int, wp: int) -> torch.Tensor:
    return torch.arange(t * hp * wp).view(t, hp, wp)


def group_all(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """One group holding every patch of the clip (joint space-time, Eq. 5)."""
    return [torch.arange(t * hp * wp).view(1, -1)]


def group_frames(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """One group per frame (space attention, Eq. 6 / second step of T+S)."""
    return [_grid_index(t, hp, wp).reshape(t, hp * wp)]


def group_time(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """One group per patch position, across frames (temporal step of T+S, Eq. 7)."""
    return [_grid_index(t, hp, wp).permute(1, 2, 0).reshape(hp * wp, t)]


def group_rows(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """One group per (frame, row): attention along the width axis (W of T+W+H)."""
    return [_grid_index(t, hp, wp).reshape(t * hp, wp)]


def group_columns(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """One group per (frame, column): attention along the height axis (H of T+W+H)."""
    return [_grid_index(t, hp, wp).permute(0, 2, 1).reshape(t * wp, hp)]


def _bucket(groups: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stack 1-D groups into (G, L) tensors, one per distinct length."""
    by_len: dict[int, list[torch.Tensor]] = {}
    for g in groups:
        by_len.setdefault(int(g.numel()), []).append(g)
    return [torch.stack(v) for _, v in sorted(by_len.items())]


def group_local(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """Four windows of F x ceil(Hp/2) x ceil(Wp/2) patches (local step of L+G)."""
    grid = _grid_index(t, hp, wp)
    h_half, w_half = (hp + 1) // 2, (wp + 1) // 2
    groups = []
    for hs in (slice(0, h_half), slice(h_half, hp)):
        for ws in (slice(0, w_half), slice(w_half, wp)):
            block = grid[:, hs, ws].reshape(-1)
            if block.numel():
                groups.append(block)
    return _bucket(groups)


def group_strided(t: int, hp: int, wp: int) -> list[torch.Tensor]:
    """Tokens grouped by the parity of (t, h, w): sparse global attention, stride 2 (G of L+G)."""
    grid = _grid_index(t, hp, wp)
    groups = []
    for dt in range(2):
        for dh in range(2):
            for dw in range(2):
                block = grid[dt::2, dh::2, dw::2].reshape(-1)
                if block.numel():
                    groups.append(block)
    return _bucket(groups)


@functools.lru_cache(maxsize=256)
def _cached_groups(grouping: Grouping, grid: Grid, device: torch.device) -> tuple[tuple[torch.Tensor, bool], ...]:
    """Index tensors on ``device`` and, for each, whether it is the identity (a pure reshape).

    The tensors are cached across calls, so they are made outside inference mode: a cache filled
    by a forward under ``torch.inference_mode()`` must still serve a later training forward
    (``falv serve`` labels, then retrains on corrections, in one process)."""
    out = []
    with torch.inference_mode(False):
        for idx in grouping(*grid):
            identity = bool(torch.equal(idx.reshape(-1), torch.arange(idx.numel())))
            out.append((idx.to(device), identity))
    return tuple(out)


# -- steps and schemes ----------------------------------------------------------------------------


@dataclass
class StepAttention:
    """Attention weights of one step: ``weights[i]`` is (B, G_i, heads, L_i, L_i) for the
    patch groups ``groups[i]`` (G_i, L_i); with ``has_cls`` the first of the L_i
    positions is the CLS token (the other positions are ``groups[i]`` in order)."""

    step: str
    weights: list[torch.Tensor]
    groups: list[torch.Tensor]
    has_cls: bool


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016), identity at eval."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class AttentionStep(nn.Module):
    """Pre-LN attention within groups of tokens, with a residual (Eq. 7-8).

    ``cls_mode``: ``"none"`` (CLS untouched), ``"shared"`` (one CLS copied into
    every group, outputs averaged) or ``"per_group"`` (K == G CLS tokens, one per group).
    ``out_fc`` adds TimeSformer's extra projection after temporal attention.
    """

    def __init__(
        self,
        name: str,
        grouping: Grouping,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        eps: float,
        cls_mode: str = "none",
        out_fc: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.grouping = grouping
        self.cls_mode = cls_mode
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.fc = nn.Linear(dim, dim) if out_fc else None

    def forward(
        self,
        cls: torch.Tensor,
        x: torch.Tensor,
        grid: Grid,
        drop_path: nn.Module,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, StepAttention | None]:
        """``cls`` (B, K, D), ``x`` (B, T*N, D) -> updated (cls, x) and optional weights."""
        b, m, d = x.shape
        h = self.norm(x)
        with_cls = self.cls_mode != "none"
        h_cls = self.norm(cls) if with_cls else None
        out = None
        cls_outs, weights, groups = [], [], []
        for idx, identity in _cached_groups(self.grouping, grid, x.device):
            g, length = idx.shape
            if identity:  # the groups are a plain reshape of the token axis: no copy
                seq = h.view(b * g, length, d)
            else:
                seq = h.index_select(1, idx.reshape(-1)).view(b * g, length, d)
            if with_cls:
                c = h_cls.expand(b, g, d) if self.cls_mode == "shared" else h_cls
                seq = torch.cat([c.reshape(b * g, 1, d), seq], dim=1)
            y, w = self.attn(seq, need_weights)
            if with_cls:
                cls_outs.append(y[:, 0].reshape(b, g, d))
                y = y[:, 1:]
            y = y.reshape(b, g * length, d)
            if identity and len(idx) * length == m:
                out = y
            else:
                if out is None:
                    out = x.new_zeros(b, m, d)
                out = out.index_copy(1, idx.reshape(-1), y)
            if need_weights:
                weights.append(w.view(b, g, *w.shape[1:]))
                groups.append(idx)
        if self.fc is not None:
            out = self.fc(out)
        x = x + drop_path(out)
        if with_cls:
            res = torch.cat(cls_outs, dim=1)  # (B, G, D)
            if self.cls_mode == "shared":
                res = res.mean(dim=1, keepdim=True)  # average the CLS copies (TimeSformer)
            cls = cls + drop_path(res)
        record = StepAttention(self.name, weights, groups, with_cls) if need_weights else None
        return cls, x, record


# name -> list of (step name, grouping, cls_mode, out_fc)
_SCHEMES: dict[str, list[tuple[str, Grouping, str, bool]]] = {
    "space_only": [("space", group_frames, "per_group", False)],
    "joint_space_time": [("joint", group_all, "shared", False)],
    "divided_space_time": [
        ("time", group_time, "none", True),
        ("space", group_frames, "shared", False),
    ],
    "sparse_local_global": [
        ("local", group_local, "none", False),
        ("global", group_strided, "shared", False),
    ],
    "axial": [
        ("time", group_time, "none", False),
        ("width", group_rows, "none", False),
        ("height", group_columns, "shared", False),
    ],
}
assert tuple(_SCHEMES) == ATTENTION_TYPES


def scheme_steps(attention_type: str, divided_order: str = "time_space") -> list[tuple[str, Grouping, str, bool]]:
    """The steps of a scheme; an unknown name raises an error listing the valid ones.

    ``divided_order`` (divided_space_time only): ``"time_space"`` is TimeSformer's
    order (Eq. 7 then Eq. 6); ``"space_time"`` swaps the two steps. Each step keeps
    its own name, LayerNorm and projections (``temporal_fc`` stays with the time
    step), so both orders have the same parameters under the same state-dict keys.
    """
    check_choice("attention_type", attention_type, ATTENTION_TYPES)
    check_choice("divided_order", divided_order, DIVIDED_ORDERS)
    steps = _SCHEMES[attention_type]
    if divided_order == "time_space":
        return steps
    if attention_type != "divided_space_time":
        raise ConfigError(
            f"divided_order={divided_order!r} applies only to 'divided_space_time', not {attention_type!r}"
        )
    return steps[::-1]  # space (Eq. 6) first, then time (Eq. 7)


def comparisons_per_patch(attention_type: str, grid: Grid, divided_order: str = "time_space") -> int:
    """How many keys one patch query is compared with in one block, summed over steps.

    Counted from the groupings themselves (so a test of it checks them), with the
    CLS token as a key wherever it takes part. Joint: NF + 1 (Eq. 5). Divided:
    F + (N + 1) = N + F + 1. The paper writes N + F + 2 because its Eq. 7 also
    puts the CLS key in the temporal step; the public TimeSformer code, whose
    checkpoints falv loads, leaves it out there, and so does falv. The order of the
    steps (``divided_order``) does not change the count.
    """
    t, hp, wp = grid
    total = 0
    for _name, grouping, cls_mode, _fc in scheme_steps(attention_type, divided_order):
        for idx in grouping(t, hp, wp):
            if (idx == 0).any():  # the group of patch 0 in this step
                total += idx.shape[1] + (cls_mode != "none")
    return total
