"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers")
for FAL's five space-time attention schemes.

Tokens are numbered as in the model: the ``K`` CLS tokens first (``K = T`` for
space-only, else 1), then the ``T * N`` patches frame-major (token
``K + t*N + h*Wp + w``); ``M = K + T*N``.

Every attention step of every block (``output_attentions=True`` gives one
:class:`~falv.model.schemes.StepAttention` per step) becomes one row-stochastic
``M x M`` *mixing matrix*:

* inside each group, the attention of that group averaged over heads, mixed with
  the residual connection as ``0.5 * A + 0.5 * I`` (Abnar & Zuidema, Sec. 3) and
  renormalised so that each row sums to 1;
* a token the step leaves out (outside every group, or the CLS token of a step
  without CLS) keeps an identity row: the residual carries it through unchanged;
* a *shared* CLS token (joint, divided, sparse local-global and axial) is copied
  into every group and the copies' outputs are averaged, so its row is the mean
  of its rows in the ``G`` groups (``schemes.AttentionStep``); *per-group* CLS
  tokens (space-only: one per frame) are ordinary members of their own group.

The rollout is the product of the mixing matrices from the first step of the
first block to the last step of the last block. The clip embedding is LN of the
CLS token, averaged over the CLS tokens for space-only (``FALModel.forward``), so
the relevance of each input token is the mean of the CLS rows of the product.
The MLPs and LayerNorms act on each token alone and do not move information
between tokens; like the original method, rollout ignores them and the value and
output projections (including divided attention's ``temporal_fc``).

:func:`cls_relevance` computes only that row, as a row vector multiplied through
the steps from the last to the first, group by group (no ``M x M`` matrix, so it
also fits joint attention at 16 x 448); :func:`rollout_matrix` builds the full
product and is meant for tests and small grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from falv.model.schemes import StepAttention

Grid = tuple[int, int, int]  # (T, Hp, Wp)
Attentions = Sequence[Sequence[StepAttention]]  # per block, per attention step

#: Weight of the identity (the residual connection) in a step's mixing matrix (Abnar & Zuidema: 0.5).
DEFAULT_RESIDUAL = 0.5


# -- one step -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StepPart:
    """One group tensor of a step: its token ids (G, L') and row-stochastic mixing blocks (B, G, L', L')."""

    tokens: torch.Tensor
    blocks: torch.Tensor


@dataclass(frozen=True)
class _StepMixing:
    parts: list[_StepPart]
    covered: torch.Tensor  # (M,) bool: rows the step writes; the others are identity rows
    shared_cls_groups: int  # > 0: token 0 is a shared CLS whose row is averaged over this many groups


def _cls_mode(step: StepAttention, num_cls: int) -> str:
    if not step.has_cls:
        return "none"
    total = sum(int(w.shape[1]) for w in step.weights)
    if num_cls == 1:
        return "shared"
    if num_cls == total:
        return "per_group"
    raise ValueError(
        f"step {step.step!r} has CLS in {total} groups but the model has {num_cls} CLS tokens; "
        "expected one shared CLS token or one per group"
    )


def _step_mixing(step: StepAttention, num_tokens: int, num_cls: int, residual: float) -> _StepMixing:
    """Per-group mixing blocks of one step (heads averaged, residual added, rows renormalised)."""
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    if len(step.weights) != len(step.groups):
        raise ValueError(f"step {step.step!r}: {len(step.weights)} weight tensors for {len(step.groups)} groupings")
    mode = _cls_mode(step, num_cls)
    total_groups = sum(int(w.shape[1]) for w in step.weights)
    parts: list[_StepPart] = []
    rows: list[torch.Tensor] = []
    offset = 0
    for weights, idx in zip(step.weights, step.groups):
        if weights.ndim != 5:
            raise ValueError(f"step {step.step!r}: weights must be (B, G, heads, L, L), got {tuple(weights.shape)}")
        g, length = idx.shape
        width = length + (mode != "none")
        if weights.shape[1] != g or weights.shape[-1] != width or weights.shape[-2] != width:
            raise ValueError(
                f"step {step.step!r}: weights {tuple(weights.shape)} do not match groups {tuple(idx.shape)}"
                + (" plus the CLS token" if mode != "none" else "")
            )
        device = weights.device
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_tokens - num_cls):
            raise ValueError(f"step {step.step!r}: group indices fall outside the {num_tokens - num_cls} patches")
        tokens = idx.to(device=device, dtype=torch.long) + num_cls
        if mode == "shared":
            cls_ids = torch.zeros(g, 1, dtype=torch.long, device=device)
        elif mode == "per_group":
            cls_ids = torch.arange(offset, offset + g, dtype=torch.long, device=device).unsqueeze(1)
        if mode != "none":
            tokens = torch.cat([cls_ids, tokens], dim=1)  # (G, L'): the CLS position comes first
        offset += g
        blocks = weights.float().mean(dim=2) * (1.0 - residual)  # heads averaged: (B, G, L', L')
        blocks.diagonal(dim1=-2, dim2=-1).add_(residual)  # + residual * I
        blocks = blocks / blocks.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(blocks.dtype).tiny)
        parts.append(_StepPart(tokens, blocks))
        rows.append((tokens[:, 1:] if mode == "shared" else tokens).reshape(-1))
    covered = torch.zeros(num_tokens, dtype=torch.bool, device=parts[0].tokens.device if parts else "cpu")
    if rows:
        written = torch.cat(rows)
        if torch.unique(written).numel() != written.numel():
            raise ValueError(f"step {step.step!r}: a token appears in more than one group")
        covered[written] = True
        if mode == "shared":
            covered[0] = True
    return _StepMixing(parts, covered, total_groups if mode == "shared" else 0)


def num_tokens(grid: Grid, num_cls: int = 1) -> int:
    """``K + T*Hp*Wp``: the CLS tokens and every patch of the clip."""
    t, hp, wp = grid
    return num_cls + t * hp * wp


def mixing_matrix(
    step: StepAttention, grid: Grid, num_cls: int = 1, residual: float = DEFAULT_RESIDUAL
) -> torch.Tensor:
    """The dense row-stochastic ``(B, M, M)`` mixing matrix of one attention step.

    Row ``i`` says how much of token ``i``'s new value comes from each token
    (``0.5 * A + 0.5 * I`` inside its group, rows renormalised; identity for tokens
    the step does not touch). Memory is ``B * M**2`` floats: for tests and small grids.
    """
    m = num_tokens(grid, num_cls)
    mix = _step_mixing(step, m, num_cls, residual)
    if not mix.parts:
        return torch.eye(m).unsqueeze(0)
    b = mix.parts[0].blocks.shape[0]
    device = mix.parts[0].blocks.device
    out = torch.zeros(b, m, m, device=device)
    for part in mix.parts:
        vals = part.blocks
        if mix.shared_cls_groups:
            vals = vals.clone()
            vals[:, :, 0, :] /= mix.shared_cls_groups  # the CLS copies' rows are averaged
        g, width = part.tokens.shape
        batch = torch.arange(b, device=device).view(b, 1, 1, 1)
        rows = part.tokens.view(1, g, width, 1)
        cols = part.tokens.view(1, g, 1, width)
        out.index_put_((batch, rows, cols), vals, accumulate=True)
    untouched = torch.nonzero(~mix.covered.to(device)).squeeze(1)
    out[:, untouched, untouched] = 1.0
    return out


def rollout_matrix(
    attentions: Attentions, grid: Grid, num_cls: int = 1, residual: float = DEFAULT_RESIDUAL
) -> torch.Tensor:
    """The full rollout ``A_S @ ... @ A_1`` over every step of every block, ``(B, M, M)``.

    Row ``i`` is how much of output token ``i`` comes from each input token
    (Abnar & Zuidema, Eq. 1). Dense: for tests and small grids; use
    :func:`cls_relevance` for real models.
    """
    result: torch.Tensor | None = None
    for block in attentions:
        for step in block:
            a = mixing_matrix(step, grid, num_cls, residual)
            result = a if result is None else a @ result
    if result is None:
        raise ValueError("no attention steps given (run the model with output_attentions=True)")
    return result


def cls_relevance(
    attentions: Attentions, grid: Grid, num_cls: int = 1, residual: float = DEFAULT_RESIDUAL
) -> torch.Tensor:
    """The rollout row of the clip embedding: ``(B, M)``, the mean of the CLS rows of
    :func:`rollout_matrix`, computed as a row vector times each step, last step first.

    Entries are non-negative and sum to 1 per clip; the first ``num_cls`` entries
    are the share that stays on the CLS token(s) themselves.
    """
    m = num_tokens(grid, num_cls)
    blocks = [list(block) for block in attentions]
    steps = [step for block in blocks for step in block]
    if not steps:
        raise ValueError("no attention steps given (run the model with output_attentions=True)")
    first = next((w for s in steps for w in s.weights), None)
    batch = first.shape[0] if first is not None else 1
    device = first.device if first is not None else torch.device("cpu")
    r = torch.zeros(batch, m, device=device)
    r[:, :num_cls] = 1.0 / num_cls  # pooled = mean of the CLS tokens (one, or one per frame)
    for step in reversed(steps):
        mix = _step_mixing(step, m, num_cls, residual)
        new = r * (~mix.covered.to(device)).to(r.dtype)  # identity rows carry their weight unchanged
        for part in mix.parts:
            weights = r[:, part.tokens]  # (B, G, L'): how much each row counts
            if mix.shared_cls_groups:
                weights[:, :, 0] = r[:, :1] / mix.shared_cls_groups
            contrib = torch.einsum("bgi,bgij->bgj", weights, part.blocks)
            new.index_add_(1, part.tokens.reshape(-1), contrib.reshape(batch, -1))
        r = new
    return r


def attention_rollout(
    attentions: Attentions, grid: Grid, num_cls: int = 1, residual: float = DEFAULT_RESIDUAL
) -> torch.Tensor:
    """Relevance of every patch for the clip embedding, ``(B, T, Hp, Wp)``, non-negative.

    ``attentions``: per block, the :class:`StepAttention` of each step (the
    model's ``output_attentions``); ``grid``: ``(T, Hp, Wp)``; ``num_cls``: CLS
    tokens (``T`` for space-only, else 1). The values are the patch entries of
    :func:`cls_relevance` (they sum to 1 minus the share left on the CLS tokens).
    """
    t, hp, wp = grid
    r = cls_relevance(attentions, grid, num_cls, residual)
    return r[:, num_cls:].reshape(r.shape[0], t, hp, wp)


# -- running a model ----------------------------------------------------------------------------


@dataclass
class Explanation:
    """What :func:`explain` found for one clip.

    ``relevance``: (T, Hp, Wp) float32 rollout relevance of each patch (raw, not rescaled);
    ``frames``: (T, H, W, 3) uint8, the frames as the model saw them (resized and cropped);
    ``labels``: the top classes with their probabilities, best first;
    ``cls_share``: the part of the relevance that stayed on the CLS token(s).
    """

    relevance: np.ndarray
    frames: np.ndarray
    labels: list[tuple[str, float]]
    attention_type: str
    patch_size: int
    cls_share: float = 0.0
    timestamps: list[float] | None = None
    source: str | None = None

    @property
    def top(self) -> tuple[str, float] | None:
        """The best class and its probability."""
        return self.labels[0] if self.labels else None

    @property
    def title(self) -> str:
        """One line for a picture: top label, score, scheme."""
        head = f"{self.top[0]} ({self.top[1]:.1%})" if self.top else "no label"
        name = f"{self.source}: " if self.source else ""
        return f"{name}{head} - attention rollout, {self.attention_type.replace('_', ' ')}"


def _display_frames(processor: Any, frames: Any) -> np.ndarray:
    """The resized, cropped frames the model sees, as (T, H, W, 3) uint8 for display."""
    import copy

    geometric = copy.copy(processor)
    geometric.do_rescale = False
    geometric.do_normalize = False
    clip = geometric.preprocess_clip(frames)  # (T, C, H, W) float
    if not processor.do_rescale:  # frames were given in [0, 1]
        clip = clip * 255.0
    return clip.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def explain(
    model: Any,
    frames: Any,
    *,
    processor: Any = None,
    top_k: int = 5,
    residual: float = DEFAULT_RESIDUAL,
    timestamps: Sequence[float] | None = None,
    source: str | None = None,
) -> Explanation:
    """Run ``model`` on one clip with ``output_attentions`` and roll out its attention.

    ``frames``: one video clip as the processor takes it, e.g. (T, H, W, 3) uint8;
    ``processor``: a :class:`falv.processing.FALImageProcessor` (default: the
    model's own size, mean and std, ``FALImageProcessor.from_config``). The model
    runs in eval mode on its own device and dtype; its training mode is restored.
    """
    from falv.processing import FALImageProcessor

    config = model.config
    proc = processor if processor is not None else FALImageProcessor.from_config(config)
    pixel_values = proc(frames, return_tensors="pt")["pixel_values"]  # (1, T, C, H, W)
    if pixel_values.shape[0] != 1:
        raise ValueError("explain takes one clip; call it once per clip")
    display = _display_frames(proc, frames)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(pixel_values.to(device=model.device, dtype=model.dtype), output_attentions=True)
    finally:
        model.train(was_training)
    _, t, _, h, w = pixel_values.shape
    p = config.patch_size
    grid = (t, h // p, w // p)
    num_cls = t if config.attention_type == "space_only" else 1
    row = cls_relevance(out.attentions, grid, num_cls, residual)[0].float().cpu()
    relevance = row[num_cls:].reshape(grid).numpy().astype(np.float32)
    logits = out.logits[0].float().cpu()
    from falv.inference import config_scores

    probs = config_scores(logits, config)  # the calibrated scores labeling gives
    order = torch.argsort(probs, descending=True, stable=True)[: max(1, top_k)]
    labels = [(config.id2label[int(i)], float(probs[i])) for i in order]
    return Explanation(
        relevance=relevance,
        frames=display,
        labels=labels,
        attention_type=config.attention_type,
        patch_size=p,
        cls_share=float(row[:num_cls].sum()),
        timestamps=[float(x) for x in timestamps] if timestamps is not None else None,
        source=source,
    )
