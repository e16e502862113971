"""Cameras: shapes and dtypes, scenes that differ render differently, colours land where objects are."""

import dataclasses

import numpy as np
import pytest

from foundry.sim.render import camera_matrix, render_camera
from foundry.sim.tabletop import COLOR_NAMES, COLORS, TabletopConfig, TabletopEnv, make_action


@pytest.mark.parametrize("size", [64, 96, 128])
def test_shapes_and_dtypes(size):
    obs = TabletopEnv(TabletopConfig(image_size=size)).reset(seed=0)
    assert set(obs["images"]) == {"scene", "wrist"}
    for img in obs["images"].values():
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 5  # not blank


def test_render_off_and_camera_subset():
    assert TabletopEnv(TabletopConfig(render=False)).reset(seed=0)["images"] == {}
    obs = TabletopEnv(TabletopConfig(cameras=("wrist",))).reset(seed=0)
    assert set(obs["images"]) == {"wrist"}
    with pytest.raises(ValueError, match="cameras"):
        TabletopConfig(cameras=("top",))


def test_different_scenes_and_gripper_states_render_differently():
    env = TabletopEnv(TabletopConfig())
    a, b = env.reset(seed=0)["images"], env.reset(seed=1)["images"]
    for cam in ("scene", "wrist"):
        assert np.abs(a[cam].astype(int) - b[cam].astype(int)).mean() > 5
    obs = env.reset(seed=0)
    pose = env.state.gripper.copy()
    closed = obs
    for _ in range(2):
        closed, _, _ = env.step(make_action(pose[:2], pose[2], pose[3], 1.0))
    assert not np.array_equal(obs["images"]["wrist"], closed["images"]["wrist"])  # open vs closed fingers
    assert not np.array_equal(obs["images"]["scene"], closed["images"]["scene"])
    turned, _, _ = env.step(make_action(pose[:2], pose[2], pose[3] + 0.3, 1.0))
    assert not np.array_equal(closed["images"]["wrist"], turned["images"]["wrist"])  # egocentric: rotates


def test_objects_show_their_colour_where_they_are():
    cfg = dataclasses.replace(TabletopConfig(), image_size=128)
    env = TabletopEnv(cfg)
    env.reset(seed=3, task="push")
    st = env.state
    st.gripper[:2] = [-0.19, -0.19]  # out of the way
    img = render_camera(st, cfg, "scene")
    m = camera_matrix(st, cfg, "scene", cfg.image_size)
    for i in range(len(st.pos)):
        u, v = (m[:, :2] @ st.pos[i] + m[:, 2]).round().astype(int)
        want = np.array(COLORS[COLOR_NAMES[st.color[i]]])
        assert np.abs(img[v, u].astype(int) - want).max() < 30, (i, img[v, u], want)


def test_wrist_view_is_egocentric():
    """An object straight ahead of the gripper appears straight above the image centre, whatever the yaw."""
    cfg = TabletopConfig(image_size=64, cameras=("wrist",))
    env = TabletopEnv(cfg)
    env.reset(seed=0, task="lift")
    st = env.state
    for yaw in (0.0, 1.0, -2.5):
        st.gripper[:] = [0.0, 0.0, 0.0, yaw, 0.0]
        ahead = 0.06 * np.array([np.cos(yaw), np.sin(yaw)])
        m = camera_matrix(st, cfg, "wrist", 64)
        u, v = m[:, :2] @ ahead + m[:, 2]
        assert u == pytest.approx(32) and v == pytest.approx(32 - 0.06 * 64 / 0.18)
