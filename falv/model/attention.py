"""Multi-head self-attention with a fused path and a plain reference path.

The fused path calls :func:`torch.nn.functional.scaled_dot_product_attention`
(flash / memory-efficient kernels on CPU and CUDA). The reference path writes
the softmax out (Eq. 7-8 of the FAL paper) and is the one used when attention
maps are requested; a test checks the two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from falv.errors import ConfigError

ATTENTION_BACKENDS = ("sdpa", "reference")


class MultiHeadAttention(nn.Module):
    """q/k/v projections, attention over the second axis, output projection.

    Parameter names follow TimeSformer (``qkv``, ``proj``) so checkpoints map 1:1.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.backend = "sdpa"

    @torch.no_grad()
    def fold_scale(self) -> None:
        """Scale the query projection by ``1/sqrt(head_dim)`` once and attend with scale 1
        (same attention, one multiplication less per call). Inference only: the folded
        ``qkv`` weights no longer match a checkpoint's."""
        if self.scale == 1.0:
            return
        dim = self.num_heads * self.head_dim
        self.qkv.weight[:dim] *= self.scale
        if self.qkv.bias is not None:
            self.qkv.bias[:dim] *= self.scale
        self.scale = 1.0

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: (N, L, D) sequences; returns (N, L, D) and, if asked, (N, heads, L, L) weights."""
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, head_dim)
        dropout = self.attn_drop if self.training else 0.0
        weights = None
        if need_weights or self.backend == "reference":
            weights = q @ k.transpose(-2, -1)  # (N, heads, L, L)
            if self.scale != 1.0:
                weights = weights * self.scale
            weights = weights.softmax(dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        out = out.transpose(1, 2).reshape(n, length, dim)
        return self.proj_drop(self.proj(out)), weights
