"""Shape scenes: determinism, caption grammar and parser, attribute accuracy, caption variety, the CLI."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from foundry.data.make_shapes import MakeShapesConfig, make_shapes, shape_sample
from foundry.data.manifest import read_manifest
from foundry.data.shapes import (
    COLORS,
    SHAPES,
    SIZES,
    attribute_accuracy,
    caption_of,
    parse_caption,
    random_scene,
    render_scene,
)


def scenes(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng) for _ in range(n)]


def test_scenes_and_samples_are_deterministic_from_the_seed():
    assert scenes(50, seed=3) == scenes(50, seed=3)
    assert scenes(50, seed=3) != scenes(50, seed=4)
    a, b = (shape_sample(0, "train", 7, size=64) for _ in range(2))
    assert a == b and a["__key__"] == "train-00000007" and set(a) == {"__key__", "png", "txt", "json"}
    val, train = ([shape_sample(0, split, i, size=16)["json"] for i in range(10)] for split in ("val", "train"))
    assert not set(val) & set(train)  # disjoint seed streams
    jpg = shape_sample(0, "train", 7, size=64, fmt="jpg")
    assert jpg["txt"] == a["txt"] and jpg["jpg"][:2] == b"\xff\xd8"


def test_caption_grammar_round_trips_through_the_parser():
    for meta in scenes(2000, seed=1):
        parsed = parse_caption(meta["caption"])
        assert parsed is not None, meta["caption"]
        assert parsed["relation"] == meta["relation"]
        assert parsed["objects"] == [{k: o[k] for k in ("size", "color", "shape")} for o in meta["objects"]]
        assert caption_of(parsed) == meta["caption"]
    assert parse_caption("  A small red circle above a large blue square.\n") is not None
    for bad in ("", "a red circle above a blue square", "a small red circle near a large blue square", "a small"):
        assert parse_caption(bad) is None


def test_relation_follows_from_the_positions_and_objects_fit():
    for meta in scenes(500, seed=2):
        a, b = meta["objects"]
        dx, dy = a["x"] - b["x"], a["y"] - b["y"]
        expected = ("above" if dy < 0 else "below") if abs(dy) > abs(dx) else ("left of" if dx < 0 else "right of")
        assert meta["relation"] == expected
        assert math.hypot(dx, dy) > a["r"] + b["r"]
        for o in (a, b):
            assert o["r"] <= o["x"] <= 1 - o["r"] and o["r"] <= o["y"] <= 1 - o["r"]


@pytest.mark.parametrize("size", [64, 224])
def test_each_object_is_drawn_in_its_colour(size):
    for meta in scenes(40, seed=5):
        img = render_scene(meta, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        for o in meta["objects"]:
            pixel = img[int(o["y"] * size), int(o["x"] * size)].astype(int)
            assert np.abs(pixel - COLORS[o["color"]]).max() <= 40, (meta["caption"], o)


def test_captions_vary_and_attributes_are_uniform():
    metas = scenes(4000, seed=6)
    assert len({m["caption"] for m in metas}) > 3500  # ~37k possible captions

    def entropy(values):
        p = np.asarray(list(Counter(values).values()), float) / len(values)
        return -(p * np.log2(p)).sum()

    objs = [o for m in metas for o in m["objects"]]
    assert entropy([o["color"] for o in objs]) > 0.99 * math.log2(len(COLORS))
    assert entropy([o["shape"] for o in objs]) > 0.99 * math.log2(len(SHAPES))
    assert entropy([o["size"] for o in objs]) > 0.99 * math.log2(len(SIZES))
    assert entropy([m["relation"] for m in metas]) > 0.99 * 2
    # The first object's colour says nothing about the second's (independent attributes).
    pairs = Counter((m["objects"][0]["color"], m["objects"][1]["color"]) for m in metas)
    assert len(pairs) == len(COLORS) ** 2


def test_attribute_accuracy_perfect_swapped_corrupted_and_unparseable():
    metas = scenes(8, seed=7)
    perfect = attribute_accuracy([m["caption"] for m in metas], metas)
    assert perfect == dict.fromkeys(("color", "shape", "size", "relation", "exact", "exact_text", "parsed"), 1.0)

    def swapped(m):  # "X above Y" said as "Y below X": the same scene
        opposite = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
        return caption_of({"objects": m["objects"][::-1], "relation": opposite[m["relation"]]})

    acc = attribute_accuracy([swapped(m) for m in metas], metas)
    assert acc["exact"] == 1.0 and acc["exact_text"] == 0.0

    other = next(c for c in COLORS if c != metas[0]["objects"][0]["color"])
    wrong = caption_of({**metas[0], "objects": [{**metas[0]["objects"][0], "color": other}, metas[0]["objects"][1]]})
    acc = attribute_accuracy([wrong, "gibberish", *(m["caption"] for m in metas[2:])], metas)
    assert acc["color"] == pytest.approx((0.5 + 6) / 8) and acc["shape"] == pytest.approx(7 / 8)
    assert acc["exact"] == pytest.approx(6 / 8) and acc["parsed"] == pytest.approx(7 / 8)
    assert acc["relation"] == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="2 predictions for 8 scenes"):
        attribute_accuracy(["a", "b"], metas)


def test_make_shapes_output_does_not_depend_on_workers(tmp_path):
    cfg = MakeShapesConfig(train_samples=21, val_samples=5, image_size=32, samples_per_shard=8, chunk=4)
    one = make_shapes(MakeShapesConfig(**{**vars(cfg), "out": str(tmp_path / "a"), "workers": 1}), log=lambda s: None)
    make_shapes(MakeShapesConfig(**{**vars(cfg), "out": str(tmp_path / "b"), "workers": 2}), log=lambda s: None)
    assert one["train"] == 21 and one["rate"] > 0
    assert [e.num_sequences for e in read_manifest(tmp_path / "a" / "train")] == [8, 8, 5]
    for split, shards in (("train", 3), ("val", 1)):
        for k in range(shards):
            name = f"{split}/{split}-{k:05d}.tar"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError, match="format"):
        MakeShapesConfig(format="gif")
