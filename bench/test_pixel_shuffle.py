"""Pixel shuffle, compiled vs eager, forward + backward on a SigLIP-sized grid (batch 8, 32 x 32 patches,
width 768, r = 2). Reports effective memory bandwidth (read + write of x in each direction).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_pixel_shuffle.py --benchmark-columns=mean,stddev,rounds
"""

import pytest
import torch

from foundry import rng
from foundry_kernels.pixel_shuffle import pixel_shuffle

SHAPE, R = (8, 1024, 768), 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_pixel_shuffle_fwd_bwd(benchmark, compiled, dtype):
    x = rng.normal(rng.key(0), SHAPE, dtype=dtype).requires_grad_(True)
    g = rng.normal(rng.key(1), (SHAPE[0], SHAPE[1] // R**2, SHAPE[2] * R**2), dtype=dtype)

    def run():
        y = pixel_shuffle(x, R, compiled=compiled)
        (grad,) = torch.autograd.grad(y, x, g)
        return grad

    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=3)
    moved = 4 * x.numel() * x.element_size()  # forward read + write, backward read + write
    gbs = moved / benchmark.stats.stats.mean / 1e9
    benchmark.extra_info.update(gb_per_s=round(gbs, 1), threads=torch.get_num_threads())
    print(f"\n{dtype} {'compiled' if compiled else 'eager'}: {benchmark.stats.stats.mean * 1e3:.2f} ms, {gbs:.1f} GB/s")
