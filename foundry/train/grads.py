"""One `value_and_grad` with two backends that must agree.

- `"func"`: `torch.func.grad_and_value`, a pure transform that compiles into one graph.
- `"autograd"`: `torch.autograd.grad` over fresh leaf tensors. It supports activation checkpointing
  (`torch.utils.checkpoint`), which `torch.func` transforms do not (they lack saved-tensor hooks).

Usage::

    vg = value_and_grad(loss_fn, backend="func")
    (loss, aux), grads = vg(params, batch, key=k)     # grads: same tree as params
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from foundry import tree

Backend = Literal["func", "autograd"]


def value_and_grad(fn: Callable, *, backend: Backend = "func") -> Callable:
    """Wrap `fn(params, *args, **kwargs) -> (value, aux)` into
    `g(params, *args, **kwargs) -> ((value, aux), grads)`, differentiating the 0-D `value` with respect to
    every tensor leaf of `params`. `aux` is returned detached."""
    if backend == "func":
        grad_fn = torch.func.grad_and_value(fn, has_aux=True)

        def func_backend(params, *args, **kwargs):
            grads, (value, aux) = grad_fn(params, *args, **kwargs)
            return (value, aux), grads

        return func_backend
    if backend == "autograd":

        def autograd_backend(params, *args, **kwargs):
            with torch.enable_grad():
                leaves = [p.detach().requires_grad_(True) for p in tree.leaves(params)]
                value, aux = fn(tree.unflatten_leaves(params, leaves), *args, **kwargs)
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
            aux = tree.map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, aux)
            return (value.detach(), aux), tree.unflatten_leaves(params, grads)

        return autograd_backend
    raise ValueError(f"unknown gradient backend {backend!r}; expected 'func' or 'autograd'")
