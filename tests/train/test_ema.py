"""Tests of foundry.train.ema: decay schedule, update math, purity.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_ema.py -q
"""

from __future__ import annotations

import itertools

import pytest
import torch

from foundry import tree
from foundry.train import ema
from foundry.train.config import EMAConfig


def make_params() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "blocks": [{"b": torch.randn(4, generator=g)}]}


def test_decay_warmup_formula():
    cfg = EMAConfig(enabled=True, decay=0.99, warmup=True)
    assert ema.decay_at(cfg, 0) == pytest.approx(0.1)  # 1 / 10
    assert ema.decay_at(cfg, 10) == pytest.approx(11 / 20)
    assert ema.decay_at(cfg, 890) == pytest.approx(891 / 900)  # 0.99 exactly: the cap takes over here
    assert ema.decay_at(cfg, 10_000) == 0.99
    values = [ema.decay_at(cfg, s) for s in range(2000)]
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_fixed_decay():
    cfg = EMAConfig(enabled=True, decay=0.999, warmup=False)
    assert ema.decay_at(cfg, 0) == 0.999
    assert ema.decay_at(cfg, 10**6) == 0.999


def test_decay_errors():
    with pytest.raises(ValueError, match=r"EMAConfig\.decay"):
        ema.decay_at(EMAConfig(decay=1.5), 0)
    with pytest.raises(ValueError, match="step"):
        ema.decay_at(EMAConfig(), -1)


def test_init_is_fp32_copy():
    params = tree.cast(make_params(), torch.bfloat16)
    avg = ema.init(params)
    assert all(x.dtype == torch.float32 for x in tree.leaves(avg))
    assert tree.allclose(avg, tree.cast(params, torch.float32))
    for a, p in zip(tree.leaves(avg), tree.leaves(params)):
        assert a.data_ptr() != p.data_ptr()


def test_update_math_and_purity():
    params = make_params()
    avg = tree.map(lambda p: p + 1.0, params)
    avg_before, params_before = tree.map(torch.clone, avg), tree.map(torch.clone, params)
    new = ema.update(avg, params, torch.tensor(0.9))
    expected = tree.map(lambda e, p: 0.9 * e + 0.1 * p, avg, params)  # = params + 0.9
    assert tree.allclose(new, expected, rtol=0, atol=1e-6)
    assert tree.allclose(new, tree.map(lambda p: p + 0.9, params), rtol=0, atol=1e-6)
    assert tree.equal(avg, avg_before) and tree.equal(params, params_before)


def test_repeated_updates_converge_to_constant_params():
    params = make_params()
    avg = tree.zeros_like(params)
    for _ in range(50):
        avg = ema.update(avg, params, torch.tensor(0.5))
    assert tree.allclose(avg, params, rtol=0, atol=1e-6)


def test_update_with_low_precision_params():
    params = tree.cast(make_params(), torch.bfloat16)
    new = ema.update(ema.init(params), params, torch.tensor(0.99))
    assert all(x.dtype == torch.float32 for x in tree.leaves(new))
    assert tree.allclose(new, tree.cast(params, torch.float32), rtol=0, atol=1e-6)


@pytest.mark.compile
def test_update_traces_to_one_graph_across_decays():
    # Dynamo only (CompileCounter runs the captured graph eagerly): fullgraph capture and no recompiles
    # when the decay value changes, without the cost of an inductor compile.
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(ema.update, backend=counter, fullgraph=True)
    params = make_params()
    avg = eager = ema.init(params)
    for step in range(3):
        decay = torch.tensor(ema.decay_at(EMAConfig(decay=0.9), step))
        avg = compiled(avg, params, decay)
        eager = ema.update(eager, params, decay)
    assert tree.allclose(avg, eager, rtol=0, atol=1e-6)
    assert counter.frame_count == 1
