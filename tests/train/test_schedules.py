"""Tests of foundry.train.schedules: values at key steps, shapes, and config errors.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_schedules.py -q
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from foundry.train.config import ScheduleConfig
from foundry.train.schedules import constant, learning_rate, warmup_cosine, warmup_stable_decay

COSINE = dict(total_steps=110, warmup_steps=10, peak=1.0, floor=0.1)


def test_warmup_cosine_key_steps():
    assert warmup_cosine(0, **COSINE) == pytest.approx(0.1)  # (0 + 1) / 10
    assert warmup_cosine(4, **COSINE) == pytest.approx(0.5)
    assert warmup_cosine(9, **COSINE) == pytest.approx(1.0)  # warmup ends at the peak
    assert warmup_cosine(10, **COSINE) == pytest.approx(1.0)  # cosine starts at the peak
    assert warmup_cosine(60, **COSINE) == pytest.approx(0.55)  # halfway: (peak + floor) / 2
    assert warmup_cosine(110, **COSINE) == pytest.approx(0.1)
    assert warmup_cosine(10_000, **COSINE) == pytest.approx(0.1)


def test_warmup_cosine_is_monotonic():
    values = [warmup_cosine(s, **COSINE) for s in range(130)]
    assert all(a < b for a, b in itertools.pairwise(values[:10]))  # warmup rises
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))  # decay never rises
    assert min(values) == pytest.approx(0.1)


def test_no_warmup_starts_at_peak():
    assert warmup_cosine(0, total_steps=10, warmup_steps=0, peak=2.0, floor=0.0) == pytest.approx(2.0)
    assert constant(0, warmup_steps=0, peak=2.0) == 2.0


def test_constant():
    assert constant(0, warmup_steps=4, peak=2.0) == pytest.approx(0.5)
    assert constant(3, warmup_steps=4, peak=2.0) == pytest.approx(2.0)
    assert constant(10**6, warmup_steps=4, peak=2.0) == 2.0


def test_warmup_stable_decay_shape():
    kw = dict(total_steps=100, warmup_steps=10, decay_steps=20, peak=1.0, floor=0.0)
    assert warmup_stable_decay(0, **kw) == pytest.approx(0.1)
    assert warmup_stable_decay(9, **kw) == pytest.approx(1.0)
    assert all(warmup_stable_decay(s, **kw) == 1.0 for s in range(10, 81))  # stable
    assert warmup_stable_decay(90, **kw) == pytest.approx(0.5)  # linear decay: halfway
    assert warmup_stable_decay(100, **kw) == 0.0
    assert warmup_stable_decay(500, **kw) == 0.0
    decay = [warmup_stable_decay(s, **kw) for s in range(80, 101)]
    steps = [a - b for a, b in itertools.pairwise(decay)]
    assert steps == pytest.approx([0.05] * 20)  # constant slope


def test_learning_rate_dispatch():
    cfg = ScheduleConfig(kind="cosine", peak_lr=1e-3, warmup_steps=10, floor_fraction=0.1)
    assert learning_rate(cfg, 60, 110) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 200, 110) == pytest.approx(1e-4)
    const = dataclasses.replace(cfg, kind="constant")
    assert learning_rate(const, 200, 110) == pytest.approx(1e-3)
    wsd = dataclasses.replace(cfg, kind="wsd", decay_fraction=0.2, floor_fraction=0.0)
    assert learning_rate(wsd, 79, 100) == pytest.approx(1e-3)
    assert learning_rate(wsd, 90, 100) == pytest.approx(0.5e-3)
    assert learning_rate(wsd, 100, 100) == 0.0


@pytest.mark.parametrize(
    "changes, total, match",
    [
        (dict(kind="linear"), 100, "ScheduleConfig.kind"),
        (dict(warmup_steps=200), 100, "ScheduleConfig.warmup_steps"),
        (dict(warmup_steps=-1), 100, "ScheduleConfig.warmup_steps"),
        (dict(floor_fraction=1.5), 100, "ScheduleConfig.floor_fraction"),
        (dict(peak_lr=-1.0), 100, "ScheduleConfig.peak_lr"),
        (dict(kind="wsd", decay_fraction=0.0), 100, "ScheduleConfig.decay_fraction"),
        (dict(kind="wsd", warmup_steps=90, decay_fraction=0.2), 100, "decay_fraction"),
        (dict(), 0, "total_steps"),
    ],
)
def test_learning_rate_errors(changes, total, match):
    cfg = dataclasses.replace(ScheduleConfig(warmup_steps=10), **changes)
    with pytest.raises(ValueError, match=match):
        learning_rate(cfg, 0, total)


def test_function_errors():
    with pytest.raises(ValueError, match="step"):
        warmup_cosine(-1, **COSINE)
    with pytest.raises(ValueError, match="warmup_steps=20 exceeds total_steps=10"):
        warmup_cosine(0, total_steps=10, warmup_steps=20, peak=1.0, floor=0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        warmup_stable_decay(0, total_steps=10, warmup_steps=5, decay_steps=6, peak=1.0, floor=0.0)
