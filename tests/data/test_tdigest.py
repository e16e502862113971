"""t-digest: percentiles against numpy on 1e5 samples, merging equals the digest of the union, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from foundry.data.tdigest import TDigest

QS = np.array([0.01, 0.02, 0.05, 0.25, 0.5, 0.75, 0.95, 0.98, 0.99])
# Rank tolerance: the k1 scale keeps clusters tiny in the tails (p1..p5, p95..p99: what normalization
# reads) and ~1/60 of the data wide at the median, where linear interpolation inside a cluster errs more.
TOL = np.where((QS <= 0.05) | (QS >= 0.95), 1e-3, 2e-3)


def distributions():
    rng = np.random.default_rng(0)
    n = 100_000
    return {
        "normal": rng.normal(3, 2, n),
        "exponential": rng.exponential(1, n),
        "lognormal": rng.lognormal(0, 2, n),
        "uniform": rng.uniform(-1, 1, n),
        "bimodal": np.concatenate([rng.normal(-5, 1, n // 2), rng.normal(5, 0.1, n // 2)]),
        "discrete": rng.integers(0, 5, n).astype(np.float64),
    }


def within_tolerance(x: np.ndarray, values: np.ndarray) -> bool:
    """Whether `values` are the QS quantiles of `x` up to TOL in quantile units (ties count)."""
    s = np.sort(x)
    lo, hi = np.searchsorted(s, values, "left") / len(s), np.searchsorted(s, values, "right") / len(s)
    return bool((np.maximum(lo - QS, QS - hi) <= TOL).all())


def digest_of(x: np.ndarray, chunk: int) -> TDigest:
    d = TDigest(200)
    for i in range(0, len(x), chunk):
        d.update(x[i : i + chunk])
    return d


@pytest.mark.parametrize("name", list(distributions()))
def test_percentiles_match_numpy(name):
    x = distributions()[name]
    for chunk in (len(x), 3000):
        d = digest_of(x, chunk)
        assert d.count == len(x) and (d.min, d.max) == (x.min(), x.max())
        assert within_tolerance(x, d.quantile(QS))
        assert len(d.means) < 250  # bounded size, whatever the input size


def test_merge_equals_digest_of_union_and_leaves_inputs_alone():
    x = distributions()["lognormal"]
    a, b = x[:30_000], x[30_000:]
    da, db = digest_of(a, 5000), digest_of(b, 5000)
    before = da.to_dict()
    merged = da.merge(db)
    assert da.to_dict() == before and merged.count == len(x)
    union = digest_of(x, 5000)
    assert within_tolerance(x, merged.quantile(QS)) and within_tolerance(x, union.quantile(QS))
    assert within_tolerance(x, db.merge(da).quantile(QS))  # order independent within the tolerance
    np.testing.assert_allclose(merged.quantile([0.01, 0.05]), union.quantile([0.01, 0.05]), rtol=0.01)


def test_state_round_trips_exactly_through_json():
    d = digest_of(distributions()["normal"], 10_000)
    back = TDigest.from_dict(json.loads(json.dumps(d.to_dict())))
    np.testing.assert_array_equal(back.quantile(QS), d.quantile(QS))
    assert TDigest.from_dict(TDigest(50).to_dict()).count == 0


def test_bad_input():
    d = TDigest()
    with pytest.raises(ValueError, match="empty"):
        d.quantile(0.5)
    with pytest.raises(ValueError, match="NaN"):
        d.update(np.array([1.0, np.nan]))
    d.update(np.array([2.0]))
    assert d.quantile([0.0, 0.5, 1.0]).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.quantile(1.5)
