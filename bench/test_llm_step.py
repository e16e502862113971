"""Throughput of the compiled LLM train step: the `11m` shape with the reference vocabulary (50432),
batch 8 x 512, eager vs compiled, fp32 vs bf16 autocast. Reports tokens/s and MFU against the matmul
peak measured in the same process (PLATFORM.md: quiet-machine peaks are ~1,000 GFLOP/s bf16, ~240 fp32).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_llm_step.py --benchmark-columns=mean,stddev,rounds
"""

import pytest
import torch

from foundry import rng
from foundry.models import llm
from foundry.train.config import AdamWConfig
from foundry.train.mfu import compute_dtype, measure_peak_flops
from foundry.train.optim import AdamW
from foundry.train.step import compile_step, init_state, make_step

BATCH, SEQ = 8, 512
CFG = llm.preset("11m", vocab_size=50432)


def loss_fn(params, batch, *, key):
    return llm.loss(params, CFG, batch, key=key)


@pytest.fixture(scope="module")
def setup():
    params = llm.init(rng.key(0), CFG)
    optimizer = AdamW(AdamWConfig(), params)
    tokens = rng.randint(rng.key(1), (1, BATCH, SEQ + 1), 0, CFG.vocab_size)
    batch = {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}
    return params, optimizer, batch


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_llm_11m_train_step(benchmark, setup, precision, compiled):
    params, optimizer, batch = setup
    step = compile_step(make_step(loss_fn, optimizer, precision=precision, clip_norm=1.0), enabled=compiled)
    holder = {"state": init_state(params, optimizer, rng.key(2))}
    hp = {"lr": torch.tensor(1e-4)}

    def run():
        holder["state"], metrics = step(holder["state"], batch, hp)
        return metrics["loss"].item()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=2)
    tokens_per_s = BATCH * SEQ / benchmark.stats.stats.mean
    peak = measure_peak_flops(compute_dtype(precision))
    mfu = tokens_per_s * llm.flops_per_token(CFG, SEQ) / peak
    benchmark.extra_info.update(
        tokens_per_s=round(tokens_per_s),
        mfu=round(mfu, 3),
        peak_gflops=round(peak / 1e9),
        threads=torch.get_num_threads(),
    )
    print(f"\n{precision} {'compiled' if compiled else 'eager'}: {tokens_per_s:,.0f} tokens/s, MFU {mfu:.1%} "
          f"(peak {peak / 1e9:,.0f} GFLOP/s)")  # fmt: skip
