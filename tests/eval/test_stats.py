"""Success-rate intervals and Barnard's test against known values."""

import math

import pytest

from foundry.eval.stats import OVERALL, barnard_pvalue, compare, success_rate, summarize, wilson_interval


def wilson_reference(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) in its textbook form: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    c, d = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - d) / (1 + z * z / n), (c + d) / (1 + z * z / n)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (1, 2, (0.0945, 0.9055))],
)
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)
    assert (lo, hi) == pytest.approx(wilson_reference(k, n), abs=1e-12)


def test_wilson_edges_and_errors():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(8, 10, confidence=0.9)
    lo95, hi95 = wilson_interval(8, 10)
    assert lo95 < lo90 < 0.8 < hi90 < hi95
    for bad in [(11, 10), (-1, 10), (1.5, 3)]:
        with pytest.raises(ValueError, match="0 <= successes <= n"):
            wilson_interval(*bad)
    r = success_rate(8, 10)
    assert r.rate == 0.8 and str(r) == " 80.0% [ 49.0%,  94.3%] (8/10)"


def test_barnard_clear_and_null():
    assert barnard_pvalue(20, 20, 0, 20) < 1e-10  # a clear difference
    assert barnard_pvalue(10, 20, 10, 20) == pytest.approx(1.0)  # identical rates
    assert barnard_pvalue(5, 5, 5, 5) == 1.0 and barnard_pvalue(0, 0, 3, 4) == 1.0
    # scipy's documented example (Barnard 1947 vaccine table), two-sided, pooled Wald statistic
    assert barnard_pvalue(7, 15, 12, 15) == pytest.approx(0.06815, abs=1e-4)
    assert barnard_pvalue(7, 15, 12, 15) == pytest.approx(barnard_pvalue(12, 15, 7, 15))


def test_summarize_and_compare_records():
    rec = lambda task, ok: {"task": task, "seed": 0, "is_success": ok, "steps": 1, "failure": None}
    a = [rec("push", True)] * 9 + [rec("push", False)] + [rec("lift", True)] * 10
    b = [rec("push", False)] * 10 + [rec("lift", True)] * 5 + [rec("lift", False)] * 5 + [rec("stack", True)]
    s = summarize(a)
    assert list(s) == ["push", "lift", OVERALL]
    assert (s["push"].successes, s["push"].n, s[OVERALL].successes, s[OVERALL].n) == (9, 10, 19, 20)
    p = compare(a, b)
    assert set(p) == {"push", "lift", OVERALL}  # only shared tasks; "stack" is b's alone
    assert p["push"] == pytest.approx(barnard_pvalue(9, 10, 0, 10))
    assert p[OVERALL] == pytest.approx(barnard_pvalue(19, 20, 5, 20)) and p[OVERALL] < 1e-3
