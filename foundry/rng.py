"""Explicit, stateless random numbers: keys in, tensors out.

A *key* is an int64 tensor of shape ``(2,)`` holding two uint32 words. Every draw is a pure function of
(key, shape): it does not depend on earlier draws, on the thread count, or on eager versus
``torch.compile(fullgraph=True)`` (bits are identical; transcendentals such as ``erfinv`` may differ by
~1e-6). Keys are ordinary tensors, so a new key value never recompiles, keys can live on any device, and
``torch.func.vmap`` over a batch of keys works. ``torch.Generator`` cannot do this (it cannot enter
compiled code), hence this module.

Usage::

    k = rng.key(0)
    k_init, k_data = rng.split(k)
    w = rng.truncated_normal(k_init, (256, 256)) * 0.02
    step_key = rng.fold_in(k, step)            # step: int or 0-D tensor (no recompile when it changes)
    k_drop, k_noise = rng.split(step_key)
    mask = rng.bernoulli(k_drop, 0.9, x.shape)

Never use one key for two purposes: split it (or fold in a distinct integer) first.

Design: the block function is counter-based Threefry-2x32 with 20 rounds (Salmon et al. 2011,
Random123; the JAX PRNG), written in int64 torch ops that keep uint32 values masked with ``& 0xFFFFFFFF``
(torch.uint32 lacks add/shift on CPU, and a multiply-based Philox would overflow int64). Counters, key
derivation and bits follow JAX's "partitionable" scheme: element ``i`` (row-major flat index) of a draw
hashes the counter ``(i >> 32, i & 0xFFFFFFFF)`` and takes the xor of the two output words (or both words
where 53/63 bits are needed); ``split(k, n)[i] = threefry(k, (0, i))``; ``fold_in(k, d) =
threefry(k, (d >> 32, d & 0xFFFFFFFF))``; ``key(seed) = (seed >> 32, seed & 0xFFFFFFFF)``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch

Key = torch.Tensor

_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_SQRT2 = math.sqrt(2.0)


def _check_key(key: Key) -> None:
    if not isinstance(key, torch.Tensor) or key.shape != (2,) or key.dtype != torch.int64:
        got = f"shape {tuple(key.shape)} {key.dtype}" if isinstance(key, torch.Tensor) else type(key).__name__
        raise ValueError(f"expected a key of shape (2,) int64, got {got} (make one with rng.key(seed))")


def _check_int(name: str, value: int, lo: int = 0, hi: int = 2**64) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not lo <= value < hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}), got {value}")
    return value


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, torch.SymInt)) else tuple(shape)
    if any(not isinstance(d, (int, torch.SymInt)) or d < 0 for d in shape):  # SymInt: dynamic shapes
        raise ValueError(f"shape must be non-negative ints, got {shape}")
    return shape


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & _MASK


def threefry2x32(key: Key, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw Threefry-2x32-20 block: hash counters ``(x0, x1)`` (uint32 values in int64) under ``key``."""
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = (x0 + ks[0]) & _MASK
    x1 = (x1 + ks[1]) & _MASK
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK
            x1 = _rotl(x1, r) ^ x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK
        x1 = (x1 + ks[(i + 2) % 3] + (i + 1)) & _MASK
    return x0, x1


def _words(key: Key, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both output words for every element of ``shape`` (counter = row-major flat index)."""
    _check_key(key)
    n = math.prod(shape)
    idx = torch.arange(n, dtype=torch.int64, device=key.device)
    hi = idx >> 32 if n > 2**32 else torch.zeros((), dtype=torch.int64, device=key.device)
    y0, y1 = threefry2x32(key, hi, idx & _MASK)
    return y0.reshape(shape), y1.reshape(shape)


def key(seed: int, *, device: torch.device | str | None = None) -> Key:
    """A key from a seed in [0, 2**64): ``(seed >> 32, seed & 0xFFFFFFFF)`` as in ``jax.random.key``."""
    seed = _check_int("seed", seed)
    return torch.tensor([seed >> 32, seed & _MASK], dtype=torch.int64, device=device)


def split(key: Key, n: int = 2) -> torch.Tensor:
    """``n`` new independent keys as an ``(n, 2)`` tensor; ``a, b = split(k)`` works."""
    _check_key(key)
    n = _check_int("n", n, 1, 2**32)
    idx = torch.arange(n, dtype=torch.int64, device=key.device)
    return torch.stack(threefry2x32(key, torch.zeros_like(idx), idx), dim=-1)


def fold_in(key: Key, data: int | torch.Tensor) -> Key:
    """A new key from ``key`` and an integer (Python int, or 0-D integer tensor: no recompile per value)."""
    _check_key(key)
    if isinstance(data, torch.Tensor):
        if data.dim() != 0 or data.dtype.is_floating_point or data.dtype.is_complex or data.dtype == torch.bool:
            raise ValueError(f"fold_in data must be a 0-D integer tensor, got {data.dtype} {tuple(data.shape)}")
        d = data.to(device=key.device, dtype=torch.int64)
        hi, lo = (d >> 32) & _MASK, d & _MASK
    else:
        d = _check_int("fold_in data", data)
        hi = torch.tensor(d >> 32, dtype=torch.int64, device=key.device)
        lo = torch.tensor(d & _MASK, dtype=torch.int64, device=key.device)
    return torch.stack(threefry2x32(key, hi, lo))


def bits(key: Key, shape) -> torch.Tensor:
    """Uniform random uint32 values (as int64) of the given shape."""
    y0, y1 = _words(key, _shape(shape))
    return y0 ^ y1


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if not dtype.is_floating_point:
        raise ValueError(f"expected a floating dtype, got {dtype}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mantissa(key: Key, shape, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Uniform integers of 24 bits (float32 compute) or 53 bits (float64), and that bit count."""
    y0, y1 = _words(key, _shape(shape))
    if dtype == torch.float64:
        return (y0 << 21) | (y1 >> 11), 53
    return (y0 ^ y1) >> 8, 24


def _open_symmetric(key: Key, shape, dtype: torch.dtype) -> torch.Tensor:
    """Uniform in the open interval (-1, 1), exactly representable: ``(2m + 1 - 2**b) / 2**b``."""
    m, b = _mantissa(key, shape, dtype)
    return ((m << 1) + (1 - 2**b)).to(dtype) * 2.0**-b


def uniform(key: Key, shape, dtype=torch.float32, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform floats in ``[low, high)`` (24 random bits for float32 and below, 53 for float64)."""
    if not high > low:
        raise ValueError(f"uniform needs high > low, got low={low}, high={high}")
    cdt = _compute_dtype(dtype)
    m, b = _mantissa(key, shape, cdt)
    out = (m.to(cdt) * (2.0**-b * (high - low)) + low).to(dtype)
    # rounding (in the affine map or the cast to a narrower dtype) must never reach `high`
    hi_, lo_ = (torch.tensor(v, dtype=dtype, device=out.device) for v in (high, low))
    return torch.minimum(torch.maximum(out, lo_), torch.nextafter(hi_, lo_))


def normal(key: Key, shape, dtype=torch.float32) -> torch.Tensor:
    """Standard normal samples: ``sqrt(2) * erfinv(z)`` with ``z`` uniform in (-1, 1), never inf."""
    cdt = _compute_dtype(dtype)
    return (_SQRT2 * torch.erfinv(_open_symmetric(key, shape, cdt))).to(dtype)


def truncated_normal(key: Key, shape, dtype=torch.float32, lower: float = -2.0, upper: float = 2.0):
    """Standard normal truncated to ``[lower, upper]`` by the inverse-CDF method (for weight init)."""
    if not upper > lower:
        raise ValueError(f"truncated_normal needs upper > lower, got lower={lower}, upper={upper}")
    cdt = _compute_dtype(dtype)
    a, b = math.erf(lower / _SQRT2), math.erf(upper / _SQRT2)
    z = (_open_symmetric(key, shape, cdt) + 1.0) * (0.5 * (b - a)) + a  # uniform in (a, b)
    return torch.clamp(_SQRT2 * torch.erfinv(z), lower, upper).to(dtype)


def randint(key: Key, shape, low: int, high: int, dtype=torch.int64) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` (63 random bits reduced modulo the range; bias < range/2**63)."""
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(f"randint needs an integer dtype, got {dtype}")
    if not high > low:
        raise ValueError(f"randint needs high > low, got low={low}, high={high}")
    info = torch.iinfo(dtype)
    if low < info.min or high - 1 > info.max or high - low > 2**63 - 1:
        raise ValueError(f"randint range [{low}, {high}) does not fit {dtype}")
    y0, y1 = _words(key, _shape(shape))
    v = (y0 << 31) | (y1 >> 1)  # 63 uniform bits, non-negative in int64
    return (v % (high - low) + low).to(dtype)


def bernoulli(key: Key, p: float | torch.Tensor, shape) -> torch.Tensor:
    """Bool tensor, True with probability ``p`` (a float in [0, 1] or a tensor broadcastable to ``shape``)."""
    if not isinstance(p, torch.Tensor) and not 0.0 <= p <= 1.0:
        raise ValueError(f"bernoulli needs 0 <= p <= 1, got p={p}")
    m, b = _mantissa(key, shape, torch.float32)
    return m.to(torch.float32) * 2.0**-b < p


def permutation(key: Key, n: int) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64): argsort of 63-bit random sort keys."""
    n = _check_int("n", n, 0, 2**63)
    y0, y1 = _words(key, (n,))
    return torch.argsort((y0 << 31) | (y1 >> 1), stable=True)


def to_seed(key: Key) -> int:
    """The key's 64 bits as a Python int in [0, 2**64) (``key(to_seed(k))`` equals ``k``); eager only.

    For seeding numpy (``np.random.default_rng``), ``random.seed`` or ``torch.manual_seed`` in data
    workers; use ``to_seed(k) % 2**32`` for APIs limited to 32 bits.
    """
    _check_key(key)
    hi, lo = (int(v) & _MASK for v in key.tolist())
    return (hi << 32) | lo
