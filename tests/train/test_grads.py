import pytest
import torch

from foundry import rng, tree
from foundry.models import llm
from foundry.train.grads import value_and_grad

CFG = llm.preset("debug", vocab_size=53)


def test_func_and_autograd_backends_agree():
    params = llm.init(rng.key(0), CFG)
    tokens = rng.randint(rng.key(1), (3, 10), 0, CFG.vocab_size)
    batch = {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}
    fn = lambda p, b: llm.loss(p, CFG, b)
    (v1, a1), g1 = value_and_grad(fn, backend="func")(params, batch)
    (v2, a2), g2 = value_and_grad(fn, backend="autograd")(params, batch)
    torch.testing.assert_close(v1, v2)
    assert a1["weight"] == a2["weight"]
    assert tree.allclose(g1, g2, rtol=1e-5, atol=1e-7), tree.first_difference(g1, g2)
    assert not any(g.requires_grad for g in tree.leaves(g2))  # returned detached
    assert all(not p.requires_grad for p in tree.leaves(params))  # inputs untouched


def test_unused_leaves_get_zero_gradients_and_unknown_backend_errors():
    params = {"used": torch.ones(3), "unused": torch.ones(2)}
    fn = lambda p: ((p["used"] ** 2).sum(), {})
    for backend in ("func", "autograd"):
        (_, _), g = value_and_grad(fn, backend=backend)(params)
        torch.testing.assert_close(g["used"], 2 * torch.ones(3))
        torch.testing.assert_close(g["unused"], torch.zeros(2))
    with pytest.raises(ValueError, match="unknown gradient backend 'jax'"):
        value_and_grad(fn, backend="jax")
