"""Throughput of the compiled LLM train step: the `11m` shape with the reference vocabulary (50432),
batch 8 x 512, eager vs compiled, fp32 vs bf16 autocast. Reports tokens/s and MFU against the matmul
peak measured in the same process (PLATFORM.md: quiet-machine peaks are ~1,000 GFLOP/s bf16, ~240 fp32).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_llm_step.py --benchmark-columns=mean,stddev,rounds
"""

import pytest
import torch

from foundry import rng
from foundry.models import llm

BATCH, SEQ = 8, 512
CFG = llm.preset("11m", vocab_size=50432)


def loss_fn(params, batch, *, key):
    return llm.loss(params, CFG, batch, key=key)


@pytest.fixture(scope="module")
def setup():
    params = llm.init(rng.key(0), CFG)
    tokens = rng.randint(rng.key(1), (1, BATCH, SEQ + 1), 0, CFG.vocab_size)
    return params, {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_llm_11m_train_step(train_step_rate, setup, precision, compiled):
    params, batch = setup
    tokens_per_s, _ = train_step_rate(
        loss_fn, params, batch, units=BATCH * SEQ, flops_per_unit=llm.flops_per_token(CFG, SEQ),
        precision=precision, compiled=compiled,
    )  # fmt: skip
    print(f"tokens/s: {tokens_per_s:,.0f}")
