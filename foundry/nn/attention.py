"""Multi-head attention with grouped-query heads (Ainslie et al., 2023), optional qk-norm (Qwen3), RoPE and
an optional KV cache, on `torch.nn.functional.scaled_dot_product_attention`.

Params: `{"wq", "wk", "wv", "wo": linear params, "q_norm"?, "k_norm"?: RMSNorm over head_dim}`. `bias` gives
q, k, v biases (Qwen2), `out_bias` an output bias (Llama's `attention_bias` sets both); `linear.apply` adds a
bias when the params have one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foundry import rng
from foundry.nn import linear, norm, rope


def init(
    key: torch.Tensor,
    d_model: int,
    *,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    qk_norm: bool = False,
    bias: bool = False,
    out_bias: bool = False,
    std: float,
    out_std: float,
) -> dict:
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    kq, kk, kv, ko = rng.split(key, 4)
    params = {
        "wq": linear.init(kq, d_model, n_heads * head_dim, bias=bias, std=std),
        "wk": linear.init(kk, d_model, n_kv_heads * head_dim, bias=bias, std=std),
        "wv": linear.init(kv, d_model, n_kv_heads * head_dim, bias=bias, std=std),
        "wo": linear.init(ko, n_heads * head_dim, d_model, bias=out_bias, std=out_std),
    }
    if qk_norm:
        params["q_norm"] = norm.init("rms", head_dim)
        params["k_norm"] = norm.init("rms", head_dim)
    return params


def empty_cache(batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype, device=None) -> dict:
    """A zeroed KV cache for one layer: `{"k", "v"}` of shape (B, n_kv_heads, max_len, head_dim)."""
    shape = (batch, n_kv_heads, max_len, head_dim)
    return {
        "k": torch.zeros(shape, dtype=dtype, device=device),
        "v": torch.zeros(shape, dtype=dtype, device=device),
    }


def apply(
    params: dict,
    x: torch.Tensor,  # (B, T, D)
    *,
    n_heads: int,
    n_kv_heads: int,
    cos: torch.Tensor,  # (B, T, Dh) or (T, Dh)
    sin: torch.Tensor,
    mask: torch.Tensor | None,  # (B|1, 1, T, S) bool, or None for plain causal/full attention
    causal: bool = True,
    norm_eps: float = 1e-6,
    cache: dict | None = None,
    cache_index: torch.Tensor | None = None,  # (T,) int: cache slots the new keys/values are written to
) -> tuple[torch.Tensor, dict | None]:
    """Returns (output (B, T, D), updated cache or None). Nothing is modified in place."""
    b, t, _ = x.shape
    head_dim = cos.shape[-1]
    q = linear.apply(params["wq"], x).view(b, t, n_heads, head_dim).transpose(1, 2)
    k = linear.apply(params["wk"], x).view(b, t, n_kv_heads, head_dim).transpose(1, 2)
    v = linear.apply(params["wv"], x).view(b, t, n_kv_heads, head_dim).transpose(1, 2)
    if "q_norm" in params:
        q = norm.apply(params["q_norm"], q, eps=norm_eps)
        k = norm.apply(params["k_norm"], k, eps=norm_eps)
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    new_cache = None
    if cache is not None:
        if cache_index is None:
            raise ValueError("attention with a cache needs cache_index (the slots of the new tokens)")
        k = cache["k"].index_copy(2, cache_index, k.to(cache["k"].dtype))
        v = cache["v"].index_copy(2, cache_index, v.to(cache["v"].dtype))
        new_cache = {"k": k, "v": v}
        k, v = k.to(q.dtype), v.to(q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=n_kv_heads != n_heads
    )  # (B, H, T, Dh)
    out = out.transpose(1, 2).reshape(b, t, n_heads * head_dim)
    return linear.apply(params["wo"], out), new_cache
