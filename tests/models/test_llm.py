import dataclasses
import math

import pytest
import torch

from foundry import rng, tree
from foundry.models import llm
from foundry.train.grads import value_and_grad

CFG = llm.preset("debug", vocab_size=97)


@pytest.fixture(scope="module")
def params():
    return llm.init(rng.key(0), CFG)


def test_preset_sizes_match_their_names():
    # Reference vocabulary 50432, untied head: the names are parameter counts.
    counts = {name: tree.count(llm.init_shapes(llm.preset(name, vocab_size=50432))) for name in ("11m", "100m")}
    assert 10e6 < counts["11m"] < 12e6
    assert 85e6 < counts["100m"] < 115e6
    assert tree.count(llm.init(rng.key(0), llm.preset("debug", vocab_size=512))) < 500_000
    with pytest.raises(KeyError, match="unknown LLM preset '12m'"):
        llm.preset("12m")


def test_unset_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size is unset"):
        llm.init(rng.key(0), llm.preset("debug"))


def test_shapes_hidden_states_and_init_loss(params):
    tokens = rng.randint(rng.key(1), (2, 12), 0, CFG.vocab_size)
    out = llm.apply(params, CFG, tokens, hidden_layers=(-1, 0))
    assert out["logits"].shape == (2, 12, CFG.vocab_size)
    assert [h.shape for h in out["hidden"]] == [(2, 12, CFG.d_model)] * 2
    loss, aux = llm.loss(params, CFG, {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)})
    assert abs(loss.item() - math.log(CFG.vocab_size)) < 0.1  # near-uniform predictions at init
    assert aux["weight"].item() == 2 * 11


def test_causality_and_prefix_lm(params):
    a = rng.randint(rng.key(2), (1, 10), 0, CFG.vocab_size)
    b = a.clone()
    b[0, 7:] = (b[0, 7:] + 1) % CFG.vocab_size
    la, lb = llm.apply(params, CFG, a)["logits"], llm.apply(params, CFG, b)["logits"]
    torch.testing.assert_close(la[:, :7], lb[:, :7])  # the future does not leak
    prefix = torch.tensor([5])
    pa = llm.apply(params, CFG, a, prefix_len=prefix)["logits"]
    assert not torch.allclose(pa[:, :4], la[:, :4])  # prefix positions see the whole prefix
    c = a.clone()
    c[0, 3] = (c[0, 3] + 1) % CFG.vocab_size
    pc = llm.apply(params, CFG, c, prefix_len=prefix)["logits"]
    assert not torch.allclose(pc[:, 2], pa[:, 2])  # ...including later prefix tokens


def test_loss_ignores_masked_targets(params):
    tokens = rng.randint(rng.key(3), (2, 9), 0, CFG.vocab_size)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 6:] = False
    other = tokens.clone()
    other[:, 6:] = 0
    l1, w1 = llm.loss(params, CFG, {"tokens": tokens, "mask": mask})
    l2, _ = llm.loss(params, CFG, {"tokens": other, "mask": mask})
    torch.testing.assert_close(l1, l2)
    assert w1["weight"].item() == 2 * 5


def test_tied_head_has_no_head_param():
    cfg = dataclasses.replace(CFG, tie_embeddings=True, norm="layer")
    p = llm.init(rng.key(0), cfg)
    assert "head" not in p and "bias" in p["final_norm"]
    assert llm.apply(p, cfg, torch.zeros(1, 3, dtype=torch.long))["logits"].shape == (1, 3, CFG.vocab_size)


def test_remat_gives_the_same_gradients(params):
    tokens = rng.randint(rng.key(4), (2, 8), 0, CFG.vocab_size)
    batch = {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}
    plain = value_and_grad(lambda p, b: llm.loss(p, CFG, b), backend="autograd")
    remat = value_and_grad(lambda p, b: llm.loss(p, CFG, b, remat=True), backend="autograd")
    (l1, _), g1 = plain(params, batch)
    (l2, _), g2 = remat(params, batch)
    torch.testing.assert_close(l1, l2)
    assert tree.allclose(g1, g2, atol=1e-7)


def test_flops_per_token_counts_matmuls():
    cfg = llm.preset("11m", vocab_size=50432)
    n = llm.matmul_params(cfg)
    assert n == tree.count(llm.init_shapes(cfg)) - 50432 * 96 - (2 * 8 + 1) * 96  # minus lookup and norms
    assert llm.flops_per_token(cfg, 512) == 6 * n + 12 * 8 * 4 * 24 * 512


@pytest.mark.parametrize("chunk_elems", [97, 97 * 5, 1 << 23])
def test_chunked_loss_equals_full_logits_loss(params, chunk_elems):
    tokens = rng.randint(rng.key(5), (3, 11), 0, CFG.vocab_size)
    weights = rng.bernoulli(rng.key(6), 0.7, (3, 10))
    x = llm.forward(params, CFG, llm.embed(params, tokens[:, :-1]))["x"]
    full, n_full = llm.token_loss(llm.logits(params, CFG, x), tokens[:, 1:], weights)
    chunked, n_chunked = llm.chunked_token_loss(params, CFG, x, tokens[:, 1:], weights, chunk_elems=chunk_elems)
    torch.testing.assert_close(chunked, full)
    assert n_full == n_chunked
