import math

import pytest
import torch
import torch.nn.functional as F

from foundry import rng
from foundry.nn import attention, linear, masks, mlp, norm, rope


def test_linear_shapes_and_bias():
    p = linear.init(rng.key(0), 5, 7, bias=True)
    assert p["w"].shape == (7, 5) and p["b"].shape == (7,)
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(linear.apply(p, x), x @ p["w"].T + p["b"])


def test_norms_match_torch():
    x = torch.randn(4, 16)
    p = norm.init("rms", 16)
    p["scale"] = torch.randn(16)
    torch.testing.assert_close(norm.apply(p, x, eps=1e-6), F.rms_norm(x, (16,), p["scale"], 1e-6))
    q = norm.init("layer", 16)
    q["bias"] = torch.randn(16)
    torch.testing.assert_close(norm.apply(q, x, eps=1e-5), F.layer_norm(x, (16,), q["scale"], q["bias"], 1e-5))
    with pytest.raises(ValueError, match="unknown norm kind"):
        norm.init("batch", 4)


def test_rope_scores_depend_only_on_relative_position():
    inv = rope.inv_frequencies(8, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        cq, sq = rope.cos_sin(torch.tensor([m]), inv)
        ck, sk = rope.cos_sin(torch.tensor([n]), inv)
        return (rope.apply(q, cq, sq) * rope.apply(k, ck, sk)).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    c, s = rope.cos_sin(torch.arange(6), inv)
    x = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(rope.apply(x, c, s).norm(dim=-1), x.norm(dim=-1))  # a rotation
    with pytest.raises(ValueError, match="even head_dim"):
        rope.inv_frequencies(7, 10000.0)


def test_mask_layouts():
    causal = masks.attention_mask(torch.arange(4), 4)[0, 0]
    assert torch.equal(causal, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    prefix = masks.attention_mask(torch.arange(4), 4, prefix_len=torch.tensor([2]))[0, 0]
    assert prefix[0, 1] and not prefix[1, 2] and prefix[3, 2]  # bidirectional prefix, causal suffix
    valid = torch.tensor([[False, True, True, True]])
    padded = masks.attention_mask(torch.arange(4), 4, key_valid=valid)[0, 0]
    assert not padded[2, 0] and padded[0, 0]  # a padded query still sees itself: no NaN rows
    full = masks.attention_mask(torch.arange(3), 3, causal=False)[0, 0]
    assert full.all()


def reference_attention(p, x, n_heads, n_kv, cos, sin, allowed):
    b, t, _ = x.shape
    dh = cos.shape[-1]
    q = (x @ p["wq"]["w"].T).view(b, t, n_heads, dh).transpose(1, 2)
    k = (x @ p["wk"]["w"].T).view(b, t, n_kv, dh).transpose(1, 2)
    v = (x @ p["wv"]["w"].T).view(b, t, n_kv, dh).transpose(1, 2)
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    k = k.repeat_interleave(n_heads // n_kv, dim=1)
    v = v.repeat_interleave(n_heads // n_kv, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    s = s.masked_fill(~allowed, float("-inf"))
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
    return o @ p["wo"]["w"].T


@pytest.mark.parametrize("layout", ["causal", "prefix", "padding"])
def test_gqa_attention_matches_reference(layout):
    d, h, kv, dh, t = 32, 4, 2, 8, 6
    p = attention.init(rng.key(1), d, n_heads=h, n_kv_heads=kv, head_dim=dh, std=0.2, out_std=0.2)
    x = torch.randn(2, t, d)
    cos, sin = rope.cos_sin(torch.arange(t), rope.inv_frequencies(dh, 10000.0))
    kwargs = {}
    if layout == "prefix":
        kwargs["prefix_len"] = torch.tensor([3, 1])
    if layout == "padding":
        kwargs["key_valid"] = torch.tensor([[True] * t, [False, False] + [True] * (t - 2)])
    mask = masks.attention_mask(torch.arange(t), t, **kwargs)
    out, _ = attention.apply(p, x, n_heads=h, n_kv_heads=kv, cos=cos, sin=sin, mask=mask)
    ref = reference_attention(p, x, h, kv, cos, sin, mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if layout == "causal":
        plain, _ = attention.apply(p, x, n_heads=h, n_kv_heads=kv, cos=cos, sin=sin, mask=None)
        torch.testing.assert_close(plain, ref, atol=1e-5, rtol=1e-5)


def test_attention_rejects_bad_head_grouping_and_missing_cache_index():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        attention.init(rng.key(0), 16, n_heads=3, n_kv_heads=2, head_dim=4, std=0.1, out_std=0.1)
    p = attention.init(rng.key(0), 16, n_heads=2, n_kv_heads=2, head_dim=8, std=0.1, out_std=0.1)
    cos, sin = rope.cos_sin(torch.arange(3), rope.inv_frequencies(8, 1e4))
    with pytest.raises(ValueError, match="cache_index"):
        attention.apply(
            p,
            torch.randn(1, 3, 16),
            n_heads=2,
            n_kv_heads=2,
            cos=cos,
            sin=sin,
            mask=None,
            cache=attention.empty_cache(1, 2, 8, 8, torch.float32),
        )


def test_swiglu_and_gelu_mlp():
    p = mlp.swiglu_init(rng.key(0), 8, 16, std=0.1, out_std=0.1)
    x = torch.randn(3, 8)
    ref = (F.silu(x @ p["gate"]["w"].T) * (x @ p["up"]["w"].T)) @ p["down"]["w"].T
    torch.testing.assert_close(mlp.swiglu_apply(p, x), ref)
    g = mlp.gelu_init(rng.key(1), 8, 16, std=0.1, out_std=0.1)
    assert mlp.gelu_apply(g, x).shape == (3, 8)
