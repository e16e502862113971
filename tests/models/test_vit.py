import dataclasses

import pytest
import torch
import torch.nn.functional as F

from foundry import rng, tree
from foundry.models import vit

CFG = vit.preset("vit-debug")


@pytest.fixture(scope="module")
def params():
    return vit.init(rng.key(0), CFG)


def test_shapes_for_single_and_multi_image_input(params):
    images = rng.uniform(rng.key(1), (3, 2, 3, 32, 32), low=-1.0, high=1.0)
    many = vit.apply(params, CFG, images)
    assert many.shape == (3, 2, CFG.num_patches, CFG.d_model) == (3, 2, 16, 32)
    one = vit.apply(params, CFG, images[:, 1])
    assert one.shape == (3, 16, 32)
    torch.testing.assert_close(many[:, 1], one)  # images of a sample do not interact
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 32, 32\)"):
        vit.apply(params, CFG, images[..., :16, :16])


def test_final_norm_applied(params):
    out = vit.apply(params, CFG, rng.uniform(rng.key(2), (2, 3, 32, 32), low=-1.0, high=1.0))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)  # LayerNorm, unit scale


def test_patch_embedding_is_a_conv2d(params):
    images = rng.uniform(rng.key(3), (2, 3, 32, 32), low=-1.0, high=1.0)
    p, d = CFG.patch_size, CFG.d_model
    conv_w = params["patch"]["w"].reshape(d, 3, p, p)  # the documented Conv2d layout
    conv = F.conv2d(images, conv_w, params["patch"]["b"], stride=p).flatten(2).transpose(1, 2)  # (B, N, D)
    ours = vit.patchify(CFG, images) @ params["patch"]["w"].T + params["patch"]["b"]
    torch.testing.assert_close(ours, conv, atol=1e-5, rtol=1e-5)
    # a side that is not a multiple of p drops the remainder, like the stride-p convolution
    odd = dataclasses.replace(CFG, image_size=37)
    big = rng.uniform(rng.key(4), (1, 3, 37, 37))
    assert vit.patchify(odd, big).shape == (1, 16, 3 * p * p)


def test_sincos_vs_learned():
    cfg = dataclasses.replace(CFG, pos_emb="sincos")
    params = vit.init(rng.key(0), cfg)
    assert "pos_emb" not in params and "pos_emb" in vit.init(rng.key(0), CFG)
    table = vit.sincos_2d(4, 32)
    assert table.shape == (16, 32)
    assert torch.unique(table, dim=0).shape[0] == 16  # every grid position is distinct
    torch.testing.assert_close(table[5, :16], table[6, :16])  # same row (1), columns 1 and 2
    torch.testing.assert_close(table[1, 16:], table[5, 16:])  # same column (1), rows 0 and 1
    out = vit.apply(params, cfg, rng.uniform(rng.key(5), (2, 3, 32, 32), low=-1.0, high=1.0))
    assert out.shape == (2, 16, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        vit.init(rng.key(0), dataclasses.replace(cfg, d_model=30, n_heads=3))


def test_preset_sizes():
    counts = {name: tree.count(vit.init_shapes(vit.preset(name))) for name in ("vit-b16", "siglip-so400m")}
    assert 85e6 < counts["vit-b16"] < 87e6  # ViT-B/16 without the class token and head: 85.8M
    assert 410e6 < counts["siglip-so400m"] < 430e6  # SigLIP so400m vision tower: ~428M
    assert vit.preset("siglip-so400m").num_patches == 27 * 27
    assert vit.preset("vit-tiny").num_patches == 256
    shapes = tree.flatten(vit.init_shapes(vit.preset("vit-tiny")))
    assert shapes["blocks.0.attn.wq.b"].shape == (64,) and shapes["blocks.0.attn.wo.b"].shape == (64,)
    with pytest.raises(KeyError, match="unknown ViT preset"):
        vit.preset("vit-h14")


def test_flops_per_image_counts_matmuls():
    cfg = vit.preset("vit-b16")
    n = cfg.num_patches
    block = 4 * 768**2 + 2 * 768 * 3072
    expected = n * (6 * (3 * 16 * 16 * 768 + 12 * block) + 12 * 12 * 768 * n)
    assert vit.flops_per_image(cfg) == pytest.approx(expected)


def test_gradients_reach_every_parameter(params):
    images = rng.uniform(rng.key(6), (2, 3, 32, 32), low=-1.0, high=1.0)
    grads = torch.func.grad(lambda p: vit.apply(p, CFG, images).pow(2).mean())(params)
    for path, g in tree.items(grads):
        assert g.abs().sum() > 0, path
