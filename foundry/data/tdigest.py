"""A compact merging t-digest (Dunning & Ertl, "Computing extremely accurate quantiles using t-digests",
2019) in numpy: mergeable quantile sketches for normalization statistics across datasets.

The digest is a sorted list of centroids (mean, weight). Adding values or merging another digest sorts
all centroids together and merges neighbours greedily while a cluster spans at most one unit of the
scale function k1(q) = compression / (2 pi) * asin(2q - 1), which keeps clusters small near q = 0 and
q = 1 (accurate tails: the 1st and 99th percentiles are what normalization uses). The greedy pass jumps
from cluster to cluster with `searchsorted`, so it costs O(centroids) Python steps, not O(values).

Usage:

    d = TDigest(compression=200)
    d.update(values)                      # batched, in place (an accumulator, like hashlib's update)
    both = d.merge(other)                 # a new digest; d and other are unchanged
    p1, p99 = both.quantile([0.01, 0.99])
    same = TDigest.from_dict(json.loads(json.dumps(both.to_dict())))   # exact round trip

Exact statistics (count, mean, std, min, max) come from sums kept beside the digest
(`foundry.data.normalize`); the digest keeps min and max only to anchor its interpolation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class TDigest:
    """A merging t-digest over float64 values (see module docstring)."""

    def __init__(self, compression: float = 200.0) -> None:
        if not compression >= 10:
            raise ValueError(f"compression = {compression} must be >= 10 (200 is a good default)")
        self.compression = float(compression)
        self.means = np.zeros(0)  # (K,) sorted centroid means
        self.weights = np.zeros(0)  # (K,) centroid weights (counts)
        self.min, self.max = math.inf, -math.inf
        self._reverse = False  # alternate the merge direction, which halves the worst-case error

    @property
    def count(self) -> float:
        return float(self.weights.sum())

    def update(self, values: np.ndarray) -> None:
        """Add a batch of finite values (any shape, flattened) in place."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        if not np.isfinite(v).all():
            raise ValueError("TDigest.update got NaN or Inf values")
        self.min, self.max = min(self.min, float(v.min())), max(self.max, float(v.max()))
        self._absorb(v, np.ones_like(v))

    def merge(self, other: TDigest) -> TDigest:
        """A new digest of both inputs' values (within the digest's accuracy); inputs are unchanged."""
        out = TDigest(max(self.compression, other.compression))
        out.min, out.max = min(self.min, other.min), max(self.max, other.max)
        out.means, out.weights = self.means, self.weights
        out._absorb(other.means, other.weights)
        return out

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """Values at quantiles `q` in [0, 1] (array of q's shape), interpolated between centroids."""
        q = np.asarray(q, dtype=np.float64)
        if self.weights.size == 0:
            raise ValueError("quantile of an empty TDigest")
        if ((q < 0) | (q > 1)).any():
            raise ValueError(f"quantiles must lie in [0, 1], got {q}")
        total = self.weights.sum()
        mids = np.cumsum(self.weights) - self.weights / 2  # rank of each centroid's center
        ranks = np.concatenate([[0.0], mids, [total]])
        values = np.concatenate([[self.min], self.means, [self.max]])
        return np.interp(q * total, ranks, values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; floats round-trip exactly through `json`."""
        return {
            "compression": self.compression,
            "min": self.min if self.weights.size else None,
            "max": self.max if self.weights.size else None,
            "means": self.means.tolist(),
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TDigest:
        out = cls(d["compression"])
        out.means = np.asarray(d["means"], dtype=np.float64)
        out.weights = np.asarray(d["weights"], dtype=np.float64)
        if out.weights.size:
            out.min, out.max = float(d["min"]), float(d["max"])
        return out

    def _absorb(self, means: np.ndarray, weights: np.ndarray) -> None:
        m = np.concatenate([self.means, means])
        w = np.concatenate([self.weights, weights])
        if m.size:
            self.means, self.weights = compress(m, w, self.compression, reverse=self._reverse)
            self._reverse = not self._reverse


def compress(
    means: np.ndarray, weights: np.ndarray, compression: float, *, reverse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k1-bounded merge of (unsorted) centroids -> sorted `(means, weights)`; `reverse` runs the
    greedy pass from the largest value down (Dunning's alternation: clusters do not drift one way)."""
    if reverse:
        m, w = compress(-means, weights, compression)
        return -m[::-1], w[::-1]
    order = np.argsort(means, kind="stable")
    m, w = means[order], weights[order]
    cum = np.cumsum(w)  # (N,) rank at each point's right edge
    total = cum[-1]
    k_max = compression / 4  # k1(1)
    starts = []
    start, n = 0, len(w)
    while start < n:
        starts.append(start)
        left = cum[start - 1] / total if start else 0.0
        k_limit = compression / (2 * math.pi) * math.asin(min(1.0, max(-1.0, 2 * left - 1))) + 1
        if k_limit >= k_max:
            break
        q_limit = (math.sin(2 * math.pi * k_limit / compression) + 1) / 2
        end = int(np.searchsorted(cum, q_limit * total * (1 + 1e-12), side="right"))
        start = max(end, start + 1)  # a point heavier than the limit forms its own cluster
    idx = np.asarray(starts)
    weight = np.add.reduceat(w, idx)
    return np.add.reduceat(w * m, idx) / weight, weight
