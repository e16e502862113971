import pytest
import torch

from foundry import tree


def sample_tree():
    return {"blocks": [{"w": torch.ones(2, 3)}, {"w": torch.zeros(3)}], "embed": {"w": torch.arange(4)}}


def test_flatten_unflatten_round_trip_with_lists():
    t = sample_tree()
    flat = tree.flatten(t)
    assert list(flat) == ["blocks.0.w", "blocks.1.w", "embed.w"]
    back = tree.unflatten(dict(reversed(list(flat.items()))))  # order must not matter
    assert isinstance(back["blocks"], list)
    assert tree.equal(back, t)


def test_unflatten_rejects_leaf_and_subtree_clash():
    with pytest.raises(ValueError, match=r"names both a leaf and a subtree|goes through leaf"):
        tree.unflatten({"a": torch.ones(1), "a.b": torch.ones(1)})


def test_map_with_path_and_count_and_cast():
    t = sample_tree()
    paths = tree.map_with_path(lambda p, x: p, t)
    assert paths["blocks"][1]["w"] == "blocks.1.w"
    assert tree.count(t) == 6 + 3 + 4
    c = tree.cast(t, torch.bfloat16)
    assert c["blocks"][0]["w"].dtype == torch.bfloat16
    assert c["embed"]["w"].dtype == torch.int64  # integers untouched


def test_allclose_equal_and_first_difference():
    a = sample_tree()
    b = tree.map(lambda x: x.clone(), a)
    assert tree.equal(a, b) and tree.first_difference(a, b) is None
    b["blocks"][0]["w"] = b["blocks"][0]["w"] + 1e-7
    assert tree.allclose(a, b, atol=1e-6) and not tree.equal(a, b)
    assert "blocks.0.w" in tree.first_difference(a, b)
    b["extra"] = torch.ones(1)
    assert not tree.allclose(a, b)
    assert "only in b ['extra']" in tree.first_difference(a, b)
