"""Rendered shape scenes with captions that describe them, and the caption parser for evaluation.

A scene holds two objects, each with a shape, colour and size drawn independently and uniformly, at
random non-overlapping positions. The caption follows one fixed grammar:

    a <size> <color> <shape> <relation> a <size> <color> <shape>
    e.g. "a small red circle above a large blue square"

where the relation ("above", "below", "to the left of", "to the right of") says where the first object
lies relative to the second and follows from the positions: centres are resampled until one axis
dominates (|d_major| >= 1.5 |d_minor|). Both objects are drawn alike, so which one is named first is
arbitrary: "X above Y" and "Y below X" both occur, and `attribute_accuracy` compares captions up to this
swap (`canonical`). Nothing in
the caption can be guessed without the image: a blind model is at chance (1/8 colour, 1/6 shape,
1/2 size, 1/2 axis-relation).

Shapes are drawn with PIL at 4x the size and box-filtered down (anti-aliasing), so a small shape stays
recognisable at 64 px. Everything is a pure function of an explicit `np.random.Generator`.

Usage:

    meta = random_scene(np.random.default_rng(0))          # {"objects": [...], "relation": ..., "caption"}
    img = render_scene(meta, size=224)                      # (224, 224, 3) uint8
    parse_caption("a small red circle above a large blue square")
    attribute_accuracy(predicted_captions, metadatas)       # {"color": .., "shape": .., ..., "exact": ..}
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
SIZES = {"small": 0.09, "large": 0.16}  # radius as a fraction of the image side (±10% jitter)
RELATIONS = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
BACKGROUND = (70, 70, 70)
ATTRIBUTES = ("color", "shape", "size")
_SUPERSAMPLE = 4

_OBJECT = rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
_CAPTION = re.compile(rf"{_OBJECT} ({'|'.join(RELATIONS.values())}) {_OBJECT}")
_RELATION_OF_PHRASE = {phrase: name for name, phrase in RELATIONS.items()}


def random_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Two random objects and the relation of the first to the second, with its caption.

    Positions `x, y` are object centres as fractions of the image side (y grows downwards), `r` radii.
    """
    objects = [
        {
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "color": list(COLORS)[rng.integers(len(COLORS))],
            "size": list(SIZES)[rng.integers(len(SIZES))],
        }
        for _ in range(2)
    ]
    for obj in objects:
        obj["r"] = round(SIZES[obj["size"]] * float(rng.uniform(0.9, 1.1)), 4)
    while True:  # rejection: inside the image, no overlap, one axis clearly dominant
        for obj in objects:
            margin = obj["r"] + 0.02
            obj["x"], obj["y"] = (round(float(v), 4) for v in rng.uniform(margin, 1 - margin, size=2))
        a, b = objects
        dx, dy = a["x"] - b["x"], a["y"] - b["y"]
        apart = math.hypot(dx, dy) > a["r"] + b["r"] + 0.03
        if apart and max(abs(dx), abs(dy)) >= 1.5 * min(abs(dx), abs(dy)):
            break
    if abs(dy) > abs(dx):
        relation = "above" if dy < 0 else "below"
    else:
        relation = "left of" if dx < 0 else "right of"
    meta = {"objects": objects, "relation": relation}
    meta["caption"] = caption_of(meta)
    return meta


def caption_of(meta: dict[str, Any]) -> str:
    """The caption of a scene description (or of a `parse_caption` result)."""
    a, b = (f"a {o['size']} {o['color']} {o['shape']}" for o in meta["objects"])
    return f"{a} {RELATIONS[meta['relation']]} {b}"


def render_scene(meta: dict[str, Any], size: int = 224) -> np.ndarray:
    """Draw the scene on a plain background: (size, size, 3) uint8."""
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for obj in meta["objects"]:
        cx, cy, r = obj["x"] * big, obj["y"] * big, obj["r"] * big
        _draw_shape(draw, obj["shape"], cx, cy, r, COLORS[obj["color"]])
    return np.asarray(img.reduce(_SUPERSAMPLE))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    """Shapes of about equal visual weight inside a circle of radius r around (cx, cy)."""
    if shape == "circle":
        draw.ellipse([cx - 0.9 * r, cy - 0.9 * r, cx + 0.9 * r, cy + 0.9 * r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=fill)
    elif shape == "triangle":
        draw.polygon(_ring(cx, cy + 0.15 * r, [1.1 * r], 3), fill=fill)
    elif shape == "diamond":
        draw.polygon(_ring(cx, cy, [r], 4), fill=fill)
    elif shape == "star":
        draw.polygon(_ring(cx, cy, [r, 0.45 * r], 10), fill=fill)
    elif shape == "cross":
        w = 0.33 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _ring(cx: float, cy: float, radii: list[float], n: int) -> list[tuple[float, float]]:
    """n polygon vertices starting at the top, alternating through `radii` (a star for two radii)."""
    angles = [-math.pi / 2 + 2 * math.pi * k / n for k in range(n)]
    return [
        (cx + radii[k % len(radii)] * math.cos(t), cy + radii[k % len(radii)] * math.sin(t))
        for k, t in enumerate(angles)
    ]


def parse_caption(text: str) -> dict[str, Any] | None:
    """`{"objects": [{"size", "color", "shape"} x 2], "relation"}` of a caption in the grammar, else None.

    Tolerates surrounding whitespace, case and a final period (model outputs); nothing else.
    """
    m = _CAPTION.fullmatch(" ".join(text.strip().lower().removesuffix(".").split()))
    if m is None:
        return None
    g = m.groups()
    objects = [dict(zip(("size", "color", "shape"), g[0:3])), dict(zip(("size", "color", "shape"), g[4:7]))]
    return {"objects": objects, "relation": _RELATION_OF_PHRASE[g[3]]}


def canonical(meta: dict[str, Any]) -> tuple[tuple[tuple[str, str, str], ...], str]:
    """The scene as `(objects, relation)` with "below"/"right of" turned round ("Y below X" -> "X above
    Y"), so equivalent captions compare equal."""
    objects = tuple((o["color"], o["shape"], o["size"]) for o in meta["objects"])
    if meta["relation"] in ("below", "right of"):
        return objects[::-1], OPPOSITE[meta["relation"]]
    return objects, meta["relation"]


def attribute_accuracy(predicted_captions: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Exact-match accuracy per attribute over scenes, comparing captions up to the order swap.

    Returns `color`, `shape`, `size` (averaged over both object slots), `relation` (the canonical
    relation: above or left of), `exact` (the whole scene description equal), `exact_text` (the same
    string) and `parsed` (the fraction of predictions in the grammar; one that is not counts as wrong
    everywhere).
    """
    if len(predicted_captions) != len(metadatas):
        raise ValueError(f"{len(predicted_captions)} predictions for {len(metadatas)} scenes")
    if not metadatas:
        raise ValueError("no scenes to score")
    totals = dict.fromkeys((*ATTRIBUTES, "relation", "exact", "exact_text", "parsed"), 0.0)
    for text, meta in zip(predicted_captions, metadatas):
        truth = canonical(meta)
        totals["exact_text"] += " ".join(text.strip().split()) == caption_of(meta)
        parsed = parse_caption(text)
        if parsed is None:
            continue
        pred = canonical(parsed)
        totals["parsed"] += 1
        totals["relation"] += pred[1] == truth[1]
        totals["exact"] += pred == truth
        for i, name in enumerate(ATTRIBUTES):
            totals[name] += sum(p[i] == t[i] for p, t in zip(pred[0], truth[0])) / 2
    return {k: v / len(metadatas) for k, v in totals.items()}
