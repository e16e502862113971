"""Task families of the tabletop: a seeded scene sampler, instruction templates (canonical + paraphrases)
and a success test on the state for each.

Usage::

    st, spec = sample_task(np.random.default_rng(0), TabletopConfig(), "stack")
    spec.instruction, spec.paraphrases     # "stack the yellow block on the red block", (4 paraphrases)
    is_success(st, spec)                   # False until the yellow block rests on the red one

Families (`TASK_FAMILIES`, names defined next to `TabletopConfig`, which validates them):
  push           "push the red block onto the green target"   object centre within the pad
  place_in_bowl  "pick up the blue ball and place it in the bowl" object released into the bowl
  stack          "stack the yellow block on the red block"      object released onto that cube
  place_next_to  "place the red ball to the left of the blue block"  released ~8 cm in that direction
  lift           "pick up the green block and lift it"           object held with the gripper at z >= 7 cm
"""

from __future__ import annotations

import dataclasses

import numpy as np

from foundry.sim.tabletop import (
    BALL,
    BOWL,
    BOWL_R,
    COLOR_NAMES,
    COLORS,
    CUBE,
    GRIP_R,
    OBJ_R,
    PAD_HALF,
    STACKED,
    TABLE,
    TASK_FAMILIES,
    Z_TRAVEL,
    SimState,
    TabletopConfig,
)

NOUNS = {CUBE: ("block", "cube"), BALL: ("ball", "sphere")}
DIRECTIONS = {"to the left of": (-1.0, 0.0), "to the right of": (1.0, 0.0), "behind": (0.0, 1.0),
              "in front of": (0.0, -1.0)}  # fmt: skip
NEXT_TO_DIST = 0.085  # where the expert places an object "next to" another (success: 0.045..0.13 along)
# First template = canonical instruction ("original"); the rest are paraphrases ("randomized").
TEMPLATES = {
    "push": ("push the {obj} onto the {pad} target", "slide the {obj} onto the {pad} pad",
             "push the {obj} over to the {pad} square", "move the {obj} to the {pad} target by pushing it",
             "shove the {obj} onto the {pad} marker"),
    "place_in_bowl": ("pick up the {obj} and place it in the bowl", "put the {obj} in the bowl",
                      "drop the {obj} into the bowl", "grab the {obj} and put it in the bowl",
                      "place the {obj} inside the bowl"),
    "stack": ("stack the {obj} on the {ref}", "put the {obj} on top of the {ref}", "place the {obj} onto the {ref}",
              "pick up the {obj} and stack it on the {ref}", "set the {obj} on the {ref}"),
    "place_next_to": ("place the {obj} {rel} the {ref}", "put the {obj} {rel} the {ref}",
                      "move the {obj} so it is {rel} the {ref}", "pick up the {obj} and set it down {rel} the {ref}",
                      "the {obj} goes {rel} the {ref}"),
    "lift": ("pick up the {obj} and lift it", "lift the {obj}", "raise the {obj} up",
             "grab the {obj} and hold it up high", "pick the {obj} up off the table"),
}  # fmt: skip
assert tuple(TEMPLATES) == TASK_FAMILIES


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    family: str
    obj: int  # the object the instruction names first
    ref: int = -1  # stack base / place_next_to reference object
    pad: int = -1  # push target pad
    direction: tuple[float, float] = (0.0, 0.0)  # place_next_to: unit vector on the table
    instruction: str = ""  # canonical
    paraphrases: tuple[str, ...] = ()


def is_success(st: SimState, spec: TaskSpec) -> bool:
    i, f = spec.obj, spec.family
    if f == "push":
        return bool(st.where[i] == TABLE and np.hypot(*(st.pos[i] - st.pads[spec.pad])) < PAD_HALF)
    if f == "place_in_bowl":
        return bool(st.where[i] == BOWL)
    if f == "stack":
        return bool(st.where[i] == STACKED and st.on[i] == spec.ref)
    if f == "place_next_to":
        rel, (dx, dy) = st.pos[i] - st.pos[spec.ref], spec.direction
        along, across = rel[0] * dx + rel[1] * dy, abs(rel[1] * dx - rel[0] * dy)
        return bool(st.where[i] == TABLE and 0.045 <= along <= 0.13 and across <= 0.04)
    if f == "lift":
        return bool(st.held == i and st.gripper[2] >= 0.07)
    raise ValueError(f"unknown task family {f!r}; choose from {TASK_FAMILIES}")


def sample_task(rng: np.random.Generator, cfg: TabletopConfig, family: str) -> tuple[SimState, TaskSpec]:
    """A random scene for `family` (all randomness from `rng`) and the task on it."""
    h = cfg.table_half_extent
    placed: list[tuple[np.ndarray, float]] = []

    def place(r: float, ok=lambda p: True) -> np.ndarray:
        for _ in range(5000):
            p = rng.uniform(-h + r + 0.01, h - r - 0.01, 2)
            if ok(p) and all(np.hypot(*(p - q)) > r + rq + 0.01 for q, rq in placed):
                placed.append((p, r))
                return p
        raise RuntimeError(f"sample_task({family!r}): no room on a {2 * h} m table; fewer distractors?")

    n_main = 2 if family in ("stack", "place_next_to") else 1
    n = n_main + cfg.num_distractors
    color = rng.permutation(len(COLORS))[:n]
    kind = rng.integers(0, 2, n)
    if family == "stack":
        kind[1] = CUBE  # the base must be a cube
    n_pads = cfg.num_distractor_pads + (family == "push")
    pad_color = rng.permutation(len(COLORS))[:n_pads]
    bowl = place(BOWL_R) if family == "place_in_bowl" or rng.random() < 0.5 else None
    pads = np.array([place(PAD_HALF * 1.3) for _ in range(n_pads)]).reshape(n_pads, 2)
    pos = np.zeros((n, 2))
    rel, direction = "", (0.0, 0.0)
    if family == "push":  # the pad 10-25 cm away and room behind the object for the gripper to push from
        behind_ok = lambda p, u: np.all(np.abs(p - u * (GRIP_R + OBJ_R + 0.015)) < h - 0.01)
        pad_ok = lambda p, d: 0.1 < np.hypot(*d) < 0.25 and behind_ok(p, d / np.hypot(*d))
        pos[0] = place(1.4 * OBJ_R, lambda p: pad_ok(p, pads[0] - p))
    elif family == "place_next_to":  # room at the destination
        rel = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        direction = DIRECTIONS[rel]
        dest = lambda p: p + NEXT_TO_DIST * np.array(direction)
        inside = lambda p: (
            np.all(np.abs(dest(p)) < h - 2 * OBJ_R)
            and all(np.hypot(*(dest(p) - q)) > rq + 2 * OBJ_R for q, rq in placed)
        )
        pos[1] = place(1.4 * OBJ_R, inside)
        placed.append((dest(pos[1]), 1.4 * OBJ_R))
    for i in range(n):
        if not (family == "push" and i == 0) and not (family == "place_next_to" and i == 1):
            pos[i] = place(1.4 * OBJ_R)
    yaw = np.where(kind == CUBE, rng.uniform(-np.pi / 4, np.pi / 4, n), 0.0)
    gripper = np.array([*rng.uniform(-h, h, 2), Z_TRAVEL, rng.uniform(-np.pi, np.pi), 0.0])
    st = SimState(gripper, pos, yaw, kind, color, np.full(n, TABLE), np.full(n, -1), pads, pad_color, bowl)

    def fill(template: str, canonical: bool) -> str:
        name = lambda i: f"{COLOR_NAMES[color[i]]} {NOUNS[kind[i]][0 if canonical else rng.integers(2)]}"
        pad = COLOR_NAMES[pad_color[0]] if family == "push" else ""
        return template.format(obj=name(0), ref=name(1) if n_main == 2 else "", pad=pad, rel=rel)

    temps = TEMPLATES[family]
    paraphrases = [fill(t, False) for t in temps[1:]]
    order = rng.permutation(len(paraphrases))
    spec = TaskSpec(family, 0, 1 if n_main == 2 else -1, 0 if family == "push" else -1, direction,
                    fill(temps[0], True), tuple(paraphrases[k] for k in order))  # fmt: skip
    return st, spec
