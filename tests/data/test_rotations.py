"""Rotations and poses: 6-D <-> matrix round trips, relative/compose inverses, numpy == torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foundry.data.rotations import (
    compose_pose,
    invert_transform,
    matrix_to_pose,
    matrix_to_rot6d,
    pose_to_matrix,
    relative_pose,
    rot6d_to_matrix,
)

angle = st.floats(-np.pi, np.pi, allow_nan=False)
coord = st.floats(-10, 10, allow_nan=False)
scale = st.floats(0.1, 10, allow_nan=False)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll): every rotation, without filtering degenerate draws."""
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ ry @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


poses = st.builds(
    lambda xyz, angles, grip: np.array([*xyz, *matrix_to_rot6d(rotation(*angles)), grip]),
    st.tuples(coord, coord, coord),
    st.tuples(angle, angle, angle),
    st.floats(0, 1),
)


@settings(max_examples=100, deadline=None)
@given(st.tuples(angle, angle, angle), scale, scale, coord)
def test_rot6d_gram_schmidt_recovers_the_rotation(angles, s1, s2, shear):
    m = rotation(*angles)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(m)), m, atol=1e-12)
    # Gram-Schmidt: scaling the columns and adding column 0 to column 1 change nothing.
    r6 = np.concatenate([s1 * m[:, 0], s2 * m[:, 1] + shear * m[:, 0]])
    got = rot6d_to_matrix(r6)
    np.testing.assert_allclose(got, m, atol=1e-9)
    np.testing.assert_allclose(got.T @ got, np.eye(3), atol=1e-12)
    assert np.linalg.det(got) == pytest.approx(1.0, abs=1e-12)
    # The 6-D layout is the first two columns, column by column.
    np.testing.assert_array_equal(matrix_to_rot6d(m), [m[0, 0], m[1, 0], m[2, 0], m[0, 1], m[1, 1], m[2, 1]])


@settings(max_examples=100, deadline=None)
@given(st.lists(poses, min_size=3, max_size=3), poses)
def test_relative_and_compose_are_inverse(pose_list, ref):
    pose = np.stack(pose_list)  # (3, 10)
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
    # World frame: the translation is the plain difference, the rotation the same relative rotation.
    delta = relative_pose(ref, pose, "world")
    np.testing.assert_allclose(delta[:, :3], pose[:, :3] - ref[:3], atol=1e-12)
    np.testing.assert_allclose(delta[:, 3:], rel[:, 3:], atol=1e-12)
    np.testing.assert_allclose(compose_pose(ref, delta, "world"), pose, atol=1e-9)
    with pytest.raises(ValueError, match="frame 'base'"):
        relative_pose(ref, pose, "base")


def test_torch_matches_numpy_and_has_finite_gradients():
    raw = np.random.default_rng(0).normal(size=(5, 10))
    pose = np.concatenate([raw[:, :3], matrix_to_rot6d(rot6d_to_matrix(raw[:, 3:9])), raw[:, 9:]], -1)
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
