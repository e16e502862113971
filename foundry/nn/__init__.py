"""Stateless layers as `init(key, ...) -> params` / `apply(params, x, ...) -> y` pairs.

Each module is a handful of pure functions over plain dicts of tensors; nothing here holds state or
imports anything above `foundry.tree` / `foundry.rng`. Example::

    from foundry import rng
    from foundry.nn import linear
    p = linear.init(rng.key(0), 64, 128)     # {"w": (128, 64)}
    y = linear.apply(p, x)                   # (..., 64) -> (..., 128)
"""
