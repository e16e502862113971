import dataclasses

import pytest
import torch

from foundry import rng, tree
from foundry.models import action_head, llm

CFG = action_head.Config(
    d_model=32, n_layers=2, n_heads=2, action_dim=5, proprio_dim=3, cond_dim=12, horizon=4, proprio_steps=2
)


def inputs(cfg: action_head.Config = CFG, b: int = 3, seed: int = 1) -> dict:
    k = rng.split(rng.key(seed), 5)
    return {
        "cond": rng.normal(k[0], (b, cfg.cond_dim)),
        "proprio": rng.normal(k[1], (b, cfg.proprio_steps, cfg.proprio_dim)),
        "proprio_mask": torch.ones(b, cfg.proprio_steps, dtype=torch.bool),
        "noisy_actions": rng.normal(k[2], (b, cfg.horizon, cfg.action_dim)),
        "t": rng.uniform(k[3], (b,)),
    }


def run(params, cfg=CFG, **x):
    return action_head.apply(params, cfg, x["cond"], x["proprio"], x["proprio_mask"], x["noisy_actions"], x["t"])


@pytest.mark.parametrize("time_mode", ["add", "token"])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_inputs_matter(time_mode, causal):
    cfg = dataclasses.replace(CFG, time_mode=time_mode, causal=causal)
    params = action_head.init(rng.key(0), cfg)
    x = inputs(cfg)
    v = run(params, cfg, **x)
    assert v.shape == (3, cfg.horizon, cfg.action_dim) and v.dtype == torch.float32
    for name in ("cond", "proprio", "t"):  # every input reaches every action position
        changed = run(params, cfg, **{**x, name: x[name] + 0.5})
        assert (changed - v).abs().amax(dim=(1, 2)).min() > 0, name
    assert cfg.num_tokens == cfg.num_cond_tokens + 2 + 4


def test_blocks_are_llm_blocks():
    params = action_head.init(rng.key(0), CFG)
    k_blocks = rng.split(rng.key(0), 8)[0]
    ref = llm.init(k_blocks, CFG.blocks)
    assert tree.equal(params["blocks"], ref["blocks"]) and tree.equal(params["final_norm"], ref["final_norm"])
    assert "embed" not in params and "head" not in params


def test_causal_vs_bidirectional():
    """Causal: a later action token cannot change an earlier action's velocity; bidirectional: it can."""
    x = inputs()
    later = x["noisy_actions"].clone()
    later[:, -1] += 1.0
    for causal in (True, False):
        cfg = dataclasses.replace(CFG, causal=causal)
        params = action_head.init(rng.key(0), cfg)
        a, b = run(params, cfg, **x), run(params, cfg, **{**x, "noisy_actions": later})
        assert torch.equal(a[:, :-1], b[:, :-1]) == causal


def test_padded_proprio_steps_are_ignored():
    params = action_head.init(rng.key(0), CFG)
    x = inputs()
    x["proprio_mask"] = torch.tensor([[False, True]] * 3)
    other = x["proprio"].clone()
    other[:, 0] = 100.0
    torch.testing.assert_close(run(params, **x), run(params, **{**x, "proprio": other}), rtol=0, atol=0)


@pytest.mark.parametrize("time_mode", ["add", "token"])
def test_several_cond_tokens_with_padding(time_mode):
    """cond (B, C, cond_dim): every valid token reaches the actions, masked ones do not; (B, cond_dim) is C = 1."""
    cfg = dataclasses.replace(CFG, cond_tokens=3, time_mode=time_mode)
    params = action_head.init(rng.key(0), cfg)
    x = inputs(cfg)
    cond = rng.normal(rng.key(9), (3, 3, cfg.cond_dim))
    mask = torch.tensor([[True, True, False]] * 3)
    go = lambda c: action_head.apply(params, cfg, c, x["proprio"], None, x["noisy_actions"], x["t"], cond_mask=mask)
    bumped = lambda i: torch.where(torch.arange(3)[None, :, None] == i, 9.0, cond)  # token i of every row = 9
    v = go(cond)
    torch.testing.assert_close(go(bumped(2)), v, rtol=0, atol=0)  # the masked token
    for i in (0, 1):
        assert (go(bumped(i)) - v).abs().amax(dim=(1, 2)).min() > 0
    one = dataclasses.replace(CFG, time_mode=time_mode)
    p1 = action_head.init(rng.key(0), one)
    torch.testing.assert_close(run(p1, one, **x), run(p1, one, **{**x, "cond": x["cond"][:, None]}))
    with pytest.raises(ValueError, match=r"cond has shape \(3, 2, 12\), expected \(B, \*\(3, 12\)\)"):
        go(cond[:, :2])


def test_past_actions_are_clean_tokens():
    cfg = dataclasses.replace(CFG, past_steps=2)
    params = action_head.init(rng.key(0), cfg)
    x = inputs(cfg)
    past = rng.normal(rng.key(9), (3, 2, cfg.action_dim))
    args = (params, cfg, x["cond"], x["proprio"], x["proprio_mask"], x["noisy_actions"], x["t"])
    v = action_head.apply(*args, past, torch.ones(3, 2, dtype=torch.bool))
    assert v.shape == (3, cfg.horizon, cfg.action_dim)  # only the chunk is predicted
    masked = torch.tensor([[False, True]] * 3)
    a = action_head.apply(*args, past, masked)
    b = action_head.apply(*args, past + torch.tensor([1.0, 0.0])[None, :, None], masked)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs past_actions"):
        action_head.apply(*args)


def test_time_embedding_and_config_errors():
    e = action_head.time_embedding(torch.tensor([0.0, 0.5, 1.0]), 16)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    with pytest.raises(ValueError, match="time_mode"):
        action_head.init(rng.key(0), dataclasses.replace(CFG, time_mode="film"))
    with pytest.raises(ValueError, match="head size"):
        action_head.init(rng.key(0), dataclasses.replace(CFG, n_heads=3))
    with pytest.raises(ValueError, match=r"noisy_actions has shape \(3, 5, 5\)"):
        params = action_head.init(rng.key(0), CFG)
        run(params, **{**inputs(), "noisy_actions": torch.zeros(3, 5, 5)})
    assert action_head.flops_per_sample(CFG) > 0


@pytest.mark.compile
def test_compiles_in_one_graph_and_matches_eager():
    """The head builds its blocks' llm.Config inside the traced function (a config of plain scalars traces;
    a nested default dataclass instance did not), so the compiled train step depends on this."""
    params, x = action_head.init(rng.key(0), CFG), inputs()
    compiled = torch.compile(run, fullgraph=True)
    torch.testing.assert_close(compiled(params, **x), run(params, **x), rtol=1e-5, atol=1e-5)
