"""Normalization statistics (exact moments + t-digest percentiles, mergeable) and normalizers.

Statistics are kept per lowdim field (and per derived field such as "action_rel", see
`foundry.data.robot_stats`), globally and per time step of the window, the step named by its offset from
the anchor (0 = anchor, -1 = one step before), so windows of different lengths align. Count, mean, std,
min and max are exact (float64 sums merged with Chan et al.'s pairwise update); percentiles come from
one t-digest per dimension. A stats dict:

    {"format": "foundry.stats/1", "percentiles": [1, 2, 5, 95, 98, 99],
     "fields": {"action": {"dim": 10,
                           "global": {"count": N, "mean": [10 floats], "std", "min", "max", "p1", .., "p99"},
                           "per_step": {"offsets": [-4, .., 15], "count": [20 ints], "mean": [20 x [10]], ..}}},
     "state": {...}}   # exact accumulator state: moments + digests, needed by merge_stats only

`save_stats(stats, "d/stats.json")` writes the summary to stats.json and "state" to the sidecar
`stats.state.json` (large); `load_stats` reads both when the sidecar exists. A field with no values
reports zeros (and normalizes as the identity).

Usage:

    acc = StatsAccumulator()
    acc.update("action", values, mask, anchor=4)          # (N, T, C), (N, T) bool, anchor's window index
    stats = merge_stats(acc.result(), load_stats("other/stats.json"))
    norm = Normalizer.from_stats(stats, NormConfig(mode="percentile_1_99", clip=(-1.5, 1.5)))
    y = norm.normalize(x, "action")                       # numpy or torch, (..., C)
    y = norm.normalize(x, "action", offsets=range(16))    # scope="step": x is (..., 16, C)
    x_again = norm.unnormalize(y, "action")               # exact inverse where nothing was clipped
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from foundry.data.tdigest import TDigest

FORMAT = "foundry.stats/1"
PERCENTILES = (1, 2, 5, 95, 98, 99)
_FLUSH = 1 << 15  # values buffered per accumulator before the digests absorb them


class FieldStats:
    """Accumulator of one field in one scope: exact moments of (N, C) rows + a t-digest per column."""

    def __init__(self, dim: int, compression: float = 200.0) -> None:
        self.dim, self.count = dim, 0
        self.mean, self.m2 = np.zeros(dim), np.zeros(dim)
        self.min, self.max = np.full(dim, np.inf), np.full(dim, -np.inf)
        self.digests = [TDigest(compression) for _ in range(dim)]
        self._buffer: list[np.ndarray] = []

    def update(self, rows: np.ndarray) -> None:
        """Add (N, C) finite rows, in place."""
        v = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        if len(v) == 0:
            return
        if not np.isfinite(v).all():
            raise ValueError("statistics got NaN or Inf values")
        mu = v.mean(0)
        self._add_moments(len(v), mu, ((v - mu) ** 2).sum(0))
        self.min, self.max = np.minimum(self.min, v.min(0)), np.maximum(self.max, v.max(0))
        self._buffer.append(v)
        if sum(len(b) for b in self._buffer) >= _FLUSH:
            self._flush()

    def _add_moments(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def _flush(self) -> None:
        if self._buffer:
            v = np.concatenate(self._buffer)
            self._buffer = []
            for c, digest in enumerate(self.digests):
                digest.update(v[:, c])

    def merge(self, other: FieldStats) -> FieldStats:
        """A new accumulator of both inputs' rows (exact moments, digest-accurate percentiles)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} with {other.dim}")
        self._flush(), other._flush()  # only moves buffered values into the digests
        out = FieldStats(self.dim)
        out.count, out.mean, out.m2 = self.count, self.mean, self.m2
        if other.count:
            out._add_moments(other.count, other.mean, other.m2)
        out.min, out.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        out.digests = [a.merge(b) for a, b in zip(self.digests, other.digests)]
        return out

    def summary(self, percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
        """count, mean, std (population), min, max and `p<k>` per column; zeros when empty."""
        self._flush()
        zeros = [0.0] * self.dim
        if self.count == 0:
            return {"count": 0, **{k: zeros for k in ("mean", "std", "min", "max")}} | {
                f"p{p:g}": zeros for p in percentiles
            }
        quant = np.stack([d.quantile(np.asarray(percentiles) / 100) for d in self.digests], -1)  # (P, C)
        out = {"count": self.count, "mean": self.mean.tolist(), "std": np.sqrt(self.m2 / self.count).tolist()}
        out |= {"min": self.min.tolist(), "max": self.max.tolist()}
        return out | {f"p{p:g}": quant[i].tolist() for i, p in enumerate(percentiles)}

    def state(self) -> dict[str, Any]:
        self._flush()
        return {
            "dim": self.dim,
            "count": self.count,
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "min": self.min.tolist() if self.count else None,
            "max": self.max.tolist() if self.count else None,
            "digests": [d.to_dict() for d in self.digests],
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> FieldStats:
        out = cls(s["dim"])
        out.count, out.mean, out.m2 = s["count"], np.asarray(s["mean"]), np.asarray(s["m2"])
        if s["count"]:
            out.min, out.max = np.asarray(s["min"]), np.asarray(s["max"])
        out.digests = [TDigest.from_dict(d) for d in s["digests"]]
        return out


# field -> (global accumulator, {offset from the anchor: accumulator})
Accumulators = dict[str, tuple[FieldStats, dict[int, FieldStats]]]


class StatsAccumulator:
    """Statistics of several fields over windows of time steps (see module docstring)."""

    def __init__(self, compression: float = 200.0) -> None:
        self.compression = compression
        self.fields: Accumulators = {}

    def update(self, field: str, values: np.ndarray, mask: np.ndarray, *, anchor: int) -> None:
        """values: (N, T, C) windows; mask: (N, T) bool, True on real steps; `anchor`: its window index."""
        _, t, c = values.shape
        anchor = int(anchor)
        if field not in self.fields:
            self.fields[field] = (FieldStats(c, self.compression), {})
        whole, steps = self.fields[field]
        whole.update(values[mask])
        for i in range(t):
            if (i - anchor) not in steps:
                steps[i - anchor] = FieldStats(c, self.compression)
            steps[i - anchor].update(values[mask[:, i], i])

    def result(self, percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
        return _stats(self.fields, percentiles)


def _stats(acc: Accumulators, percentiles: Sequence[float]) -> dict[str, Any]:
    fields, state = {}, {}
    for name, (whole, steps) in sorted(acc.items()):
        offsets = sorted(steps)
        per = [steps[o].summary(percentiles) for o in offsets]
        per_step = {"offsets": offsets} | {k: [p[k] for p in per] for k in per[0]} if per else {"offsets": []}
        fields[name] = {"dim": whole.dim, "global": whole.summary(percentiles), "per_step": per_step}
        state[name] = {"global": whole.state(), "per_step": {str(o): steps[o].state() for o in offsets}}
    return {"format": FORMAT, "percentiles": list(percentiles), "fields": fields, "state": state}


def _accumulators(stats: dict[str, Any]) -> Accumulators:
    if "state" not in stats:
        raise ValueError("these statistics carry no digest state (the stats.state.json sidecar): cannot merge")
    return {
        name: (FieldStats.from_state(s["global"]), {int(o): FieldStats.from_state(v) for o, v in s["per_step"].items()})
        for name, s in stats["state"].items()
    }


def merge_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Statistics of the union of the data behind `a` and `b` (both with "state"), without re-reading."""
    acc_a, acc_b = _accumulators(a), _accumulators(b)
    merged: Accumulators = {}
    for name in sorted(acc_a.keys() | acc_b.keys()):
        if name not in acc_a or name not in acc_b:
            merged[name] = acc_a.get(name) or acc_b[name]
            continue
        (ga, sa), (gb, sb) = acc_a[name], acc_b[name]
        if ga.dim != gb.dim:
            raise ValueError(f"field {name!r} has dimension {ga.dim} in one stats and {gb.dim} in the other")
        steps = {o: sa[o].merge(sb[o]) if o in sa and o in sb else sa.get(o) or sb[o] for o in sa.keys() | sb.keys()}
        merged[name] = (ga.merge(gb), steps)
    return _stats(merged, a["percentiles"])


def _state_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.state.json")


def save_stats(stats: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the summary to `path` and the state (if any) to the `<stem>.state.json` sidecar, atomically."""
    path = Path(path)
    summary = {k: v for k, v in stats.items() if k != "state"}
    for target, obj in ((path, summary), (_state_path(path), {"state": stats.get("state")})):
        if obj.get("state", True) is None:
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(obj, indent=1 if target == path else None, allow_nan=False) + "\n")
        os.replace(tmp, target)
    return path


def load_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Read a stats.json (and its state sidecar when present)."""
    path = Path(path)
    stats = json.loads(path.read_text())
    if stats.get("format") != FORMAT:
        raise ValueError(f"{path} is not a statistics file (format {stats.get('format')!r}, expected {FORMAT!r})")
    if _state_path(path).is_file():
        stats["state"] = json.loads(_state_path(path).read_text())["state"]
    return stats


@dataclasses.dataclass(frozen=True)
class NormConfig:
    """How lowdim fields are normalized (see `Normalizer`)."""

    # percentile_1_99: [p1, p99] -> [-1, 1]; std: (x - mean) / std; min_max: [min, max] -> [-1, 1].
    mode: Literal["percentile_1_99", "std", "min_max"] = "percentile_1_99"
    # global: one center/scale per dimension; step: per time step, aligned on the anchor.
    scope: Literal["global", "step"] = "global"
    # Normalized values are clipped to this range; None keeps them as they are.
    clip: tuple[float, float] | None = (-1.5, 1.5)
    # Dimensions whose half-range (or std) is below eps are only centered, never divided by ~0.
    eps: float = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class Normalizer:
    """`normalize(x) = clip((x - center) / scale)`, `unnormalize(y) = y * scale + center` per field.

    center/scale: (C,) for scope "global", (n_offsets, C) for "step" with `first_offset[field]` the
    offset of row 0. Picklable; works on numpy arrays and torch tensors (dtype and device kept).
    """

    cfg: NormConfig
    center: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    first_offset: dict[str, int]

    @classmethod
    def from_stats(cls, stats: dict[str, Any], cfg: NormConfig, fields: Sequence[str] | None = None) -> Normalizer:
        names = list(stats["fields"]) if fields is None else list(fields)
        missing = [f for f in names if f not in stats["fields"]]
        if missing:
            raise ValueError(f"no statistics for fields {missing}; the stats hold {sorted(stats['fields'])}")
        lo_key, hi_key = {"percentile_1_99": ("p1", "p99"), "min_max": ("min", "max"), "std": ("mean", "std")}[cfg.mode]
        center, scale, first = {}, {}, {}
        for f in names:
            s = stats["fields"][f]["global" if cfg.scope == "global" else "per_step"]
            lo, hi = np.asarray(s[lo_key], dtype=np.float64), np.asarray(s[hi_key], dtype=np.float64)
            c, half = (lo, hi) if cfg.mode == "std" else ((hi + lo) / 2, (hi - lo) / 2)
            center[f], scale[f] = c, np.where(half >= cfg.eps, half, 1.0)
            first[f] = s["offsets"][0] if cfg.scope == "step" and s["offsets"] else 0
        return cls(cfg, center, scale, first)

    def _params(self, x: Any, field: str, offsets: Sequence[int] | None) -> tuple[Any, Any]:
        if field not in self.center:
            raise ValueError(f"the normalizer has no field {field!r}; it has {sorted(self.center)}")
        c, s = self.center[field], self.scale[field]
        if self.cfg.scope == "step":
            if offsets is None:
                raise ValueError(f"scope='step' needs the offsets of x's time axis (-2) for field {field!r}")
            rows = np.asarray(offsets, dtype=np.int64) - self.first_offset[field]
            if len(rows) and (rows.min() < 0 or rows.max() >= len(c)):
                n = len(c)
                raise ValueError(
                    f"offsets {list(offsets)} outside the stats' {field!r} steps [{self.first_offset[field]}, +{n})"
                )
            c, s = c[rows], s[rows]
        if isinstance(x, np.ndarray):
            return c.astype(x.dtype), s.astype(x.dtype)
        import torch

        return torch.as_tensor(c, dtype=x.dtype, device=x.device), torch.as_tensor(s, dtype=x.dtype, device=x.device)

    def normalize(self, x: Any, field: str, offsets: Sequence[int] | None = None) -> Any:
        """(..., C) or, with scope "step", (..., len(offsets), C) -> the same shape, normalized."""
        c, s = self._params(x, field, offsets)
        y = (x - c) / s
        if self.cfg.clip is None:
            return y
        lo, hi = self.cfg.clip
        return np.clip(y, lo, hi) if isinstance(y, np.ndarray) else y.clamp(lo, hi)

    def unnormalize(self, y: Any, field: str, offsets: Sequence[int] | None = None) -> Any:
        c, s = self._params(y, field, offsets)
        return y * s + c
