"""Open-loop agreement: how well a chunk policy's predicted motion matches the scripted expert's on the
expert's own trajectories. No error compounds (the expert drives), so it measures what a policy has learned
long before it succeeds in closed loop: a continuous signal for comparing small-budget runs and ablations.

Usage::

    stats = open_loop_agreement(functools.partial(load_trained_policy, run_dir="runs/vla"), OpenLoopConfig())
    stats["overall"]   # {"cosine": 0.4, "within_45deg": 0.45, "error_m": 0.08, "motion_m": 0.09, "n": 56}

For each episode (a seeded, noisy expert demonstration, re-simulated so the policy sees the same frames),
every `every` steps the policy is asked for a chunk; the xy displacement it predicts `horizon` steps ahead
is compared with the displacement the demonstration made (`next_pose`): the cosine of the two directions
and the distance between the two end points. Steps where the expert moves less than `min_motion` (grasping,
releasing) are left out of the statistics. The policy sees every other observation through `observe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from foundry.eval.rollouts import episode_seed
from foundry.sim.rollout import TASK_FAMILIES, expert_episode
from foundry.sim.tabletop import TabletopConfig, TabletopEnv


@dataclasses.dataclass(frozen=True)
class OpenLoopConfig:
    tasks: tuple[str, ...] = TASK_FAMILIES
    episodes_per_task: int = 4
    seed: int = 1  # episode seeds: (seed, task, index), as in closed-loop evaluation
    every: int = 6  # ask the policy every this many steps
    horizon: int = 5  # compare the displacement this many steps ahead (<= the policy's chunk length)
    min_motion: float = 0.02  # metres: steps where the expert moves less are not scored
    noise: float = 0.3  # expert noise of the demonstrations
    env: TabletopConfig = TabletopConfig()

    def __post_init__(self) -> None:
        if self.every < 1 or self.horizon < 1 or self.episodes_per_task < 0:
            raise ValueError(f"OpenLoopConfig: need every >= 1, horizon >= 1, episodes_per_task >= 0: {self}")


def _summary(cos: list[float], err: list[float], motion: list[float]) -> dict[str, float]:
    if not cos:
        return {"cosine": float("nan"), "within_45deg": float("nan"), "error_m": float("nan"),
                "motion_m": float("nan"), "n": 0}  # fmt: skip
    c = np.asarray(cos)
    return {"cosine": float(c.mean()), "within_45deg": float((c > np.cos(np.pi / 4)).mean()),
            "error_m": float(np.mean(err)), "motion_m": float(np.mean(motion)), "n": len(c)}  # fmt: skip


def open_loop_agreement(factory: Callable, cfg: OpenLoopConfig) -> dict[str, dict[str, float]]:
    """{task: stats, ..., "overall": stats} (see the module docstring); `factory(env)` builds the policy."""
    env = TabletopEnv(cfg.env)
    policy = factory(env)
    demo_env = dataclasses.replace(cfg.env, render=False)  # only the demonstration's poses and actions are read
    out, every_task = {}, ([], [], [])
    for task in cfg.tasks:
        cos, err, motion = [], [], []
        for i in range(cfg.episodes_per_task):
            seed = episode_seed(cfg.seed, task, i)
            ep, _ = expert_episode(demo_env, seed, task, noise=cfg.noise)
            obs = env.reset(seed=seed, task=task)
            policy.reset(seed=seed)
            for t in range(ep.length):
                if t % cfg.every == 0 and t + cfg.horizon <= ep.length:
                    chunk = np.asarray(policy.act(obs), dtype=np.float64)
                    if len(chunk) < cfg.horizon:
                        raise ValueError(f"the policy's chunks have {len(chunk)} steps < horizon {cfg.horizon}")
                    here = np.asarray(obs["pose"][:2], dtype=np.float64)
                    pred = chunk[cfg.horizon - 1, :2] - here
                    true = ep.lowdim["next_pose"][cfg.horizon - 1 + t, :2] - here
                    if np.linalg.norm(true) >= cfg.min_motion:
                        cos.append(float(pred @ true / max(np.linalg.norm(pred) * np.linalg.norm(true), 1e-12)))
                        err.append(float(np.linalg.norm(pred - true)))
                        motion.append(float(np.linalg.norm(true)))
                else:
                    policy.observe(obs)
                obs, _, _ = env.step(ep.lowdim["action"][t])
        out[task] = _summary(cos, err, motion)
        for acc, values in zip(every_task, (cos, err, motion)):
            acc.extend(values)
    out["overall"] = _summary(*every_task)
    return out
