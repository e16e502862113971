"""Scripted experts: the next absolute target pose from the simulator state, one per task family.

Usage::

    env = TabletopEnv(TabletopConfig(render=False))
    obs = env.reset(seed=0, task="stack")
    policy = make_expert(env, noise=0.5, seed=0)       # obs -> (10,) action; reads env.state
    obs, done, info = env.step(policy(obs))

Each expert is a state machine whose phase is read off the state, not remembered, so it recovers by
itself when a grasp misses or a push slips (a closed gripper holding nothing opens and retries):

  pick (place_in_bowl, stack, place_next_to, lift): open -> fly at travel height over the object, turning
    the fingers to the cube's faces -> descend -> close -> (lift) rise -> fly over the destination -> open.
  push: close -> fly to the point behind the object on the line from the pad -> descend -> push along the
    line, re-aiming every step; go back up and around when the contact slips more than ~25 degrees.

`noise` (>= 0) adds seeded Gaussian noise to the commanded position (noise * 1 cm) and yaw
(noise * 0.1 rad) for diverse demonstrations; 0 gives the deterministic expert.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from foundry.sim.tabletop import (
    BALL,
    GRIP_R,
    OBJ_R,
    Z_CONTACT,
    Z_TRAVEL,
    SimState,
    TabletopEnv,
    make_action,
    wrap,
)
from foundry.sim.tasks import NEXT_TO_DIST, TaskSpec

Z_LIFT = 0.09  # lift task: hold the object this high (success at 7 cm)
PUSH_STEP = 0.025  # how far past the contact point a push aims per step


def expert_action(st: SimState, spec: TaskSpec) -> np.ndarray:
    """(10,) float32 target pose for the current state (deterministic)."""
    if spec.family == "push":
        return _push(st, spec)
    dest = None
    if spec.family == "place_in_bowl":
        dest = st.bowl
    elif spec.family == "stack":
        dest = st.pos[spec.ref]
    elif spec.family == "place_next_to":
        dest = st.pos[spec.ref] + NEXT_TO_DIST * np.asarray(spec.direction)
    return _pick(st, spec.obj, dest)


def make_expert(env: TabletopEnv, *, noise: float = 0.0, seed: int = 0) -> Callable[[dict], np.ndarray]:
    """A policy `obs -> action` for `env`'s current episode (it reads `env.state`, so reset may come later)."""
    rng = np.random.default_rng(seed)

    def policy(obs: dict) -> np.ndarray:
        assert env.state is not None and env.spec is not None, "reset the env before calling the expert"
        a = expert_action(env.state, env.spec)
        if noise > 0:
            a = a.copy()
            a[:2] += rng.normal(0.0, 0.01 * noise, 2)
            yaw = np.arctan2(a[4], a[3]) + rng.normal(0.0, 0.1 * noise)
            a[3:9] = make_action((0.0, 0.0), 0.0, yaw, 0.0)[3:9]
        return a

    return policy


def _pick(st: SimState, i: int, dest: np.ndarray | None) -> np.ndarray:
    x, y, z, yaw, _ = st.gripper
    g = np.array([x, y])
    if st.held == i:
        if dest is None:  # lift
            return make_action(g, Z_LIFT, yaw, 1.0)
        far = np.hypot(*(dest - g)) > 0.006
        if far and z < Z_TRAVEL - 0.005:  # rise before carrying, so the object clears the others
            return make_action(g, Z_TRAVEL, yaw, 1.0)
        return make_action(dest, Z_TRAVEL, yaw, 1.0 if far else 0.0)
    if st.held >= 0 or st.closed:  # wrong object or a missed grasp: open and rise, then start over
        return make_action(g, max(z, Z_CONTACT), yaw, 0.0)
    o = st.pos[i]
    # Cubes are grasped across two faces: turn to the nearest of the 4 face-aligned yaws.
    yaw_t = yaw if st.kind[i] == BALL else yaw + wrap(4 * (st.yaw[i] - yaw)) / 4
    dist = np.hypot(*(o - g))
    low = z < Z_TRAVEL - 0.01
    aligned = abs(wrap(yaw_t - yaw)) < 0.1 and (dist < 0.006 or (low and dist < 0.012))
    if not aligned:
        return make_action(o, Z_TRAVEL, yaw_t, 0.0)
    if z > 0.008:
        return make_action(o, 0.0, yaw_t, 0.0)  # descend
    return make_action(o, 0.0, yaw_t, 1.0)  # close


def _push(st: SimState, spec: TaskSpec) -> np.ndarray:
    x, y, z, yaw, _ = st.gripper
    g, o, p = np.array([x, y]), st.pos[spec.obj], st.pads[spec.pad]
    d = p - o
    dist = max(float(np.hypot(*d)), 1e-9)
    u = d / dist  # push direction
    r = GRIP_R + OBJ_R  # gripper-object centre distance at contact
    w = o - g
    wd = max(float(np.hypot(*w)), 1e-9)
    if not st.closed:  # push with the closed fist, from wherever the gripper is
        return make_action(g, max(z, Z_CONTACT), yaw, 1.0)
    if z < Z_CONTACT and wd < r + 0.03 and float(w @ u) / wd > np.cos(np.radians(25)):
        # In contact behind the object: aim just past the contact point on the object-pad line.
        return make_action(o - u * r + u * min(PUSH_STEP, dist), 0.0, yaw, 1.0)
    behind = o - u * (r + 0.012)
    gap = float(np.hypot(*(behind - g)))
    if gap < 0.01:
        return make_action(behind, 0.0, yaw, 1.0)  # descend behind the object
    if z < Z_TRAVEL - 0.005 and gap > 0.02:
        return make_action(g, Z_TRAVEL, yaw, 1.0)  # rise before moving around the object
    return make_action(behind, Z_TRAVEL, yaw, 1.0)
