"""MViT: parity with pytorchvideo's MViT (v1 oracle) and with a transcription of PySlowFast's MViTv2
attention (v2 reference) for PySlowFast and pytorchvideo checkpoints, strict key maps, detection by
content, save/load, presets against PySlowFast's model zoo."""

from __future__ import annotations

import json
import math
import re
from functools import partial

import numpy
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from falv.errors import CheckpointError, ConfigError
from falv.hub.families import family_of, load_model, read_checkpoint
from falv.hub.load import _sniff_timesformer
from falv.model import mvit as fm
from falv.model.mvit import MViTConfig, MViTForVideoClassification, count_flops, mvit_preset
from tests.oracles import pytorchvideo

CLASSES = 5


@pytest.fixture(autouse=True)
def _plain_cpu_convolutions(monkeypatch):
    """oneDNN spends most of a second on a primitive for every new tiny conv shape (both sides run alike)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Random values in every parameter (LayerNorm scales around 1, zero-initialised tables non-zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if re.search(r"norm[^.]*\.weight$", name):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


# -- v1 oracle: pytorchvideo ---------------------------------------------------------------------------

#: Tiny MViTv1: 4 frames of 32 px -> 2x8x8 tokens, width 8 -> 16 after block 0, heads 1 -> 2, the
#: query pooled once (block 1, 2x2), keys / values pooled adaptively (4x4, then 2x2).
V1 = dict(depth=3, patch_embed_dim=8, num_heads=1, embed_dim_mul=[[1, 2.0]], atten_head_mul=[[1, 2.0]],
          pool_q_stride_size=[[1, 1, 2, 2]], pool_kv_stride_adaptive=[1, 4, 4], pool_kvq_kernel=[3, 3, 3])


def _pv_mvit(seed: int = 0) -> nn.Module:
    pv = pytorchvideo()
    torch.manual_seed(seed)
    model = pv.vision_transformers.create_multiscale_vision_transformers(
        spatial_size=32, temporal_size=4, head_num_classes=CLASSES, head_dropout_rate=0.5, **V1)
    _randomize(model, seed)
    return model.eval()


def _v1_cfg() -> dict:
    """The part of a PySlowFast run's cfg (MVIT_B_16x4_CONV.yaml at tiny size) that MViT reads."""
    return {
        "MVIT": {"SEP_POS_EMBED": True, "DEPTH": 3, "NUM_HEADS": 1, "EMBED_DIM": 8, "PATCH_KERNEL": "(3, 7, 7)",
                 "PATCH_STRIDE": "(2, 4, 4)", "PATCH_PADDING": "(1, 3, 3)", "MLP_RATIO": 4.0, "QKV_BIAS": True,
                 "NORM": "layernorm", "MODE": "conv", "CLS_EMBED_ON": True, "DIM_MUL": [[1, 2.0]],
                 "HEAD_MUL": [[1, 2.0]], "POOL_KVQ_KERNEL": [3, 3, 3], "POOL_KV_STRIDE_ADAPTIVE": [1, 4, 4],
                 "POOL_Q_STRIDE": [[1, 1, 2, 2]], "DROPOUT_RATE": 0.0, "REV": {"ENABLE": False}},
        "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 4, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 32,
                 "MEAN": [0.45, 0.45, 0.45], "STD": [0.225, 0.225, 0.225], "INPUT_CHANNEL_NUM": [3]},
        "MODEL": {"NUM_CLASSES": CLASSES, "ARCH": "mvit", "MODEL_NAME": "MViT", "DROPOUT_RATE": 0.5,
                  "HEAD_ACT": "softmax"},
    }


#: pytorchvideo -> PySlowFast names, written out here independently of falv's map.
_PV_TO_PYSLOWFAST = [
    (r"^patch_embed\.patch_model\.", "patch_embed.proj."),
    (r"^cls_positional_encoding\.", ""),
    (r"^norm_embed\.", "norm."),
    (r"^head\.proj\.", "head.projection."),
]


def _pyslowfast_state(pv_state: dict, fused_qkv: bool) -> dict:
    out = {}
    for key, value in pv_state.items():
        for pattern, repl in _PV_TO_PYSLOWFAST:
            key = re.sub(pattern, repl, key)
        out[key] = value
    if fused_qkv:  # PySlowFast's MultiScaleAttention without SEPARATE_QKV: one qkv linear, [q; k; v] rows
        for block in sorted({k.split(".attn.")[0] for k in out if ".attn.q." in k}):
            for kind in ("weight", "bias"):
                parts = [out.pop(f"{block}.attn.{n}.{kind}") for n in "qkv"]
                out[f"{block}.attn.qkv.{kind}"] = torch.cat(parts, 0)
    return out


def _write_v1(tmp_path, layout: str):
    """(path, oracle, cfg): a checkpoint exactly as the original code writes it."""
    oracle = _pv_mvit()
    if layout == "pytorchvideo":  # hub file: {"model_state": create_multiscale_vision_transformers(...).state_dict()}
        data = {"model_state": oracle.state_dict()}
    else:  # PySlowFast checkpoint.save_checkpoint (cfg.dump(): YAML text)
        for m in oracle.modules():  # PySlowFast builds the pooling norms with its eps 1e-6, pytorchvideo 1e-5
            if isinstance(m, nn.LayerNorm):
                m.eps = 1e-6
        cfg = _v1_cfg()
        cfg["MVIT"]["SEPARATE_QKV"] = layout == "pyslowfast_separate"
        data = {"epoch": 1, "model_state": _pyslowfast_state(oracle.state_dict(), layout == "pyslowfast_fused"),
                "optimizer_state": {}, "cfg": yaml.safe_dump(cfg)}
    path = tmp_path / f"{layout}.pyth"
    torch.save(data, path)
    return path, oracle


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a - b).abs().max().item()
    return diff, diff / b.abs().max().item()


PARITY: dict[str, float] = {}


@pytest.mark.parametrize("layout", ["pyslowfast_separate", "pyslowfast_fused", "pytorchvideo"])
def test_v1_logits_equal_pytorchvideo(tmp_path, layout):
    path, oracle = _write_v1(tmp_path, layout)
    model = load_model(path, cfg=yaml.safe_dump(_v1_cfg()) if layout == "pytorchvideo" else None)
    assert family_of(model) == "mvit" and isinstance(model, MViTForVideoClassification) and not model.training
    assert model.config.separate_qkv == (layout != "pyslowfast_fused")
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = oracle(x.permute(0, 2, 1, 3, 4))  # (B, C, T, H, W); pytorchvideo's head has no activation
        out = model(x)
    assert out.logits.shape == (2, CLASSES) and out.embeddings.shape == (2, 16)
    diff, rel = _rel(out.logits, ref)
    PARITY[f"v1 {layout}"] = rel
    assert rel <= 1e-4, (diff, rel)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), out.logits)


# -- v2 reference: a transcription of PySlowFast ---------------------------------------------------------
# TRANSCRIPTION (test reference only, not falv code) of facebookresearch/SlowFast
# slowfast/models/attention.py at commit adc55ca38a62a8bf3899a2d7c2dfbc9f9eee1ade (attention_pool,
# get_rel_pos, cal_rel_pos_spatial, cal_rel_pos_temporal, MultiScaleAttention and MultiScaleBlock, the
# pool_first=False / mode="conv" paths, without drop-path, dropout and layer scale) and of the MViT
# builder loop and forward of slowfast/models/video_model_builder.py at commit
# ad73dcfa43b56dfeec96c551128ec615a1080997. pytorchvideo 0.1.5 has no MViTv2 (relative positions,
# residual pooling, DIM_MUL_IN_ATT), so this transcription is the v2 reference.


def ref_attention_pool(tensor, pool, thw_shape, has_cls_embed=True, norm=None):
    if pool is None:
        return tensor, thw_shape
    tensor_dim = tensor.ndim
    if tensor_dim == 3:
        tensor = tensor.unsqueeze(1)
    if has_cls_embed:
        cls_tok, tensor = tensor[:, :, :1, :], tensor[:, :, 1:, :]
    B, N, L, C = tensor.shape
    T, H, W = thw_shape
    tensor = tensor.reshape(B * N, T, H, W, C).permute(0, 4, 1, 2, 3).contiguous()
    tensor = pool(tensor)
    thw_shape = [tensor.shape[2], tensor.shape[3], tensor.shape[4]]
    L_pooled = tensor.shape[2] * tensor.shape[3] * tensor.shape[4]
    tensor = tensor.reshape(B, N, C, L_pooled).transpose(2, 3)
    if has_cls_embed:
        tensor = torch.cat((cls_tok, tensor), dim=2)
    if norm is not None:
        tensor = norm(tensor)
    if tensor_dim == 3:
        tensor = tensor.squeeze(1)
    return tensor, thw_shape


def ref_get_rel_pos(rel_pos, d):
    ori_d = rel_pos.shape[0]
    if ori_d == d:
        return rel_pos
    new_pos_embed = F.interpolate(rel_pos.reshape(1, ori_d, -1).permute(0, 2, 1), size=d, mode="linear")
    return new_pos_embed.reshape(-1, d).permute(1, 0)


def ref_cal_rel_pos_spatial(attn, q, k, has_cls_embed, q_shape, k_shape, rel_pos_h, rel_pos_w):
    sp_idx = 1 if has_cls_embed else 0
    q_t, q_h, q_w = q_shape
    k_t, k_h, k_w = k_shape
    dh = int(2 * max(q_h, k_h) - 1)
    dw = int(2 * max(q_w, k_w) - 1)
    q_h_ratio = max(k_h / q_h, 1.0)
    k_h_ratio = max(q_h / k_h, 1.0)
    dist_h = torch.arange(q_h)[:, None] * q_h_ratio - torch.arange(k_h)[None, :] * k_h_ratio
    dist_h += (k_h - 1) * k_h_ratio
    q_w_ratio = max(k_w / q_w, 1.0)
    k_w_ratio = max(q_w / k_w, 1.0)
    dist_w = torch.arange(q_w)[:, None] * q_w_ratio - torch.arange(k_w)[None, :] * k_w_ratio
    dist_w += (k_w - 1) * k_w_ratio
    rel_pos_h = ref_get_rel_pos(rel_pos_h, dh)
    rel_pos_w = ref_get_rel_pos(rel_pos_w, dw)
    Rh = rel_pos_h[dist_h.long()]
    Rw = rel_pos_w[dist_w.long()]
    B, n_head, q_N, dim = q.shape
    r_q = q[:, :, sp_idx:].reshape(B, n_head, q_t, q_h, q_w, dim)
    rel_h_q = torch.einsum("bythwc,hkc->bythwk", r_q, Rh)
    rel_w_q = torch.einsum("bythwc,wkc->bythwk", r_q, Rw)
    attn[:, :, sp_idx:, sp_idx:] = (
        attn[:, :, sp_idx:, sp_idx:].view(B, -1, q_t, q_h, q_w, k_t, k_h, k_w)
        + rel_h_q[:, :, :, :, :, None, :, None]
        + rel_w_q[:, :, :, :, :, None, None, :]
    ).view(B, -1, q_t * q_h * q_w, k_t * k_h * k_w)
    return attn


def ref_cal_rel_pos_temporal(attn, q, has_cls_embed, q_shape, k_shape, rel_pos_t):
    sp_idx = 1 if has_cls_embed else 0
    q_t, q_h, q_w = q_shape
    k_t, k_h, k_w = k_shape
    dt = int(2 * max(q_t, k_t) - 1)
    rel_pos_t = ref_get_rel_pos(rel_pos_t, dt)
    q_t_ratio = max(k_t / q_t, 1.0)
    k_t_ratio = max(q_t / k_t, 1.0)
    dist_t = torch.arange(q_t)[:, None] * q_t_ratio - torch.arange(k_t)[None, :] * k_t_ratio
    dist_t += (k_t - 1) * k_t_ratio
    Rt = rel_pos_t[dist_t.long()]
    B, n_head, q_N, dim = q.shape
    r_q = q[:, :, sp_idx:].reshape(B, n_head, q_t, q_h, q_w, dim)
    r_q = r_q.permute(2, 0, 1, 3, 4, 5).reshape(q_t, B * n_head * q_h * q_w, dim)
    rel = torch.matmul(r_q, Rt.transpose(1, 2)).transpose(0, 1)
    rel = rel.view(B, n_head, q_h, q_w, q_t, k_t).permute(0, 1, 4, 2, 3, 5)
    attn[:, :, sp_idx:, sp_idx:] = (
        attn[:, :, sp_idx:, sp_idx:].view(B, -1, q_t, q_h, q_w, k_t, k_h, k_w)
        + rel[:, :, :, :, :, :, None, None]
    ).view(B, -1, q_t * q_h * q_w, k_t * k_h * k_w)
    return attn


class RefMultiScaleAttention(nn.Module):
    def __init__(self, dim, dim_out, input_size, num_heads, qkv_bias, kernel_q, kernel_kv, stride_q, stride_kv,
                 norm_layer, has_cls_embed, rel_pos_spatial, rel_pos_temporal, residual_pooling, separate_qkv):
        super().__init__()
        self.separate_qkv = separate_qkv
        self.num_heads = num_heads
        self.dim_out = dim_out
        head_dim = dim_out // num_heads
        self.scale = head_dim ** -0.5
        self.has_cls_embed = has_cls_embed
        padding_q = [int(q // 2) for q in kernel_q]
        padding_kv = [int(kv // 2) for kv in kernel_kv]
        if separate_qkv:
            self.q = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        if numpy.prod(kernel_q) == 1 and numpy.prod(stride_q) == 1:
            kernel_q = ()
        if numpy.prod(kernel_kv) == 1 and numpy.prod(stride_kv) == 1:
            kernel_kv = ()
        dim_conv = dim_out // num_heads
        self.pool_q = (nn.Conv3d(dim_conv, dim_conv, kernel_q, stride=stride_q, padding=padding_q,
                                 groups=dim_conv, bias=False) if len(kernel_q) > 0 else None)
        self.norm_q = norm_layer(dim_conv) if len(kernel_q) > 0 else None
        self.pool_k = (nn.Conv3d(dim_conv, dim_conv, kernel_kv, stride=stride_kv, padding=padding_kv,
                                 groups=dim_conv, bias=False) if len(kernel_kv) > 0 else None)
        self.norm_k = norm_layer(dim_conv) if len(kernel_kv) > 0 else None
        self.pool_v = (nn.Conv3d(dim_conv, dim_conv, kernel_kv, stride=stride_kv, padding=padding_kv,
                                 groups=dim_conv, bias=False) if len(kernel_kv) > 0 else None)
        self.norm_v = norm_layer(dim_conv) if len(kernel_kv) > 0 else None
        self.rel_pos_spatial = rel_pos_spatial
        self.rel_pos_temporal = rel_pos_temporal
        if self.rel_pos_spatial:
            assert input_size[1] == input_size[2]
            size = input_size[1]
            q_size = size // stride_q[1] if len(stride_q) > 0 else size
            kv_size = size // stride_kv[1] if len(stride_kv) > 0 else size
            rel_sp_dim = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rel_sp_dim, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rel_sp_dim, head_dim))
        if self.rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.residual_pooling = residual_pooling

    def forward(self, x, thw_shape):
        B, N, _ = x.shape
        if not self.separate_qkv:
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q = self.q(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
            k = self.k(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
            v = self.v(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, q_shape = ref_attention_pool(q, self.pool_q, thw_shape, has_cls_embed=self.has_cls_embed, norm=self.norm_q)
        k, k_shape = ref_attention_pool(k, self.pool_k, thw_shape, has_cls_embed=self.has_cls_embed, norm=self.norm_k)
        v, v_shape = ref_attention_pool(v, self.pool_v, thw_shape, has_cls_embed=self.has_cls_embed, norm=self.norm_v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos_spatial:
            attn = ref_cal_rel_pos_spatial(attn, q, k, self.has_cls_embed, q_shape, k_shape, self.rel_pos_h,
                                           self.rel_pos_w)
        if self.rel_pos_temporal:
            attn = ref_cal_rel_pos_temporal(attn, q, self.has_cls_embed, q_shape, k_shape, self.rel_pos_t)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        if self.residual_pooling:
            if self.has_cls_embed:
                x[:, :, 1:, :] += q[:, :, 1:, :]
            else:
                x = x + q
        x = x.transpose(1, 2).reshape(B, -1, self.dim_out)
        x = self.proj(x)
        return x, q_shape


class RefMlp(nn.Module):
    def __init__(self, in_features, hidden_features, out_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefMultiScaleBlock(nn.Module):
    def __init__(self, dim, dim_out, num_heads, input_size, mlp_ratio, qkv_bias, norm_layer, kernel_q, kernel_kv,
                 stride_q, stride_kv, has_cls_embed, rel_pos_spatial, rel_pos_temporal, residual_pooling,
                 dim_mul_in_att, separate_qkv):
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.norm1 = norm_layer(dim)
        self.dim_mul_in_att = dim_mul_in_att
        kernel_skip = [s + 1 if s > 1 else s for s in stride_q]
        stride_skip = stride_q
        padding_skip = [int(skip // 2) for skip in kernel_skip]
        att_dim = dim_out if dim_mul_in_att else dim
        self.attn = RefMultiScaleAttention(dim, att_dim, input_size, num_heads, qkv_bias, kernel_q, kernel_kv,
                                           stride_q, stride_kv, norm_layer, has_cls_embed, rel_pos_spatial,
                                           rel_pos_temporal, residual_pooling, separate_qkv)
        self.norm2 = norm_layer(att_dim)
        self.has_cls_embed = has_cls_embed
        self.mlp = RefMlp(att_dim, int(att_dim * mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        self.pool_skip = (nn.MaxPool3d(kernel_skip, stride_skip, padding_skip, ceil_mode=False)
                          if len(stride_skip) > 0 and numpy.prod(stride_skip) > 1 else None)

    def forward(self, x, thw_shape):
        x_norm = self.norm1(x)
        x_block, thw_shape_new = self.attn(x_norm, thw_shape)
        if self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        x_res, _ = ref_attention_pool(x, self.pool_skip, thw_shape, has_cls_embed=self.has_cls_embed)
        x = x_res + x_block
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + x_mlp, thw_shape_new


def ref_round_width(width, multiplier, min_width=1, divisor=1):
    if not multiplier:
        return width
    width *= multiplier
    min_width = min_width or divisor
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


class RefMViT(nn.Module):
    """PySlowFast ``MViT.__init__`` / ``forward`` (classification, not reversible), from a cfg dict."""

    def __init__(self, cfg):
        super().__init__()
        M, D = cfg["MVIT"], cfg["DATA"]
        spatial_size, temporal_size = D["TRAIN_CROP_SIZE"], D["NUM_FRAMES"]
        embed_dim, num_heads, depth = M["EMBED_DIM"], M["NUM_HEADS"], M["DEPTH"]
        self.cls_embed_on = M["CLS_EMBED_ON"]
        self.use_mean_pooling = M.get("USE_MEAN_POOLING", False)
        self.use_abs_pos = M["USE_ABS_POS"]
        self.sep_pos_embed = M.get("SEP_POS_EMBED", False)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, embed_dim, M["PATCH_KERNEL"], M["PATCH_STRIDE"], M["PATCH_PADDING"])
        self.patch_dims = [d // s for d, s in zip([temporal_size, spatial_size, spatial_size], M["PATCH_STRIDE"])]
        num_patches = math.prod(self.patch_dims)
        if self.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + int(self.cls_embed_on), embed_dim))
        dim_mul, head_mul = torch.ones(depth + 1), torch.ones(depth + 1)
        for i in range(len(M["DIM_MUL"])):
            dim_mul[M["DIM_MUL"][i][0]] = M["DIM_MUL"][i][1]
        for i in range(len(M["HEAD_MUL"])):
            head_mul[M["HEAD_MUL"][i][0]] = M["HEAD_MUL"][i][1]
        pool_q = [[] for i in range(depth)]
        pool_kv = [[] for i in range(depth)]
        stride_q = [[] for i in range(depth)]
        stride_kv = [[] for i in range(depth)]
        for i in range(len(M["POOL_Q_STRIDE"])):
            stride_q[M["POOL_Q_STRIDE"][i][0]] = M["POOL_Q_STRIDE"][i][1:]
            pool_q[M["POOL_Q_STRIDE"][i][0]] = M["POOL_KVQ_KERNEL"]
        _stride_kv = M["POOL_KV_STRIDE_ADAPTIVE"]
        pool_kv_stride = []
        for i in range(depth):
            if len(stride_q[i]) > 0:
                _stride_kv = [max(_stride_kv[d] // stride_q[i][d], 1) for d in range(len(_stride_kv))]
            pool_kv_stride.append([i] + _stride_kv)
        for i in range(len(pool_kv_stride)):
            stride_kv[pool_kv_stride[i][0]] = pool_kv_stride[i][1:]
            pool_kv[pool_kv_stride[i][0]] = M["POOL_KVQ_KERNEL"]
        input_size = self.patch_dims
        self.blocks = nn.ModuleList()
        for i in range(depth):
            num_heads = ref_round_width(num_heads, head_mul[i])
            if M["DIM_MUL_IN_ATT"]:
                dim_out = ref_round_width(embed_dim, dim_mul[i], divisor=ref_round_width(num_heads, head_mul[i]))
            else:
                dim_out = ref_round_width(embed_dim, dim_mul[i + 1],
                                          divisor=ref_round_width(num_heads, head_mul[i + 1]))
            self.blocks.append(RefMultiScaleBlock(
                dim=embed_dim, dim_out=dim_out, num_heads=num_heads, input_size=input_size,
                mlp_ratio=M["MLP_RATIO"], qkv_bias=M["QKV_BIAS"], norm_layer=norm_layer, kernel_q=pool_q[i],
                kernel_kv=pool_kv[i], stride_q=stride_q[i], stride_kv=stride_kv[i], has_cls_embed=self.cls_embed_on,
                rel_pos_spatial=M["REL_POS_SPATIAL"], rel_pos_temporal=M["REL_POS_TEMPORAL"],
                residual_pooling=M["RESIDUAL_POOLING"], dim_mul_in_att=M["DIM_MUL_IN_ATT"],
                separate_qkv=M.get("SEPARATE_QKV", False)))
            if len(stride_q[i]) > 0:
                input_size = [size // stride for size, stride in zip(input_size, stride_q[i])]
            embed_dim = dim_out
        self.norm = norm_layer(embed_dim)
        self.head = nn.Module()
        self.head.projection = nn.Linear(embed_dim, cfg["MODEL"]["NUM_CLASSES"])

    def forward(self, x):
        x = self.patch_embed.proj(x)
        T, H, W = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        B = x.shape[0]
        if self.cls_embed_on:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        if self.use_abs_pos:
            x = x + self.pos_embed
        thw = [T, H, W]
        for blk in self.blocks:
            x, thw = blk(x, thw)
        if self.use_mean_pooling:
            if self.cls_embed_on:
                x = x[:, 1:]
            x = self.norm(x.mean(1))
        elif self.cls_embed_on:
            x = self.norm(x)[:, 0]
        else:
            x = self.norm(x).mean(1)
        return self.head.projection(x)  # TransformerBasicHead: dropout (eval: none), projection; softmax left out

# -- end of the transcription ---------------------------------------------------------------------------


def _v2_cfg(variant: str) -> dict:
    """Tiny MViTv2 (MVITv2_S_16x4.yaml at tiny size): 2x8x8 tokens, every block's query pooled by a
    3x3x3 conv (stride 2x2 in block 1, the width 8 -> 16 and heads 1 -> 2 there, in the attention)."""
    cfg = _v1_cfg()
    cfg["MVIT"] = {"ZERO_DECAY_POS_CLS": False, "USE_ABS_POS": False, "REL_POS_SPATIAL": True,
                   "REL_POS_TEMPORAL": True, "DEPTH": 3, "NUM_HEADS": 1, "EMBED_DIM": 8,
                   "PATCH_KERNEL": [3, 7, 7], "PATCH_STRIDE": [2, 4, 4], "PATCH_PADDING": [1, 3, 3],
                   "MLP_RATIO": 4.0, "QKV_BIAS": True, "NORM": "layernorm", "MODE": "conv", "CLS_EMBED_ON": True,
                   "DIM_MUL": [[1, 2.0]], "HEAD_MUL": [[1, 2.0]], "POOL_KVQ_KERNEL": [3, 3, 3],
                   "POOL_KV_STRIDE_ADAPTIVE": [1, 4, 4], "POOL_Q_STRIDE": [[0, 1, 1, 1], [1, 1, 2, 2], [2, 1, 1, 1]],
                   "DROPOUT_RATE": 0.0, "DIM_MUL_IN_ATT": True, "RESIDUAL_POOLING": True}
    if variant == "mean_abs_pos":  # no CLS token, mean pooling, an absolute position table too
        cfg["MVIT"].update(CLS_EMBED_ON=False, USE_MEAN_POOLING=True, USE_ABS_POS=True)
    return cfg


V2_VARIANTS = ["cls_rel_pos", "mean_abs_pos"]


def _write_v2(tmp_path, variant: str):
    cfg = _v2_cfg(variant)
    torch.manual_seed(0)
    reference = RefMViT(cfg)
    _randomize(reference, seed=1)  # random, non-zero relative tables
    path = tmp_path / f"v2_{variant}.pyth"
    torch.save({"epoch": 1, "model_state": reference.state_dict(), "optimizer_state": {},
                "cfg": yaml.safe_dump(cfg)}, path)
    return path, reference.eval()


@pytest.mark.parametrize("variant", V2_VARIANTS)
def test_v2_logits_equal_the_pyslowfast_transcription(tmp_path, variant):
    path, reference = _write_v2(tmp_path, variant)
    model = load_model(path)
    assert family_of(model) == "mvit" and model.config.rel_pos_spatial and model.config.dim_mul_in_att
    assert model.blocks[1].attn.rel_pos_h.abs().sum() > 0
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = reference(x.permute(0, 2, 1, 3, 4))
        out = model(x)
    assert out.logits.shape == (2, CLASSES) and out.embeddings.shape == (2, 16)
    diff, rel = _rel(out.logits, ref)
    PARITY[f"v2 {variant}"] = rel
    assert rel <= 1e-4, (diff, rel)


def test_config_comes_from_the_cfg(tmp_path):
    path, _ = _write_v2(tmp_path, "cls_rel_pos")
    cfg = load_model(path).config
    assert (cfg.num_frames, cfg.image_size, cfg.num_labels, cfg.embed_dim, cfg.depth) == (4, 32, CLASSES, 8, 3)
    assert cfg.sampling.mode == "dense" and cfg.sampling.frame_stride == 4 and cfg.sampling.fps == 30.0
    assert (cfg.image_mean, cfg.image_std) == ((0.45,) * 3, (0.225,) * 3)
    assert cfg.hidden_size == 16 and not cfg.use_abs_pos and cfg.residual_pooling
    path, _ = _write_v1(tmp_path, "pyslowfast_separate")  # "(3, 7, 7)" strings, as in the published YAML
    v1 = load_model(path).config
    assert v1.patch_kernel == (3, 7, 7) and v1.patch_padding == (1, 3, 3) and v1.sep_pos_embed


def test_pytorchvideo_hub_files_without_cfg_are_mvitv1_b():
    with torch.device("meta"):
        full = MViTForVideoClassification(mvit_preset("mvitv1_b_16x4", num_labels=400, num_frames=32))
    got = fm._hub_defaults(full.state_dict(), fm.Path("MVIT_B_32x3.pyth"))
    assert got["num_frames"] == 32 and got["sampling"].frame_stride == 3 and got["image_size"] == 224
    assert got["num_labels"] == 400 and got["sep_pos_embed"] and got["pool_norm_eps"] == 1e-5


@pytest.mark.parametrize("layout", ["pyslowfast_separate", "pytorchvideo"])
@pytest.mark.parametrize("damage,named", [("drop", "missing"), ("add", "unexpected"), ("shape", "shape mismatch")])
def test_strict_key_errors_name_every_key(tmp_path, layout, damage, named):
    path, _ = _write_v1(tmp_path, layout)
    data = torch.load(path, weights_only=True)
    state = data["model_state"]
    victim = "blocks.1.attn.norm_q.bias"
    if damage == "drop":
        del state[victim]
    elif damage == "add":
        victim = "blocks.7.attn.extra"
        state[victim] = torch.zeros(1)
    else:
        state[victim] = torch.zeros(3)
    torch.save(data, path)
    cfg = yaml.safe_dump(_v1_cfg()) if layout == "pytorchvideo" else None
    with pytest.raises(CheckpointError, match=rf"{named} \[[^\]]*{re.escape(victim)}"):
        load_model(path, cfg=cfg)


def test_v2_rel_tables_are_checked(tmp_path):
    path, _ = _write_v2(tmp_path, "cls_rel_pos")
    data = torch.load(path, weights_only=True)
    data["model_state"]["blocks.1.attn.rel_pos_t"] = torch.zeros(5, 8)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch \[.*blocks.1.attn.rel_pos_t \(5, 8\) != \(3, 8\)"):
        load_model(path)


def test_unsupported_cfgs_are_refused(tmp_path):
    path, _ = _write_v2(tmp_path, "cls_rel_pos")
    for key, value, message in [("REV", {"ENABLE": True}, "reversible"), ("POOL_FIRST", True, "POOL_FIRST"),
                                ("MODE", "conv_unshared", "conv_unshared")]:
        cfg = _v2_cfg("cls_rel_pos")
        cfg["MVIT"][key] = value
        with pytest.raises(CheckpointError, match=message):
            load_model(path, cfg=cfg)
    data = torch.load(path, weights_only=True)
    del data["cfg"]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="without its cfg"):
        load_model(path)


def test_labels_give_a_fresh_head(tmp_path):
    path, _ = _write_v2(tmp_path, "cls_rel_pos")
    original = load_model(path)
    relabelled = load_model(path, labels=["x", "y", "z"])
    assert relabelled.config.labels == ["x", "y", "z"] and relabelled.config.sampling == original.config.sampling
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert relabelled(x).logits.shape == (1, 3)
        torch.testing.assert_close(relabelled.forward_features(x), original.forward_features(x))


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_save_pretrained_round_trip(tmp_path, kind):
    path, _ = _write_v1(tmp_path, "pyslowfast_fused") if kind == "v1" else _write_v2(tmp_path, "mean_abs_pos")
    model = load_model(path)
    model.save_pretrained(tmp_path / "falv")
    assert {p.name for p in (tmp_path / "falv").iterdir()} == {"config.json", "model.safetensors",
                                                               "preprocessor_config.json"}
    assert json.loads((tmp_path / "falv" / "config.json").read_text())["model_type"] == "falv_mvit"
    loaded = load_model(tmp_path / "falv")
    assert family_of(loaded) == "mvit" and loaded.config == model.config and not loaded.training
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert load_model(tmp_path / "falv", labels=["a", "b"])(x).logits.shape == (1, 2)
    with pytest.raises(CheckpointError, match="falv directory"):
        load_model(tmp_path / "falv", cfg=_v2_cfg("cls_rel_pos"))


def test_other_files_are_refused(tmp_path):
    (tmp_path / "text.pyth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a PyTorch checkpoint"):
        load_model(tmp_path / "text.pyth")
    others = {
        # TimeSformer: cls_token, pos_embed, a 2D patch projection, blocks.N.attn.qkv
        "timesformer": {"model.cls_token": torch.zeros(1, 1, 8), "model.pos_embed": torch.zeros(1, 5, 8),
                        "model.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
                        "model.blocks.0.attn.qkv.weight": torch.zeros(24, 8)},
        # VideoMAE (original layout): a 3D tubelet projection, no CLS token, no pooling
        "videomae": {"patch_embed.proj.weight": torch.zeros(8, 3, 2, 16, 16), "blocks.0.attn.qkv.weight":
                     torch.zeros(24, 8), "blocks.0.attn.q_bias": torch.zeros(8)},
        "x3d": {"s1.pathway0_stem.conv_xy.weight": torch.zeros(8, 3, 1, 3, 3)},
        "slowfast": {"s1.pathway0_stem.conv.weight": torch.zeros(8, 3, 1, 7, 7)},
    }
    for name, state in others.items():
        torch.save({"model_state": state, "cfg": "MODEL:\n  ARCH: x3d\n"}, tmp_path / f"{name}.pyth")
        assert not fm._sniff(read_checkpoint(tmp_path / f"{name}.pyth")), name
    with pytest.raises(CheckpointError, match="not an MViT checkpoint"):
        fm.load_mvit_checkpoint(read_checkpoint(tmp_path / "x3d.pyth"), tmp_path / "x3d.pyth")
    for layout in ("pyslowfast_separate", "pytorchvideo"):  # and TimeSformer's sniffer leaves MViT files alone
        path, _ = _write_v1(tmp_path, layout)
        assert fm._sniff(read_checkpoint(path)) and not _sniff_timesformer(read_checkpoint(path))
    path, _ = _write_v2(tmp_path, "mean_abs_pos")
    assert fm._sniff(read_checkpoint(path)) and not _sniff_timesformer(read_checkpoint(path))


def test_meta_device_autocast_other_sizes_and_batch_of_one():
    cfg = MViTConfig(num_frames=4, image_size=32, embed_dim=8, depth=3, dim_mul=((1, 2.0),), head_mul=((1, 2.0),),
                     pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 1, 1)), pool_kv_stride_adaptive=(1, 4, 4),
                     num_labels=3)
    assert count_flops(cfg) > 0
    model = MViTForVideoClassification(cfg).eval()
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.logits.shape == (1, 3) and torch.isfinite(out.logits.float()).all()
    with torch.no_grad():  # another clip size: relative tables resized as PySlowFast's get_rel_pos
        assert model(torch.randn(1, 8, 3, 48, 48)).logits.shape == (1, 3)
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model(torch.randn(4, 3, 32, 32))
    model.train()
    out = model(torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert model.head.projection.weight.grad is not None and model.blocks[1].attn.rel_pos_h.grad is not None


def test_presets_match_pyslowfast_model_zoo():
    """Parameters with 400 classes (PySlowFast MODEL_ZOO / the papers: MViTv2-S 34.5 M, MViTv1-B 36.6 M)
    and GFLOPs per view (64 and 70.5, fvcore: a multiply-add is one FLOP; falv's counter counts two)."""
    zoo = {"mvitv2_s_16x4": (34.5e6, 64.0), "mvitv1_b_16x4": (36.6e6, 70.5)}
    for name, (params, gflops) in zoo.items():
        cfg = mvit_preset(name, num_labels=400)
        assert abs(fm.count_parameters(cfg) / params - 1) < 0.002, name
        assert abs(count_flops(cfg) / 2e9 / gflops - 1) < 0.01, name
        assert cfg.sampling.frame_stride == 4 and cfg.num_frames == 16 and cfg.image_size == 224
    assert fm.count_parameters(mvit_preset("mvitv2_s_16x4", num_labels=400)) == 34537744
    assert fm.count_parameters(mvit_preset("mvitv1_b_16x4", num_labels=400)) == 36610672
    assert [s["dim_out"] for s in fm.mvit_block_settings(mvit_preset("mvitv2_s_16x4"))]== [96, 192, 192] + [384] * 11 + [768] * 2
    with pytest.raises(ConfigError, match="valid presets"):
        mvit_preset("mvitv2_l")


@pytest.mark.parametrize("bad,message", [
    (dict(patch_stride=(2, 4)), "patch_stride"),
    (dict(dim_mul=((99, 2.0),)), "dim_mul names layer 99"),
    (dict(pool_q_stride=((1, 2, 2),)), "pool_q_stride entries"),
    (dict(mode="conv_unshared"), "mode"),
    (dict(embed_dim=10, num_heads=4, dim_mul_in_att=False), "not divisible"),
    (dict(model_type="falv_x3d"), "model_type"),
    (dict(num_frames=0), "num_frames"),
    (dict(pool_kv_stride=((0, 1, 2, 2),)), "not both"),
])
def test_invalid_configs_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        MViTConfig(**bad)


def test_config_json_round_trip():
    cfg = mvit_preset("mvitv1_b_16x4", id2label={0: "a"})
    assert MViTConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    assert math.isclose(cfg.clip_seconds, 16 * 4 / 30)


def test_report_parity():
    """Prints the parity measured above (run with -s)."""
    print({k: f"{v:.2e}" for k, v in PARITY.items()})
