"""A small 2-D tabletop: one gripper, coloured cubes and balls, target pads and a bowl (numpy only).

Usage::

    env = TabletopEnv(TabletopConfig(image_size=64))
    obs = env.reset(seed=3, task="push")          # {"pose": (10,), "images": {...}, "instruction", "task"}
    obs, done, info = env.step(action)            # action (10,): absolute target pose, see below
    info["success"]

Units are metres and radians; the table is the square [-h, h]^2 seen from above (x right, y away from the
viewer). The gripper state is (x, y, z, yaw, g) with g in [0, 1] (1 = closed, closed when g > 0.5).
Actions and the proprioceptive "pose" share one 10-D layout, for parity with real robots:
xyz + 6-D rotation (the first two columns of Rz(yaw), [r00, r10, r20, r01, r11, r21]) + gripper.
The env moves the gripper toward the commanded pose at a bounded speed per step.

Physics is kinematic: a closed gripper at z < Z_CONTACT pushes table objects as a disk (an open gripper's
fingers straddle objects); closing the open gripper low over an object (cubes: yaw aligned modulo 90
degrees) grasps it; opening releases it into the bowl, onto a cube beneath, or onto the table.

Task families (scene samplers, instructions, success tests) live in `foundry.sim.tasks`; `TabletopEnv`
composes the dynamics here with them and with `foundry.sim.render`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from foundry.sim.tasks import TaskSpec

# Geometry (metres). Cubes and balls share one footprint radius so contacts treat both as disks.
OBJ_R = 0.025  # cube half side / ball radius
CUBE_H = 2 * OBJ_R  # height of a cube (a stacked object rests this high)
GRIP_R = 0.012  # closed gripper contact radius
PAD_HALF = 0.035  # target pad half side
BOWL_R = 0.055
Z_MAX, Z_TRAVEL, Z_CONTACT = 0.1, 0.06, 0.03
GRASP_TOL, GRASP_YAW_TOL = 0.015, 0.3  # xy distance (m), cube yaw misalignment modulo 90 deg (rad)
TABLE, HELD, BOWL, STACKED = 0, 1, 2, 3  # where an object is
CUBE, BALL = 0, 1
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (235, 205, 30),
    "purple": (150, 60, 200),
    "orange": (245, 135, 25),
}
COLOR_NAMES = tuple(COLORS)
TASK_FAMILIES = ("push", "place_in_bowl", "stack", "place_next_to", "lift")  # see foundry.sim.tasks


@dataclasses.dataclass(frozen=True)
class TabletopConfig:
    image_size: int = 64  # square camera images (64-128 px)
    cameras: tuple[str, ...] = ("scene", "wrist")
    render: bool = True  # False: obs["images"] is {} (fast expert rollouts)
    max_steps: int = 120  # episode step limit
    num_distractors: int = 2  # objects not named by the instruction
    num_distractor_pads: int = 1  # extra target pads (push task: the colour must be read)
    table_half_extent: float = 0.2  # the table is [-h, h]^2 metres
    max_speed: float = 0.025  # xy metres per step
    max_z_speed: float = 0.025  # metres per step
    max_yaw_speed: float = 0.35  # radians per step
    gripper_speed: float = 0.4  # change of g per step (2 steps to close or open)
    tasks: tuple[str, ...] = ("push", "place_in_bowl", "stack", "place_next_to", "lift")
    supersample: int = 2  # render at k x size and box-filter down (anti-aliasing)

    def __post_init__(self):
        if not 32 <= self.image_size <= 256:
            raise ValueError(f"TabletopConfig.image_size={self.image_size}: use 32..256 (64-128 tested)")
        bad = [c for c in self.cameras if c not in ("scene", "wrist")]
        if bad:
            raise ValueError(f"TabletopConfig.cameras: unknown {bad}; choose from ('scene', 'wrist')")
        if unknown := [t for t in self.tasks if t not in TASK_FAMILIES]:
            raise ValueError(f"TabletopConfig.tasks: unknown {unknown}; choose from {TASK_FAMILIES}")
        if not 0 <= self.num_distractors <= len(COLORS) - 2:
            raise ValueError(f"TabletopConfig.num_distractors={self.num_distractors}: use 0..{len(COLORS) - 2}")


@dataclasses.dataclass
class SimState:
    """Everything that changes in an episode. N objects, P pads; float64 for exact replay."""

    gripper: np.ndarray  # (5,) x, y, z, yaw, g
    pos: np.ndarray  # (N, 2) object centres
    yaw: np.ndarray  # (N,) object yaw
    kind: np.ndarray  # (N,) CUBE | BALL
    color: np.ndarray  # (N,) index into COLOR_NAMES
    where: np.ndarray  # (N,) TABLE | HELD | BOWL | STACKED
    on: np.ndarray  # (N,) index of the supporting cube when STACKED, else -1
    pads: np.ndarray  # (P, 2) pad centres
    pad_color: np.ndarray  # (P,)
    bowl: np.ndarray | None  # (2,) bowl centre, or None when the scene has no bowl
    held: int = -1  # index of the held object
    held_yaw: float = 0.0  # held object's yaw relative to the gripper
    steps: int = 0

    @property
    def closed(self) -> bool:
        return bool(self.gripper[4] > 0.5)

    def copy(self) -> SimState:
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SimState(**{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in arrays.items()})


def wrap(a: float) -> float:
    """Angle to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def pose_vector(gripper: np.ndarray) -> np.ndarray:
    """Gripper state (5,) -> (10,) float32 pose: xyz, 6-D rotation of Rz(yaw), g."""
    x, y, z, yaw, g = gripper
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([x, y, z, c, s, 0.0, -s, c, 0.0, g], dtype=np.float32)


def make_action(xy, z: float, yaw: float, grip: float) -> np.ndarray:
    """Target pose -> (10,) float32 action (same layout as `pose_vector`)."""
    return pose_vector(np.array([xy[0], xy[1], z, yaw, grip], dtype=np.float64))


def yaw_from_rot6d(r: np.ndarray) -> float:
    """Yaw of a (possibly unnormalised) 6-D rotation [r00, r10, r20, r01, r11, r21]: the angle of the
    best-fitting rotation about z, atan2(r10 - r01, r00 + r11)."""
    return float(np.arctan2(r[1] - r[3], r[0] + r[4]))


def step_state(st: SimState, action: np.ndarray, cfg: TabletopConfig) -> None:
    """Advance `st` in place by one step toward the commanded pose `action` (10,)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (10,) or not np.all(np.isfinite(a)):
        raise ValueError(f"action must be a finite (10,) vector (xyz, rot6d, gripper), got shape {a.shape}")
    h = cfg.table_half_extent
    gr = st.gripper
    d = np.clip(a[:2], -h, h) - gr[:2]
    n = float(np.hypot(d[0], d[1]))
    gr[:2] += d * min(1.0, cfg.max_speed / n) if n > 0 else 0.0
    gr[2] += np.clip(np.clip(a[2], 0.0, Z_MAX) - gr[2], -cfg.max_z_speed, cfg.max_z_speed)
    gr[3] = wrap(gr[3] + np.clip(wrap(yaw_from_rot6d(a[3:9]) - gr[3]), -cfg.max_yaw_speed, cfg.max_yaw_speed))
    was_closed = st.closed
    gr[4] += np.clip(np.clip(a[9], 0.0, 1.0) - gr[4], -cfg.gripper_speed, cfg.gripper_speed)
    if st.closed and not was_closed:
        _grasp(st)
    elif was_closed and not st.closed and st.held >= 0:
        _release(st)
    if st.held >= 0:
        st.pos[st.held] = gr[:2]
        st.yaw[st.held] = gr[3] + st.held_yaw
    elif st.closed and gr[2] < Z_CONTACT:
        _push_out(st, gr[:2], GRIP_R + OBJ_R)
    _separate(st, h)
    for i in np.flatnonzero(st.where == STACKED):  # stacked objects ride on their (possibly pushed) base
        st.pos[i] = st.pos[st.on[i]]
    st.steps += 1


def _free(st: SimState) -> np.ndarray:
    """(N,) bool: objects nothing is stacked on and that are not held or in the bowl."""
    covered = np.zeros(len(st.pos), dtype=bool)
    covered[st.on[st.on >= 0]] = True
    return ~covered & ((st.where == TABLE) | (st.where == STACKED))


def _grasp(st: SimState) -> None:
    x, y, z, yaw, _ = st.gripper
    best, best_d = -1, GRASP_TOL
    for i in np.flatnonzero(_free(st)):
        height = CUBE_H if st.where[i] == STACKED else 0.0
        dist = float(np.hypot(st.pos[i, 0] - x, st.pos[i, 1] - y))
        misalign = abs(wrap(4 * (st.yaw[i] - yaw))) / 4  # cube symmetry: modulo 90 degrees
        if z <= height + 0.02 and dist < best_d and (st.kind[i] == BALL or misalign < GRASP_YAW_TOL):
            best, best_d = int(i), dist
    if best >= 0:
        st.held, st.where[best], st.on[best] = best, HELD, -1
        st.held_yaw = float(st.yaw[best] - yaw)


def _release(st: SimState) -> None:
    i, p = st.held, st.pos[st.held]
    st.held = -1
    if st.bowl is not None and np.hypot(*(p - st.bowl)) < BOWL_R - 0.5 * OBJ_R:
        st.where[i] = BOWL
        return
    bases = [j for j in np.flatnonzero(_free(st) & (st.kind == CUBE)) if j != i]
    dists = [float(np.hypot(*(p - st.pos[j]))) for j in bases]
    if dists and min(dists) < 1.2 * OBJ_R:
        st.where[i], st.on[i] = STACKED, bases[int(np.argmin(dists))]
    else:
        st.where[i] = TABLE


def _push_out(st: SimState, c: np.ndarray, r: float) -> None:
    """Move table objects overlapping the disk (c, r) out along the contact normal."""
    for i in np.flatnonzero(st.where == TABLE):
        d = st.pos[i] - c
        n = float(np.hypot(d[0], d[1]))
        if n < r:
            st.pos[i] = c + (d / n if n > 1e-9 else np.array([1.0, 0.0])) * r


def _separate(st: SimState, h: float, iters: int = 3) -> None:
    """Resolve overlaps between table objects (each moves half the overlap), keep them on the table."""
    idx = np.flatnonzero(st.where == TABLE)
    for _ in range(iters):
        moved = False
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                d = st.pos[j] - st.pos[i]
                n = float(np.hypot(d[0], d[1]))
                if n < 2 * OBJ_R:
                    u = d / n if n > 1e-9 else np.array([1.0, 0.0])
                    st.pos[i] -= u * (2 * OBJ_R - n) / 2
                    st.pos[j] += u * (2 * OBJ_R - n) / 2
                    moved = True
        if not moved:
            break
    st.pos[idx] = np.clip(st.pos[idx], -h + OBJ_R, h - OBJ_R)


class TabletopEnv:
    """Seeded episodes: `reset(seed=, task=)` draws a scene from np.random.default_rng(seed) alone, and
    `step` is deterministic, so the same seed and actions give identical observations."""

    def __init__(self, cfg: TabletopConfig = TabletopConfig()):
        self.cfg = cfg
        self.state: SimState | None = None
        self.spec: TaskSpec | None = None

    # tasks and render build on this module's geometry and state, so they are imported at call time.

    def reset(self, *, seed: int, task: str | None = None) -> dict:
        from foundry.sim.tasks import sample_task

        rng = np.random.default_rng(seed)
        family = task if task is not None else self.cfg.tasks[int(rng.integers(len(self.cfg.tasks)))]
        if family not in TASK_FAMILIES:
            raise ValueError(f"TabletopEnv.reset(task={family!r}): choose from {TASK_FAMILIES}")
        self.state, self.spec = sample_task(rng, self.cfg, family)
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[dict, bool, dict]:
        """action (10,) absolute target pose -> (obs, done, info); done on success or at max_steps."""
        from foundry.sim.tasks import is_success

        if self.state is None or self.spec is None:
            raise RuntimeError("TabletopEnv.step before reset(seed=...)")
        step_state(self.state, action, self.cfg)
        success = is_success(self.state, self.spec)
        done = success or self.state.steps >= self.cfg.max_steps
        return self.observe(), done, {"success": success, "steps": self.state.steps}

    def observe(self) -> dict:
        from foundry.sim.render import render_cameras

        assert self.state is not None and self.spec is not None
        images = render_cameras(self.state, self.cfg) if self.cfg.render and self.cfg.cameras else {}
        return {"pose": pose_vector(self.state.gripper), "images": images,
                "instruction": self.spec.instruction, "task": self.spec.family}  # fmt: skip
