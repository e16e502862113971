"""Model FLOPs utilisation: achieved training FLOPs over the machine's measured matmul peak.

The peak is measured, not assumed: the best of a few square matmuls in the compute dtype (on this kind of
CPU about 1,000 GFLOP/s in bf16 and 240 in fp32 with 2 threads; PLATFORM.md). A configured peak can
replace the measurement (e.g. a GPU's datasheet number).
"""

from __future__ import annotations

import time

import torch


def measure_peak_flops(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    n: int = 2048,
    seconds: float = 0.5,
) -> float:
    """FLOP/s of the fastest of repeated (n x n) @ (n x n) matmuls run for about `seconds`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up (allocations, kernel selection)
    sync()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def compute_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a training precision setting ("fp32" or "bf16")."""
    return torch.bfloat16 if precision == "bf16" else torch.float32
