"""Benchmarks run with the machine's threads and OMP_WAIT_POLICY=PASSIVE (PLATFORM.md).

`train_step_rate` is the shared measurement of the model benchmarks: the pure train step (AdamW, clip 1.0),
compiled unless asked otherwise, timed over 5 rounds after 2 warm-up rounds; it returns the rate and MFU
against the matmul peak measured in the same process, and records them in the benchmark's extra info.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from foundry import rng
from foundry.train.config import AdamWConfig
from foundry.train.mfu import compute_dtype, measure_peak_flops
from foundry.train.optim import AdamW
from foundry.train.step import compile_step, init_state, make_step


@pytest.fixture
def train_step_rate(benchmark):
    """`rate(loss_fn, params, batch, *, units, flops_per_unit, precision, compiled=True)` -> (units/s, mfu)
    for one step on `batch` (a single micro-batch: leading axis 1), `units` per step (tokens or samples)."""

    def rate(loss_fn, params, batch, *, units, flops_per_unit, precision, compiled=True):
        optimizer = AdamW(AdamWConfig(), params)
        step = compile_step(make_step(loss_fn, optimizer, precision=precision, clip_norm=1.0), enabled=compiled)
        holder = {"state": init_state(params, optimizer, rng.key(3))}
        hp = {"lr": torch.tensor(1e-4)}

        def run():
            holder["state"], metrics = step(holder["state"], batch, hp)
            return metrics["loss"].item()

        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=2)
        per_s = units / benchmark.stats.stats.mean
        peak = measure_peak_flops(compute_dtype(precision))
        mfu = per_s * flops_per_unit / peak
        benchmark.extra_info.update(
            per_s=round(per_s, 1), mfu=round(mfu, 3), peak_gflops=round(peak / 1e9), threads=torch.get_num_threads()
        )
        print(f"\n{precision} {'compiled' if compiled else 'eager'}: {per_s:,.1f}/s, MFU {mfu:.1%} "
              f"(peak {peak / 1e9:,.0f} GFLOP/s)")  # fmt: skip
        return per_s, mfu

    return rate
