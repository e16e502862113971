"""Pytree utilities for parameter trees: the only module that imports `torch.utils._pytree`.

A tree is a nested structure of `dict`, `list` and `tuple` whose leaves are tensors (or other values).
Dotted paths name leaves: `{"blocks": [{"attn": {"wq": t}}]}` has the leaf `blocks.0.attn.wq`. These paths
are the names used in checkpoints and in path-pattern rules (freezing, weight decay, learning-rate groups).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.utils._pytree as _pytree

Tree = Any


def map(fn: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply `fn` to the leaves of `tree` (and the matching leaves of `rest`), keeping the structure."""
    return _pytree.tree_map(fn, tree, *rest)


def map_with_path(fn: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Like `map`, but `fn(path, leaf, *rest_leaves)` also receives the leaf's dotted path."""
    paths = [path for path, _ in items(tree)]
    flat, spec = _pytree.tree_flatten(tree)
    rest_flat = []
    for r in rest:
        r_flat, r_spec = _pytree.tree_flatten(r)
        if r_spec != spec:
            raise ValueError("map_with_path: trees have different structures")
        rest_flat.append(r_flat)
    out = [fn(p, leaf, *(r[i] for r in rest_flat)) for i, (p, leaf) in enumerate(zip(paths, flat))]
    return _pytree.tree_unflatten(out, spec)


def leaves(tree: Tree) -> list[Any]:
    """The leaves of `tree` in a fixed order (dict keys in insertion order)."""
    return _pytree.tree_leaves(tree)


def structure(tree: Tree) -> Any:
    """An opaque structure description; two trees with equal structures can be combined leaf by leaf."""
    return _pytree.tree_structure(tree)


def unflatten_leaves(tree_like: Tree, new_leaves: Iterable[Any]) -> Tree:
    """A tree with the structure of `tree_like` and the given leaves (in `leaves` order)."""
    return _pytree.tree_unflatten(list(new_leaves), _pytree.tree_structure(tree_like))


def _key_name(k: Any) -> str:
    if isinstance(k, _pytree.MappingKey):
        return str(k.key)
    if isinstance(k, _pytree.SequenceKey):
        return str(k.idx)
    if isinstance(k, _pytree.GetAttrKey):
        return k.name
    return str(k)


def items(tree: Tree) -> list[tuple[str, Any]]:
    """`(dotted_path, leaf)` pairs in `leaves` order."""
    pairs, _ = _pytree.tree_flatten_with_path(tree)
    return [(".".join(_key_name(k) for k in path), leaf) for path, leaf in pairs]


def flatten(tree: Tree) -> dict[str, Any]:
    """`{dotted_path: leaf}`; the inverse is `unflatten`."""
    flat = dict(items(tree))
    for path in flat:
        if any(part == "" for part in path.split(".")) or path == "":
            raise ValueError(f"tree path {path!r} has an empty name; keys must be non-empty strings")
    return flat


def unflatten(flat: dict[str, Any]) -> Tree:
    """Rebuild a nested tree from `{dotted_path: leaf}`. A level whose keys are exactly `0..n-1` becomes a
    list (so `blocks.0`, `blocks.1` round-trip to a list); every other level is a dict. Key order does not
    matter (safetensors does not keep it): dict keys are sorted, list items ordered by index."""
    root: dict[str, Any] = {}
    for path in sorted(flat):
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"path {path!r} goes through leaf {part!r}")
            node = child
        if parts[-1] in node:
            raise ValueError(f"path {path!r} names both a leaf and a subtree")
        node[parts[-1]] = flat[path]
    return _lists_from_digit_dicts(root)


def _lists_from_digit_dicts(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _lists_from_digit_dicts(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node) and sorted(int(k) for k in node) == list(range(len(node))):
        return [node[str(i)] for i in range(len(node))]
    return node


def count(tree: Tree) -> int:
    """Total number of elements over the tensor leaves."""
    return sum(leaf.numel() for leaf in leaves(tree) if isinstance(leaf, torch.Tensor))


def cast(tree: Tree, dtype: torch.dtype) -> Tree:
    """Cast floating-point tensor leaves to `dtype`; integer and bool leaves are left as they are."""
    return map(lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x, tree)


def zeros_like(tree: Tree) -> Tree:
    return map(torch.zeros_like, tree)


def allclose(a: Tree, b: Tree, *, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True when both trees have the same paths and every pair of leaves is close (exact for non-floats)."""
    fa, fb = flatten(a), flatten(b)
    if fa.keys() != fb.keys():
        return False
    for k, x in fa.items():
        y = fb[k]
        if isinstance(x, torch.Tensor):
            if not isinstance(y, torch.Tensor) or x.shape != y.shape:
                return False
            if x.is_floating_point() or y.is_floating_point():
                if not torch.allclose(x.float(), y.float(), rtol=rtol, atol=atol, equal_nan=False):
                    return False
            elif not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def equal(a: Tree, b: Tree) -> bool:
    """Bitwise equality of two trees (same paths, shapes, dtypes and values)."""
    return first_difference(a, b) is None


def first_difference(a: Tree, b: Tree) -> str | None:
    """A one-line description of the first mismatch between two trees (for test messages), or None."""
    fa, fb = flatten(a), flatten(b)
    if fa.keys() != fb.keys():
        return f"paths differ: only in a {sorted(fa.keys() - fb.keys())}, only in b {sorted(fb.keys() - fa.keys())}"
    for k, x in fa.items():
        y = fb[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return f"{k}: {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}"
            if not torch.equal(x, y):
                diff = (x.double() - y.double()).abs().max().item()
                return f"{k}: max abs diff {diff:.3g}"
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or x != y:
            return f"{k}: {x!r} vs {y!r}"
    return None
