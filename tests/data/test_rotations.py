"""Rotations and poses: 6-D <-> matrix round trips, relative/compose inverses, numpy == torch."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from foundry.data.rotations import (
    compose_pose,
    invert_transform,
    matrix_to_pose,
    matrix_to_rot6d,
    pose_to_matrix,
    relative_pose,
    rot6d_to_matrix,
)

finite = st.floats(-10, 10, allow_nan=False, width=64)


def well_posed(r6: np.ndarray) -> bool:
    """Columns long enough and far enough from parallel for Gram-Schmidt to be well conditioned."""
    a, b = r6[..., :3], r6[..., 3:6]
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return bool(
        (np.linalg.norm(np.cross(a, b), axis=-1) > 0.1 * na * nb).all() and (na > 0.1).all() and (nb > 0.1).all()
    )


def pose_of(raw: np.ndarray) -> np.ndarray:
    """A valid pose (orthonormal rot6d) from raw (..., 10) numbers."""
    return np.concatenate([raw[..., :3], matrix_to_rot6d(rot6d_to_matrix(raw[..., 3:9])), raw[..., 9:]], -1)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4, 6), elements=finite))
def test_rot6d_gives_rotations_and_round_trips(r6):
    assume(well_posed(r6))
    m = rot6d_to_matrix(r6)
    np.testing.assert_allclose(m.swapaxes(-1, -2) @ m, np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(m)), m, atol=1e-12)
    # The 6-D layout is the first two columns, column by column.
    np.testing.assert_array_equal(
        matrix_to_rot6d(m)[0], [m[0, 0, 0], m[0, 1, 0], m[0, 2, 0], m[0, 0, 1], m[0, 1, 1], m[0, 2, 1]]
    )


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 10), elements=finite), arrays(np.float64, (10,), elements=finite))
def test_relative_and_compose_are_inverse(raw, raw_ref):
    assume(well_posed(raw[:, 3:9]) and well_posed(raw_ref[3:9]))
    pose, ref = pose_of(raw), pose_of(raw_ref)
    np.testing.assert_allclose(matrix_to_pose(pose_to_matrix(pose)), pose[:, :9], atol=1e-12)
    rel = relative_pose(ref, pose)  # (10,) against (3, 10) broadcasts
    assert rel.shape == (3, 10)
    np.testing.assert_array_equal(rel[:, 9], pose[:, 9])  # the gripper passes through
    np.testing.assert_allclose(compose_pose(ref, rel), pose, atol=1e-9)
    np.testing.assert_allclose(relative_pose(pose, compose_pose(pose, rel)), rel, atol=1e-9)
    identity = [0, 0, 0, 1, 0, 0, 0, 1, 0]
    np.testing.assert_allclose(relative_pose(ref, ref)[:9], identity, atol=1e-9)
    m = pose_to_matrix(ref)
    np.testing.assert_allclose(invert_transform(m) @ m, np.eye(4), atol=1e-9)


def test_torch_matches_numpy_and_has_finite_gradients():
    raw = np.random.default_rng(0).normal(size=(5, 10))
    pose = pose_of(raw)
    expected = relative_pose(pose[0], pose)
    t = torch.tensor(pose, requires_grad=True)
    got = relative_pose(t[0], t)
    torch.testing.assert_close(got.detach(), torch.from_numpy(expected), rtol=0, atol=1e-12)
    got.sum().backward()
    assert torch.isfinite(t.grad).all()
    r32 = rot6d_to_matrix(torch.tensor(raw[:, 3:9], dtype=torch.float32))
    assert r32.dtype == torch.float32
    # Degenerate input (zero columns): zeros, not NaN, in values and gradients.
    z = torch.zeros(6, requires_grad=True)
    rot6d_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all() and not rot6d_to_matrix(np.zeros(6)).any()
