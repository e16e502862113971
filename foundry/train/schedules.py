"""Learning-rate schedules: pure functions of an integer step returning a Python float.

They are evaluated outside the compiled train step; the loop turns the value into a 0-D tensor
(`hp["lr"]`), so a changing learning rate never recompiles. Warmup is linear with `(step + 1) / warmup`,
so step 0 already has a small non-zero lr and step `warmup - 1` reaches the peak.

Usage:
    from foundry.train.config import ScheduleConfig
    from foundry.train.schedules import learning_rate

    cfg = ScheduleConfig(kind="cosine", peak_lr=3e-4, warmup_steps=100, floor_fraction=0.1)
    lr = learning_rate(cfg, step, total_steps=10_000)       # float
    hp = {"lr": torch.tensor(lr, dtype=torch.float32)}
"""

from __future__ import annotations

import math

from foundry.train.config import ScheduleConfig

KINDS = ("cosine", "constant", "wsd")


def _check(step: int, warmup_steps: int, total_steps: int | None = None) -> None:
    if step < 0:
        raise ValueError(f"schedule: step must be >= 0, got {step}")
    if warmup_steps < 0:
        raise ValueError(f"schedule: warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps is not None and warmup_steps > total_steps:
        raise ValueError(
            f"schedule: warmup_steps={warmup_steps} exceeds total_steps={total_steps}; "
            "lower warmup_steps or train longer"
        )


def _warmup(step: int, warmup_steps: int, peak: float) -> float:
    return peak * (step + 1) / warmup_steps


def constant(step: int, *, warmup_steps: int, peak: float) -> float:
    """Linear warmup to `peak`, then `peak`."""
    _check(step, warmup_steps)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, peak)
    return peak


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warmup to `peak`, half-cosine decay from `peak` (at `warmup_steps`) to `floor` (at
    `total_steps`), then `floor` (Loshchilov & Hutter, 2017, without restarts)."""
    _check(step, warmup_steps, total_steps)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, peak)
    if step >= total_steps:
        return floor
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # in [0, 1)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(
    step: int, *, total_steps: int, warmup_steps: int, decay_steps: int, peak: float, floor: float
) -> float:
    """Warmup-stable-decay (Hägele et al., 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations"): linear warmup, `peak` until `total_steps - decay_steps`, then linear decay that
    reaches `floor` at `total_steps`, and `floor` after."""
    _check(step, warmup_steps, total_steps)
    if decay_steps < 0 or warmup_steps + decay_steps > total_steps:
        raise ValueError(
            f"schedule: warmup_steps={warmup_steps} + decay_steps={decay_steps} must be within "
            f"total_steps={total_steps} (and decay_steps >= 0)"
        )
    decay_start = total_steps - decay_steps
    if step < warmup_steps:
        return _warmup(step, warmup_steps, peak)
    if step < decay_start:
        return peak
    if step >= total_steps:
        return floor
    progress = (step - decay_start) / decay_steps  # in [0, 1)
    return peak + (floor - peak) * progress


def learning_rate(cfg: ScheduleConfig, step: int, total_steps: int) -> float:
    """The lr at `step` of a run of `total_steps` steps under `cfg` (dispatch on `cfg.kind`)."""
    _check_config(cfg, total_steps)
    floor = cfg.peak_lr * cfg.floor_fraction
    if cfg.kind == "constant":
        return constant(step, warmup_steps=cfg.warmup_steps, peak=cfg.peak_lr)
    if cfg.kind == "cosine":
        return warmup_cosine(
            step, total_steps=total_steps, warmup_steps=cfg.warmup_steps, peak=cfg.peak_lr, floor=floor
        )
    return warmup_stable_decay(
        step,
        total_steps=total_steps,
        warmup_steps=cfg.warmup_steps,
        decay_steps=wsd_decay_steps(cfg, total_steps),
        peak=cfg.peak_lr,
        floor=floor,
    )


def wsd_decay_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """The length of the wsd decay phase: `round(decay_fraction * total_steps)`."""
    return round(cfg.decay_fraction * total_steps)


def _check_config(cfg: ScheduleConfig, total_steps: int) -> None:
    """Errors name the ScheduleConfig field at fault and say how to fix it."""
    if cfg.kind not in KINDS:
        raise ValueError(f"ScheduleConfig.kind={cfg.kind!r} is not one of {KINDS}")
    if total_steps <= 0:
        raise ValueError(f"schedule: total_steps must be > 0, got {total_steps}")
    if cfg.peak_lr < 0:
        raise ValueError(f"ScheduleConfig.peak_lr={cfg.peak_lr} must be >= 0")
    if cfg.warmup_steps < 0 or cfg.warmup_steps > total_steps:
        raise ValueError(
            f"ScheduleConfig.warmup_steps={cfg.warmup_steps} must be in [0, total_steps={total_steps}]; "
            "lower warmup_steps or train longer"
        )
    if not 0.0 <= cfg.floor_fraction <= 1.0:
        raise ValueError(f"ScheduleConfig.floor_fraction={cfg.floor_fraction} must be in [0, 1]")
    if cfg.kind == "wsd":
        if not 0.0 < cfg.decay_fraction <= 1.0:
            raise ValueError(f"ScheduleConfig.decay_fraction={cfg.decay_fraction} must be in (0, 1]")
        decay_steps = wsd_decay_steps(cfg, total_steps)
        if cfg.warmup_steps + decay_steps > total_steps:
            raise ValueError(
                f"ScheduleConfig: warmup_steps={cfg.warmup_steps} + decay steps {decay_steps} "
                f"(decay_fraction={cfg.decay_fraction} of {total_steps}) exceed total_steps={total_steps}; "
                "lower warmup_steps or decay_fraction"
            )
