"""Cameras of the tabletop, drawn with PIL: a fixed top-down "scene" view of the whole table and an
egocentric "wrist" view centred on the gripper and rotated with its yaw (gripper forward = image up).

Usage::

    images = render_cameras(env.state, cfg)           # {"scene": (S, S, 3) uint8, "wrist": (S, S, 3) uint8}
    img = render_camera(env.state, cfg, "wrist")       # one camera

Both cameras share one drawing routine over a world -> pixel affine map, so what differs is only the map.
Cubes are squares and balls are discs in six saturated colours; target pads are squares outlined in their
colour on a pale tint; the bowl is a white disc with a grey rim. The gripper is two dark fingers whose gap
shows open (wide) / closed (narrow); things higher up (the gripper, a held object, a stacked object) are
drawn larger, and the wrist camera sees a wider patch of table the higher the gripper is.
Drawing happens at `cfg.supersample` x the image size and is box-filtered down, so 64 px shapes stay legible.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from foundry.sim.tabletop import (
    BALL,
    BOWL,
    BOWL_R,
    COLOR_NAMES,
    COLORS,
    HELD,
    OBJ_R,
    PAD_HALF,
    STACKED,
    TABLE,
    SimState,
    TabletopConfig,
)

FLOOR_RGB, TABLE_RGB = (55, 55, 65), (200, 185, 155)
BOWL_RIM_RGB, BOWL_RGB = (120, 120, 135), (240, 240, 245)
FINGER_RGB, PALM_RGB = (30, 30, 30), (95, 95, 105)
WRIST_SPAN = 0.18  # metres across the wrist image with the gripper at z = 0


def render_cameras(st: SimState, cfg: TabletopConfig) -> dict[str, np.ndarray]:
    """All of `cfg.cameras` -> {name: (S, S, 3) uint8}."""
    return {cam: render_camera(st, cfg, cam) for cam in cfg.cameras}


def camera_matrix(st: SimState, cfg: TabletopConfig, camera: str, size: int) -> np.ndarray:
    """(2, 3) affine map from table metres (x, y, 1) to pixel (u, v) for an image of `size` px."""
    if camera == "scene":
        scale = size / (2 * cfg.table_half_extent + 0.02)  # 1 cm of floor around the table
        return np.array([[scale, 0.0, size / 2], [0.0, -scale, size / 2]])
    if camera == "wrist":
        x, y, z, yaw, _ = st.gripper
        scale = size / (WRIST_SPAN * (1 + 4 * z))
        c, s = np.cos(yaw), np.sin(yaw)
        # u grows along the gripper's right (s, -c), v grows against its forward (c, s).
        return np.array(
            [[scale * s, -scale * c, size / 2 - scale * (x * s - y * c)],
             [-scale * c, -scale * s, size / 2 + scale * (x * c + y * s)]]
        )  # fmt: skip
    raise ValueError(f"unknown camera {camera!r}; choose from ('scene', 'wrist')")


def render_camera(st: SimState, cfg: TabletopConfig, camera: str) -> np.ndarray:
    """One camera image, (S, S, 3) uint8 with S = cfg.image_size."""
    k = cfg.supersample
    size = cfg.image_size * k
    m = camera_matrix(st, cfg, camera, size)
    scale = float(np.hypot(m[0, 0], m[1, 0]))  # pixels per metre
    img = Image.new("RGB", (size, size), FLOOR_RGB)
    draw = ImageDraw.Draw(img)
    px = lambda pts: [tuple(p) for p in (np.asarray(pts) @ m[:, :2].T + m[:, 2]).tolist()]
    h = cfg.table_half_extent
    draw.polygon(px([(-h, -h), (h, -h), (h, h), (-h, h)]), fill=TABLE_RGB)
    for p, ci in zip(st.pads, st.pad_color):
        rgb = COLORS[COLOR_NAMES[ci]]
        tint = tuple((np.array(rgb) + 2 * np.array(TABLE_RGB)) // 3)
        draw.polygon(px(_square(p, PAD_HALF, 0.0)), fill=tint, outline=rgb, width=max(1, round(0.008 * scale)))
    if st.bowl is not None:
        _disc(draw, px([st.bowl])[0], BOWL_R * scale, BOWL_RIM_RGB)
        _disc(draw, px([st.bowl])[0], (BOWL_R - 0.01) * scale, BOWL_RGB)
    z = float(st.gripper[2])
    grow = {TABLE: 1.0, BOWL: 0.9, STACKED: 1.15, HELD: 1.0 + 3 * z}
    for where in (TABLE, BOWL, STACKED, HELD):  # bottom to top
        for i in np.flatnonzero(st.where == where):
            rgb = COLORS[COLOR_NAMES[st.color[i]]]
            dark = tuple(c // 2 for c in rgb)
            r = OBJ_R * grow[where]
            if st.kind[i] == BALL:
                _disc(draw, px([st.pos[i]])[0], r * scale, rgb, outline=dark, width=max(1, k))
            else:
                draw.polygon(px(_square(st.pos[i], r, st.yaw[i])), fill=rgb, outline=dark, width=max(1, k))
    _gripper(draw, st, px, 1 + 4 * z if camera == "wrist" else 1 + 3 * z, scale)
    if k > 1:
        img = img.reduce(k)
    return np.asarray(img)


def _square(c: np.ndarray, half: float, yaw: float) -> np.ndarray:
    """(4, 2) corners of a square of half side `half` centred at c, rotated by yaw."""
    co, si = np.cos(yaw), np.sin(yaw)
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half
    return corners @ np.array([[co, si], [-si, co]]) + c


def _disc(draw: ImageDraw.ImageDraw, c, r: float, fill, outline=None, width: int = 1) -> None:
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill, outline=outline, width=width)


def _gripper(draw: ImageDraw.ImageDraw, st: SimState, px, grow: float, scale: float) -> None:
    """Two fingers across the gripper's lateral axis; their gap is the opening (closed: narrow)."""
    x, y, _, yaw, g = st.gripper
    fwd, left = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    gap = 0.008 + (1 - g) * (OBJ_R + 0.002)  # half gap between finger centres
    if st.held >= 0:
        gap = max(gap, OBJ_R + 0.004)  # fingers rest on the held object's sides
    c = np.array([x, y])
    for side in (-1, 1):
        fc = c + left * side * (gap * grow)
        half_len, half_w = 0.016 * grow, 0.006 * grow
        pts = [fc + fwd * a * half_len + left * b * half_w for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        draw.polygon(px(pts), fill=FINGER_RGB)
    bar = [c + fwd * (-0.016 * grow) + left * side * gap * grow for side in (-1, 1)]
    draw.line(px(bar), fill=PALM_RGB, width=max(1, round(0.005 * grow * scale)))  # the back: shows heading
