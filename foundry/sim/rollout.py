"""Run a policy (scripted expert, random baseline, trained model) for one episode and record an `Episode`.

Usage::

    cfg = TabletopConfig(image_size=64)
    ep, ok = expert_episode(cfg, seed=7, task="place_in_bowl", noise=0.5)
    ep.lowdim["pose"].shape, ep.lowdim["action"].shape      # (T, 10), (T, 10); also "next_pose" (T, 10)
    ep.images["scene"].shape                                 # (T, 64, 64, 3) uint8

    env = TabletopEnv(cfg)
    ep, ok = rollout(env, random_policy(0), seed=7, task="push")   # baseline for closed-loop evaluation

Step t of an episode holds the observation before action t (pose, images), action t itself (the commanded
target pose) and "next_pose", the pose reached after action t (= pose t + 1). An episode that succeeds
after T actions has T steps; of the observation after the last action only its pose is kept (next_pose).

"action" is what the expert commanded, often a far target that the env approaches at bounded speed;
"next_pose" is the motion it produced. Commanding next_pose t at step t replays the episode exactly (the
env reaches any pose within one step's speed limits), so next_pose chunks are actions a policy can
learn from the demonstrations without guessing the expert's far-away, phase-dependent targets.
A policy is any `obs -> (10,) action` callable (obs as returned by `TabletopEnv.reset/step`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from foundry.data.episode import Episode
from foundry.sim.experts import make_expert
from foundry.sim.tabletop import TASK_FAMILIES, Z_MAX, TabletopConfig, TabletopEnv, make_action

__all__ = ["TASK_FAMILIES", "expert_episode", "random_policy", "rollout"]

Policy = Callable[[dict], np.ndarray]


def rollout(
    env: TabletopEnv, policy_fn: Policy, *, seed: int, task: str, max_steps: int | None = None
) -> tuple[Episode, bool]:
    """Reset `env` to (seed, task), run `policy_fn` until success or `max_steps` (default
    `env.cfg.max_steps`), and return the recorded episode and whether it succeeded."""
    obs = env.reset(seed=seed, task=task)
    assert env.spec is not None
    limit = env.cfg.max_steps if max_steps is None else max_steps
    poses, actions, reached = [], [], []
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in obs["images"]}
    success = False
    for _ in range(limit):
        action = np.asarray(policy_fn(obs), dtype=np.float32)
        if action.shape != (10,):
            raise ValueError(f"rollout(task={task!r}, seed={seed}): policy returned shape {action.shape}, want (10,)")
        poses.append(obs["pose"])
        actions.append(action)
        for cam, img in obs["images"].items():
            frames[cam].append(img)
        obs, done, info = env.step(action)
        reached.append(obs["pose"])
        success = bool(info["success"])
        if done:
            break
    t = len(actions)
    ep = Episode(
        episode_id=f"{task}-{seed:06d}",
        lowdim={"pose": np.stack(poses), "action": np.stack(actions), "next_pose": np.stack(reached)},  # (T, 10)
        images={cam: np.stack(f) for cam, f in frames.items()},  # (T, H, W, 3) uint8
        instructions={"original": [env.spec.instruction], "randomized": list(env.spec.paraphrases)},
        metadata={"task": task, "seed": seed, "success": success, "steps": t, "image_size": env.cfg.image_size},
    )
    ep.check()
    return ep, success


def expert_episode(cfg: TabletopConfig, seed: int, task: str, noise: float = 0.0) -> tuple[Episode, bool]:
    """One scripted demonstration; the expert's noise is seeded from `seed` too (reproducible)."""
    env = TabletopEnv(cfg)
    policy = make_expert(env, noise=noise, seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
    ep, ok = rollout(env, policy, seed=seed, task=task)
    ep.metadata["noise"] = noise
    return ep, ok


def random_policy(seed: int, *, hold: int = 5, cfg: TabletopConfig | None = None) -> Policy:
    """Baseline: a uniformly random target pose on the table (any height, yaw, open/closed), held for
    `hold` steps then redrawn; seeded, independent of the observations."""
    rng = np.random.default_rng(seed)
    h = (cfg or TabletopConfig()).table_half_extent
    state = {"t": 0, "action": None}

    def policy(obs: dict) -> np.ndarray:
        if state["t"] % hold == 0:
            xy, z = rng.uniform(-h, h, 2), rng.uniform(0.0, Z_MAX)
            state["action"] = make_action(xy, z, rng.uniform(-np.pi, np.pi), float(rng.integers(2)))
        state["t"] += 1
        return state["action"]

    return policy
