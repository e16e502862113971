"""Success rates with Wilson score intervals, and Barnard's exact test between two policies.

Pure functions on counts; `summarize` and `compare` read per-episode records (as written by
`foundry.eval.rollouts`: {"task", "seed", "is_success", "steps", "failure"}) and pool them per task and
overall. Usage::

    r = success_rate(8, 10)                 # SuccessRate(successes=8, n=10): rate 0.8, 95% interval (0.49, 0.94)
    barnard_pvalue(18, 20, 9, 20)           # two-sided p-value for "both policies succeed equally often"
    rates = summarize(records)              # {"push": SuccessRate, ..., "overall": SuccessRate}
    pvalues = compare(records_a, records_b) # {"push": p, ..., "overall": p}

Why these: closed-loop evaluations are small (tens of episodes per task), where the normal-approximation
interval p ± z*sqrt(p(1-p)/n) collapses to zero width at 0/n and n/n; Wilson's score interval (Wilson 1927)
keeps sensible coverage there. Barnard's test (Barnard 1945) is an unconditional exact test for two
independent binomials: more powerful than Fisher's exact test at these sizes, and exact where a chi-squared
test is not (the same choice as TRI's LBM evaluation, "A Careful Examination of Large Behavior Models", 2025).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from statistics import NormalDist

OVERALL = "overall"


@dataclasses.dataclass(frozen=True)
class SuccessRate:
    successes: int
    n: int
    confidence: float = 0.95

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n, self.confidence)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{self.rate:6.1%} [{lo:6.1%}, {hi:6.1%}] ({self.successes}/{self.n})"


def _check_counts(successes: int, n: int) -> None:
    if not (isinstance(successes, int) and isinstance(n, int)) or not 0 <= successes <= n:
        raise ValueError(f"counts must be integers with 0 <= successes <= n, got successes={successes!r}, n={n!r}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: (centre ± half) / (1 + z²/n) with
    centre = p + z²/2n and half = z·sqrt(p(1-p)/n + z²/4n²). n = 0 gives the uninformative (0, 1)."""
    _check_counts(successes, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Clamp: at p = 0 or 1 the bound is exactly 0 or 1 in exact arithmetic, off by ~1e-17 in floats.
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


def success_rate(successes: int, n: int, confidence: float = 0.95) -> SuccessRate:
    _check_counts(successes, n)
    return SuccessRate(successes, n, confidence)


def barnard_pvalue(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """Two-sided p-value of Barnard's exact test (pooled Wald statistic) that policies a and b have equal
    success probabilities, from independent samples of n_a and n_b episodes. 1.0 if either sample is empty."""
    _check_counts(successes_a, n_a)
    _check_counts(successes_b, n_b)
    if n_a == 0 or n_b == 0:
        return 1.0
    from scipy.stats import barnard_exact  # imported here: scipy.stats costs ~0.5 s to import

    # scipy's layout: one column per sample (its size fixed by design), rows = success / failure.
    table = [[successes_a, successes_b], [n_a - successes_a, n_b - successes_b]]
    return float(min(1.0, barnard_exact(table, alternative="two-sided").pvalue))


def counts(records: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """Per-episode records -> {task: (successes, episodes)} in first-seen task order, plus OVERALL."""
    out: dict[str, tuple[int, int]] = {}
    for r in records:
        s, n = out.get(r["task"], (0, 0))
        out[r["task"]] = (s + bool(r["is_success"]), n + 1)
    out[OVERALL] = (sum(s for s, _ in out.values()), sum(n for _, n in out.values()))
    return out


def summarize(records: Iterable[dict], confidence: float = 0.95) -> dict[str, SuccessRate]:
    """{task: SuccessRate, ..., "overall": SuccessRate} from per-episode records."""
    return {task: SuccessRate(s, n, confidence) for task, (s, n) in counts(records).items()}


def compare(records_a: Iterable[dict], records_b: Iterable[dict]) -> dict[str, float]:
    """Barnard p-values per task both record sets contain, and over all episodes of those tasks."""
    a, b = counts(records_a), counts(records_b)
    tasks = [t for t in a if t in b and t != OVERALL]
    out = {t: barnard_pvalue(*a[t], *b[t]) for t in tasks}
    pooled = lambda c: (sum(c[t][0] for t in tasks), sum(c[t][1] for t in tasks))
    out[OVERALL] = barnard_pvalue(*pooled(a), *pooled(b))
    return out
