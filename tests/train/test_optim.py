"""Tests of foundry.train.optim: parity with torch.optim.AdamW, path groups, purity, compilation.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_optim.py -q
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from foundry import tree
from foundry.train.config import AdamWConfig
from foundry.train.optim import AdamW, clip_by_global_norm, global_norm

CFG = AdamWConfig(b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)


def make_params(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)
    block = lambda: {"attn": {"w": r(4, 4), "b": r(4)}, "norm": {"scale": r(4)}, "mlp": {"w": r(4, 8)}}
    return {"embed": r(10, 4), "blocks": [block(), block()], "head": {"w": r(4, 3)}}


def random_grads(params: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return tree.map(lambda p: torch.randn(p.shape, generator=g), params)


def hp(lr: float, **extra: float) -> dict[str, torch.Tensor]:
    return {"lr": torch.tensor(lr), **{k: torch.tensor(v) for k, v in extra.items()}}


def test_matches_torch_adamw_with_changing_lr():
    params = make_params()
    opt = AdamW(CFG, params)
    state = opt.init(params)

    # Reference: torch.optim.AdamW on copies, no_decay leaves in a group with weight_decay 0.
    ref = {path: leaf.clone().requires_grad_(True) for path, leaf in tree.items(params)}
    no_decay = {p for p in ref if any(s in p for s in ("embed", "norm")) or p.endswith(".b")}
    assert no_decay == {
        "embed",
        "blocks.0.attn.b",
        "blocks.0.norm.scale",
        "blocks.1.attn.b",
        "blocks.1.norm.scale",
    }
    groups = [
        {"params": [t for p, t in ref.items() if p not in no_decay], "weight_decay": CFG.weight_decay},
        {"params": [t for p, t in ref.items() if p in no_decay], "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(CFG.b1, CFG.b2), eps=CFG.eps)

    for step in range(20):
        lr = 1e-2 * (1.0 + 0.5 * math.sin(step))
        grads = random_grads(params, seed=100 + step)
        params, state = opt.update(grads, state, params, hp(lr))
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for path, g in tree.items(grads):
            ref[path].grad = g.clone()
        torch_opt.step()

    assert int(state["count"]) == 20
    for path, leaf in tree.items(params):
        assert (leaf - ref[path].detach()).abs().max() < 1e-6, path


def test_init_state_layout():
    params = make_params()
    state = AdamW(CFG, params).init(params)
    assert state["count"].shape == () and state["count"].dtype == torch.int64
    for name in ("mu", "nu"):
        assert tree.structure(state[name]) == tree.structure(params)
        for (_, m), (_, p) in zip(tree.items(state[name]), tree.items(params)):
            assert m.dtype == torch.float32 and m.shape == p.shape and not m.any()


def test_decay_mask_by_path_and_wd_override():
    # With zero gradients the Adam step is exactly zero, leaving only the decoupled decay p * (1 - lr * wd).
    params = make_params()
    opt = AdamW(CFG, params)
    zeros = tree.zeros_like(params)
    new, _ = opt.update(zeros, opt.init(params), params, hp(0.5))
    new_wd, _ = opt.update(zeros, opt.init(params), params, hp(0.5, wd=0.2))
    for path, p in tree.items(params):
        decayed = path in ("blocks.0.attn.w", "blocks.0.mlp.w", "blocks.1.attn.w", "blocks.1.mlp.w", "head.w")
        torch.testing.assert_close(tree.flatten(new)[path], p * (1 - 0.5 * 0.1) if decayed else p)
        torch.testing.assert_close(tree.flatten(new_wd)[path], p * (1 - 0.5 * 0.2) if decayed else p)


def test_lr_scales_first_match_wins():
    params = make_params()
    cfg = dataclasses.replace(CFG, weight_decay=0.0, lr_scales=((r"^head\.", 0.5), (r"head|embed", 3.0)))
    grads = random_grads(params, seed=1)
    base = AdamW(dataclasses.replace(CFG, weight_decay=0.0), params)
    scaled = AdamW(cfg, params)
    ref, _ = base.update(grads, base.init(params), params, hp(1e-2))
    new, _ = scaled.update(grads, scaled.init(params), params, hp(1e-2))
    for path, p in tree.items(params):
        factor = {"head.w": 0.5, "embed": 3.0}.get(path, 1.0)
        torch.testing.assert_close(tree.flatten(new)[path] - p, factor * (tree.flatten(ref)[path] - p))


def test_frozen_leaves_unchanged_with_zero_size_moments():
    params = make_params()
    opt = AdamW(dataclasses.replace(CFG, frozen=(r"^blocks\.0\.",)), params)
    mask = opt.trainable_mask()
    frozen_paths = {p for (p, _), m in zip(tree.items(params), mask) if not m}
    assert frozen_paths == {"blocks.0.attn.w", "blocks.0.attn.b", "blocks.0.norm.scale", "blocks.0.mlp.w"}

    state = opt.init(params)
    for path in frozen_paths:
        assert tree.flatten(state["mu"])[path].shape == (0,)
        assert tree.flatten(state["nu"])[path].shape == (0,)
    grads = tree.map_with_path(lambda path, g: None if path in frozen_paths else g, random_grads(params, 2))
    new, new_state = opt.update(grads, state, params, hp(1e-2))
    for path, p in tree.items(params):
        changed = not torch.equal(tree.flatten(new)[path], p)
        assert changed == (path not in frozen_paths), path
    assert tree.structure(new_state["mu"]) == tree.structure(params)


def test_describe_counts_params_per_group():
    params = make_params()
    opt = AdamW(dataclasses.replace(CFG, frozen=(r"^blocks\.1\.norm",), lr_scales=((r"head", 0.5),)), params)
    rows = [line.split() for line in opt.describe().splitlines()]
    assert rows == [
        ["group", "lr", "scale", "tensors", "params"],
        ["decay", "1", "4", "96"],  # blocks.*.attn.w (4x4), blocks.*.mlp.w (4x8)
        ["decay", "0.5", "1", "12"],  # head.w
        ["no-decay", "1", "4", "52"],  # embed (10x4), blocks.*.attn.b, blocks.0.norm.scale
        ["frozen", "-", "1", "4"],  # blocks.1.norm.scale
        ["total", "10", "164"],
    ]


def test_missing_grad_for_trainable_leaf_errors():
    params = make_params()
    opt = AdamW(CFG, params)
    grads = tree.map_with_path(lambda path, g: None if path == "head.w" else g, random_grads(params, 3))
    with pytest.raises(ValueError, match=r"head\.w"):
        opt.update(grads, opt.init(params), params, hp(1e-2))


@pytest.mark.parametrize(
    "field, value",
    [("frozen", ("blocks[",)), ("no_decay", ("(norm",)), ("lr_scales", (("*head", 2.0),))],
)
def test_invalid_regex_names_field(field, value):
    with pytest.raises(ValueError, match=f"AdamWConfig.{field}"):
        AdamW(dataclasses.replace(CFG, **{field: value}), make_params())


def test_unmatched_frozen_pattern_errors():
    with pytest.raises(ValueError, match="vision_tower"):
        AdamW(dataclasses.replace(CFG, frozen=("vision_tower",)), make_params())


def test_other_structure_errors():
    params = make_params()
    opt = AdamW(CFG, params)
    with pytest.raises(ValueError, match="structure"):
        opt.init({"head": params["head"]})


def test_update_does_not_mutate_inputs():
    params = make_params()
    opt = AdamW(CFG, params)
    state = opt.init(params)
    params, state = opt.update(random_grads(params, 4), state, params, hp(1e-2))  # non-zero moments
    grads = random_grads(params, 5)
    lr = hp(1e-2, wd=0.1)
    before = [tree.map(torch.clone, x) for x in (grads, state, params, lr)]
    opt.update(grads, state, params, lr)
    for b, x in zip(before, (grads, state, params, lr)):
        assert tree.equal(b, x), tree.first_difference(b, x)


def test_low_precision_grads_are_cast_to_fp32():
    params = make_params()
    opt = AdamW(CFG, params)
    grads = tree.cast(random_grads(params, 6), torch.bfloat16)
    new, state = opt.update(grads, opt.init(params), params, hp(1e-2))
    ref, _ = opt.update(tree.cast(grads, torch.float32), opt.init(params), params, hp(1e-2))
    assert tree.equal(new, ref)
    assert all(m.dtype == torch.float32 for m in tree.leaves(state["mu"]))


def test_global_norm_and_clip_match_torch():
    grads = random_grads(make_params(), seed=7)
    flat = [g.clone() for g in tree.leaves(grads)]
    total = torch.nn.utils.clip_grad_norm_([_with_grad(g) for g in flat], max_norm=float("inf"))
    norm = global_norm(grads)
    assert norm.shape == () and norm.dtype == torch.float32
    torch.testing.assert_close(norm, total)

    # Above max_norm: scaled exactly as clip_grad_norm_ does.
    leaves = [_with_grad(g) for g in flat]
    torch.nn.utils.clip_grad_norm_(leaves, max_norm=1.0)
    clipped, norm_before = clip_by_global_norm(grads, 1.0)
    torch.testing.assert_close(norm_before, total)
    for c, ref in zip(tree.leaves(clipped), leaves):
        torch.testing.assert_close(c, ref.grad)
    torch.testing.assert_close(global_norm(clipped), torch.tensor(1.0))

    # Below max_norm: untouched, also for a tensor max_norm.
    same, _ = clip_by_global_norm(grads, torch.tensor(float(total) * 2))
    assert tree.equal(same, grads)


def test_clip_keeps_none_leaves():
    grads = {"a": torch.full((3,), 4.0), "b": None}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert clipped["b"] is None
    torch.testing.assert_close(norm, torch.tensor(math.sqrt(48.0)))


def _with_grad(g: torch.Tensor) -> torch.Tensor:
    p = torch.zeros_like(g, requires_grad=True)
    p.grad = g.clone()
    return p


@pytest.mark.compile
def test_compiled_step_matches_eager_and_compiles_once():
    from torch._dynamo.testing import CompileCounterWithBackend

    params = make_params()
    opt = AdamW(dataclasses.replace(CFG, frozen=(r"^blocks\.1\.norm",), lr_scales=((r"head", 0.5),)), params)

    def step(params, opt_state, grads, hp):
        grads, norm = clip_by_global_norm(grads, 1.0)
        params, opt_state = opt.update(grads, opt_state, params, hp)
        return params, opt_state, norm

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    eager_params, eager_state = params, opt.init(params)
    comp_params, comp_state = params, opt.init(params)
    for i, lr in enumerate((1e-2, 3e-3, 5e-4)):
        grads = random_grads(params, seed=200 + i)
        eager_params, eager_state, eager_norm = step(eager_params, eager_state, grads, hp(lr))
        comp_params, comp_state, comp_norm = compiled(comp_params, comp_state, grads, hp(lr))
        torch.testing.assert_close(comp_norm, eager_norm, rtol=0, atol=1e-6)
        assert tree.allclose(comp_params, eager_params, rtol=0, atol=1e-6), tree.first_difference(
            comp_params, eager_params
        )
        assert tree.allclose(comp_state, eager_state, rtol=0, atol=1e-6)
    assert counter.frame_count == 1
