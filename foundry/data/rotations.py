"""Poses as xyz + 6-D rotation (+ extra columns such as a gripper), and poses relative to a reference.

The 6-D rotation (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
CVPR 2019) is the first two COLUMNS of the rotation matrix, flattened column by column:
`[r00, r10, r20, r01, r11, r21]`. A pose vector is `[x, y, z, *rot6d, *extra]` (>= 9 columns); the
extra columns (a gripper opening) are not a rigid transform and pass through relative/compose unchanged.

One implementation serves numpy (data pipeline, statistics) and torch (the policy at inference, inside
autograd): the functions use only indexing, arithmetic, `@` and a stack/concatenate picked from the
input's library, and never import torch unless given a tensor.

Usage:

    R = rot6d_to_matrix(r6)                       # (..., 6) -> (..., 3, 3), Gram-Schmidt
    r6 = matrix_to_rot6d(R)                       # (..., 3, 3) -> (..., 6)
    T = pose_to_matrix(pose)                      # (..., >=9) -> (..., 4, 4)
    rel = relative_pose(current, chunk)           # current^-1 @ chunk, e.g. (10,) and (F, 10) -> (F, 10)
    chunk_again = compose_pose(current, rel)      # current @ rel
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

# Added to squared norms in Gram-Schmidt so degenerate (zero or parallel) columns give zeros, not NaN.
EPS = 1e-20


def array_module(x: Any) -> ModuleType:
    """`numpy` for numpy arrays, `torch` for tensors (imported only then)."""
    if isinstance(x, np.ndarray | np.generic):
        return np
    import torch

    if isinstance(x, torch.Tensor):
        return torch
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def _unit(v: Any, xp: ModuleType) -> Any:
    return v / xp.sqrt((v * v).sum(-1) + EPS)[..., None]


def _cross(a: Any, b: Any, xp: ModuleType) -> Any:
    a0, a1, a2, b0, b1, b2 = a[..., 0], a[..., 1], a[..., 2], b[..., 0], b[..., 1], b[..., 2]
    return xp.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def rot6d_to_matrix(r6: Any) -> Any:
    """(..., 6) -> (..., 3, 3) rotation: Gram-Schmidt on the two columns, third = cross product."""
    xp = array_module(r6)
    b1 = _unit(r6[..., 0:3], xp)
    a2 = r6[..., 3:6]
    b2 = _unit(a2 - (b1 * a2).sum(-1)[..., None] * b1, xp)
    return xp.stack([b1, b2, _cross(b1, b2, xp)], -1)  # columns


def matrix_to_rot6d(m: Any) -> Any:
    """(..., 3, 3) -> (..., 6): the first two columns, `[r00, r10, r20, r01, r11, r21]`."""
    return m[..., :, :2].swapaxes(-1, -2).reshape(*m.shape[:-2], 6)


def pose_to_matrix(pose: Any) -> Any:
    """(..., >=9) xyz + rot6d (extra columns ignored) -> (..., 4, 4) homogeneous transform."""
    xp = array_module(pose)
    top = xp.concatenate([rot6d_to_matrix(pose[..., 3:9]), pose[..., :3, None]], -1)  # (..., 3, 4)
    zero = top[..., :1, :1] * 0  # (..., 1, 1), same dtype/device (and graph) as the input
    return xp.concatenate([top, xp.concatenate([zero, zero, zero, zero + 1], -1)], -2)


def matrix_to_pose(m: Any) -> Any:
    """(..., 4, 4) -> (..., 9) xyz + rot6d."""
    xp = array_module(m)
    return xp.concatenate([m[..., :3, 3], matrix_to_rot6d(m[..., :3, :3])], -1)


def invert_transform(m: Any) -> Any:
    """Inverse of a rigid (..., 4, 4) transform: [R^T, -R^T t]."""
    xp = array_module(m)
    rt = m[..., :3, :3].swapaxes(-1, -2)
    return xp.concatenate([xp.concatenate([rt, -(rt @ m[..., :3, 3:])], -1), m[..., 3:, :]], -2)


FRAMES = ("reference", "world")  # where a relative pose's translation is expressed


def relative_pose(reference: Any, pose: Any, frame: str = "reference") -> Any:
    """`pose` relative to `reference` as a pose vector; extra columns are `pose`'s, unchanged.

    frame "reference": `reference^-1 @ pose`, the translation in the reference's (end effector's) axes;
    "world": the translation `pose.xyz - reference.xyz` in the world (robot base) axes, the rotation still
    `R_reference^-1 @ R_pose`. reference: (..., >=9), pose: (..., D) with D >= 9, broadcast -> (..., D).
    """
    ref = pose_to_matrix(reference)
    rel = invert_transform(ref) @ pose_to_matrix(pose)
    out = matrix_to_pose(rel)
    if _check_frame(frame) == "world":
        xyz = pose[..., :3] - reference[..., :3] + 0 * out[..., :3]  # (+ 0 * out: broadcast to out's shape)
        out = array_module(out).concatenate([xyz, out[..., 3:9]], -1)
    return _with_extra(out, pose)


def compose_pose(reference: Any, relative: Any, frame: str = "reference") -> Any:
    """`relative` (from `relative_pose` with the same `frame`) back to an absolute pose; extra columns are
    `relative`'s, unchanged. reference: (..., >=9), relative: (..., D) -> (..., D)."""
    out = matrix_to_pose(pose_to_matrix(reference) @ pose_to_matrix(relative))
    if _check_frame(frame) == "world":
        xyz = reference[..., :3] + relative[..., :3] + 0 * out[..., :3]
        out = array_module(out).concatenate([xyz, out[..., 3:9]], -1)
    return _with_extra(out, relative)


def _check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise ValueError(f"relative pose frame {frame!r}: choose from {FRAMES}")
    return frame


def _with_extra(pose9: Any, source: Any) -> Any:
    xp = array_module(pose9)
    extra = source[..., 9:]
    if extra.shape[-1] == 0:
        return pose9
    return xp.concatenate([pose9, xp.broadcast_to(extra, (*pose9.shape[:-1], extra.shape[-1]))], -1)
