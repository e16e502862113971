import dataclasses

import pytest
import torch
import torch.nn.functional as F

from foundry import rng, tree
from foundry.models import action_head, llm, vla, vlm
from foundry.train.config import AdamWConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state, make_step
from foundry_kernels import flow_matching as fm
from foundry_kernels import pixel_shuffle as ps

VOCAB, IMG, OBS = 67, 65, 66
CFG = vla.preset("vla-debug", llm_vocab=VOCAB, image_token_id=IMG, obs_token_id=OBS)
B, N_IMG, L = 3, 2, 5


@pytest.fixture(autouse=True)
def eager_kernels(monkeypatch):
    """Eager kernels here (the compiled paths are tested in tests/kernels; a compile costs seconds)."""
    monkeypatch.setattr(ps, "COMPILED", False)
    monkeypatch.setattr(fm, "COMPILED", False)


@pytest.fixture(scope="module")
def params():
    return vla.init(rng.key(0), CFG)


def make_batch(seed: int = 1, cfg: vla.Config = CFG) -> dict:
    k = rng.split(rng.key(seed), 5)
    h = cfg.head
    return {
        "images": rng.uniform(k[0], (B, N_IMG, 3, 32, 32), low=-1.0, high=1.0),
        "instruction_ids": rng.randint(k[1], (B, L), 4, 60),
        "instruction_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool),
        "proprio": rng.normal(k[2], (B, h.proprio_steps, h.proprio_dim)),
        "proprio_mask": torch.ones(B, h.proprio_steps, dtype=torch.bool),
        "proprio_dim_mask": torch.ones(B, h.proprio_dim, dtype=torch.bool),
        "actions": rng.normal(k[3], (B, h.horizon, h.action_dim)),
        "action_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool),
        "action_dim_mask": torch.ones(B, h.action_dim, dtype=torch.bool),
    }


def test_presets_and_config_checks():
    assert CFG.head.cond_dim == CFG.cond_layers * CFG.vlm.llm.d_model == 128
    tab = vla.preset("vla-tabletop", llm_vocab=4096, image_token_id=4094, obs_token_id=4095)
    assert (
        tab.vlm.vit.image_size == 112
        and tab.vlm.tokens_per_image == 16
        and tab.head.cond_dim == 4 * 96
        and tab.head.horizon == 10
    )
    with pytest.raises(ValueError, match="obs_token_id=-1"):
        vla.init(rng.key(0), vla.preset("vla-debug", llm_vocab=VOCAB, image_token_id=IMG))
    with pytest.raises(ValueError, match="cond_layers=3 must be in"):
        vla.init(rng.key(0), dataclasses.replace(CFG, cond_layers=3))
    with pytest.raises(ValueError, match=r"head\.cond_dim=7"):
        vla.init(rng.key(0), dataclasses.replace(CFG, head=dataclasses.replace(CFG.head, cond_dim=7)))
    with pytest.raises(KeyError, match="vla-debug"):
        vla.preset("vla-small")


def test_prompt_layout():
    tokens, mask = vla.prompt(CFG, make_batch())
    n = N_IMG * CFG.vlm.tokens_per_image
    assert tokens.shape == mask.shape == (B, n + L + 1)
    assert (tokens[:, :n] == IMG).all()
    assert [int(i) for i in (tokens == OBS).int().argmax(1)] == [n + 3, n + 5, n + 1]  # right after the instruction
    assert mask.sum(1).tolist() == [n + 4, n + 6, n + 2]  # padding only after <obs>


def test_encode_conditions_on_the_last_k_layers():
    """cond = per-layer RMS-normalized <obs> states of blocks n-k .. n-1 (here 1, 2 of 3): perturbing block 2
    changes only its slice; perturbing block 1 changes slices 1 and 2; block 0 is not a slice of its own."""
    cfg = dataclasses.replace(CFG, vlm=dataclasses.replace(CFG.vlm, llm=dataclasses.replace(CFG.vlm.llm, n_layers=3)))
    p, batch, d = vla.init(rng.key(0), cfg), make_batch(), cfg.vlm.llm.d_model
    cond, cond_mask = vla.encode(p, cfg, batch)
    assert cond.shape == (B, 1, 2 * d) and cond_mask is None
    cond = cond[:, 0]
    # the same from an explicit forward over all layers
    tokens, mask = vla.prompt(cfg, batch)
    x = vlm.embed(p["vlm"], cfg.vlm, tokens, batch["images"])
    x = torch.where((tokens == OBS)[..., None], p["obs_embedding"], x)
    full = torch.full((B,), tokens.shape[1])
    hidden = llm.forward(p["vlm"]["llm"], cfg.vlm.llm, x, key_valid=mask, prefix_len=full, hidden_layers=(0, 1, 2))
    at = (tokens == OBS).int().argmax(1)
    want = torch.cat(
        [F.rms_norm(h[torch.arange(B), at], (d,), eps=cfg.vlm.llm.norm_eps) for h in hidden["hidden"][1:]], -1
    )
    torch.testing.assert_close(cond, want)

    def perturbed(block):
        q = tree.map(lambda v: v, p)
        q["vlm"]["llm"]["blocks"][block]["mlp"]["down"] = {
            "w": q["vlm"]["llm"]["blocks"][block]["mlp"]["down"]["w"] * 3
        }
        return vla.encode(q, cfg, batch)[0][:, 0]

    c2, c1 = perturbed(2), perturbed(1)
    assert torch.equal(c2[:, :d], cond[:, :d]) and not torch.allclose(c2[:, d:], cond[:, d:])
    assert not torch.allclose(c1[:, :d], cond[:, :d]) and not torch.allclose(c1[:, d:], cond[:, d:])


def test_encode_ignores_padding_and_uses_obs_embedding(params):
    batch = make_batch()
    cond = vla.encode(params, CFG, batch)[0]
    wider = {**batch, "instruction_ids": F.pad(batch["instruction_ids"], (0, 3), value=7)}
    wider["instruction_mask"] = F.pad(batch["instruction_mask"], (0, 3), value=False)
    torch.testing.assert_close(vla.encode(params, CFG, wider)[0], cond, rtol=1e-5, atol=1e-5)
    tokens, mask = vla.prompt(CFG, batch)  # a ready prompt gives the same
    torch.testing.assert_close(vla.encode(params, CFG, {**batch, "tokens": tokens, "mask": mask})[0], cond)
    other = {**params, "obs_embedding": params["obs_embedding"] + 1.0}
    assert not torch.allclose(vla.encode(other, CFG, batch)[0], cond)
    with pytest.raises(ValueError, match="exactly one <obs>"):
        vla.encode(params, CFG, {**batch, "tokens": tokens.masked_fill(tokens == OBS, 5), "mask": mask})


def prefix_config(extra: int = 2) -> vla.Config:
    """CFG conditioned on every prompt token, with `extra` spare cond tokens beyond make_batch's prompt."""
    tokens, _ = vla.prompt(CFG, make_batch())
    head = dataclasses.replace(CFG.head, cond_tokens=tokens.shape[1] + extra)
    return dataclasses.replace(CFG, cond_source="prefix", head=head)


def test_prefix_conditioning_reads_every_prompt_token(params):
    """cond_source="prefix": the per-token features of the whole prompt, right-padded and masked; the <obs>
    row equals the "obs" conditioning; the chunk does not depend on how far the instruction is padded."""
    cfg, batch = prefix_config(), make_batch()
    tokens, mask = vla.prompt(cfg, batch)
    cond, cond_mask = vla.encode(params, cfg, batch)
    assert cond.shape == (B, cfg.head.cond_tokens, CFG.cond_dim) and cond_mask.shape == (B, cfg.head.cond_tokens)
    assert torch.equal(cond_mask[:, : tokens.shape[1]], mask) and not cond_mask[:, tokens.shape[1] :].any()
    assert not cond[:, tokens.shape[1] :].any()
    obs_at = (tokens == OBS).int().argmax(1)
    torch.testing.assert_close(cond[torch.arange(B), obs_at], vla.encode(params, CFG, batch)[0][:, 0])
    wider = {**batch, "instruction_ids": F.pad(batch["instruction_ids"], (0, 2), value=7)}
    wider["instruction_mask"] = F.pad(batch["instruction_mask"], (0, 2), value=False)
    a = vla.sample_actions(params, cfg, batch, key=rng.key(1), steps=3)
    torch.testing.assert_close(vla.sample_actions(params, cfg, wider, key=rng.key(1), steps=3), a)
    loss, aux = vla.loss(params, cfg, batch, key=rng.key(2))
    assert torch.isfinite(loss) and aux["weight"] > 0
    assert vla.prompt_length(cfg, batch["images"].shape[1], batch["instruction_ids"].shape[1]) == tokens.shape[1]


def test_prefix_conditioning_errors():
    with pytest.raises(ValueError, match=r"prompt has .* tokens > head\.cond_tokens"):
        cfg = prefix_config(extra=-1)
        vla.encode(vla.init(rng.key(0), cfg), cfg, make_batch())
    with pytest.raises(ValueError, match="cond_source='obs'"):
        vla.init(rng.key(0), dataclasses.replace(CFG, head=dataclasses.replace(CFG.head, cond_tokens=3)))


def test_loss_weight_masks_and_determinism(params):
    batch = make_batch()
    loss, aux = vla.loss(params, CFG, batch, key=rng.key(3))
    assert loss.shape == () and torch.isfinite(loss)
    assert aux["weight"].item() == (4 + 2 + 3) * CFG.head.action_dim
    assert torch.equal(vla.loss(params, CFG, batch, key=rng.key(3))[0], loss)
    assert not torch.equal(vla.loss(params, CFG, batch, key=rng.key(4))[0], loss)
    # invalid steps, padded action dims and invalid rows never count
    dim_mask = batch["action_dim_mask"].clone()
    dim_mask[:, -2:] = False
    masked = {**batch, "action_dim_mask": dim_mask, "valid": torch.tensor([True, True, False])}
    loss_m, aux_m = vla.loss(params, CFG, masked, key=rng.key(3))
    assert aux_m["weight"].item() == (4 + 2) * (CFG.head.action_dim - 2)
    junk = batch["actions"].clone()
    junk[:, :, -2:] = 50.0
    junk[1, 2:] = 50.0
    junk[2] = float("nan")
    torch.testing.assert_close(vla.loss(params, CFG, {**masked, "actions": junk}, key=rng.key(3))[0], loss_m)
    with pytest.raises(ValueError, match="needs key="):
        vla.loss(params, CFG, batch)


def test_bf16_autocast_loss_is_close(params):
    batch = make_batch()
    ref = vla.loss(params, CFG, batch, key=rng.key(3))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = vla.loss(params, CFG, batch, key=rng.key(3))
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=0.05)


def test_repeats_draw_independent_noise(params, monkeypatch):
    cfg = dataclasses.replace(CFG, num_action_head_repeats=4)
    seen = []
    apply = action_head.apply
    monkeypatch.setattr(action_head, "apply", lambda *a, **k: seen.append(a) or apply(*a, **k))
    monkeypatch.setattr(vlm, "embed", counting(vlm.embed, calls := []))
    vla.loss(params, cfg, make_batch(), key=rng.key(5))
    assert len(calls) == 1 and len(seen) == 1  # one VLM forward, one head pass over R x B rows
    _, _, cond, _, _, x_t, t = seen[0][:7]
    assert x_t.shape[0] == t.shape[0] == cond.shape[0] == 4 * B
    cond, x_t, t = cond.view(4, B, -1), x_t.view(4, B, -1), t.view(4, B)
    assert all(torch.equal(cond[r], cond[0]) for r in range(4))  # the same prefix for every repeat
    for r in range(1, 4):  # different noise and times per repeat
        assert not torch.allclose(x_t[r], x_t[0]) and not torch.allclose(t[r], t[0])


def test_repeats_estimate_the_same_loss(params):
    batch = make_batch()
    one = torch.stack([vla.loss(params, CFG, batch, key=rng.key(100 + i))[0] for i in range(32)]).mean()
    cfg8 = dataclasses.replace(CFG, num_action_head_repeats=8)
    eight = torch.stack([vla.loss(params, cfg8, batch, key=rng.key(200 + i))[0] for i in range(4)]).mean()
    assert eight.item() == pytest.approx(one.item(), rel=0.1)


def test_gradients_reach_every_part(params):
    p = tree.map(lambda x: x.detach().clone().requires_grad_(True), params)
    loss, _ = vla.loss(p, CFG, make_batch(), key=rng.key(6))
    loss.backward()
    grads = {k: v.grad for k, v in tree.flatten(p).items()}
    unused = {"vlm.llm.head.w", "vlm.llm.final_norm.scale"}  # no logits are computed
    for path, g in grads.items():
        if path in unused:
            assert g is None, path
        else:
            assert g is not None and g.abs().sum() > 0, path
    for prefix in ("vlm.vit.", "vlm.projector.", "vlm.llm.blocks.", "obs_embedding", "action_head."):
        assert any(k.startswith(prefix) for k in grads)


def test_frozen_vlm_is_unchanged_after_a_step(params):
    optimizer = AdamW(AdamWConfig(frozen=(r"^vlm\.",), lr_scales=((r"^obs_embedding", 2.0),)), params)
    step = make_step(lambda p, b, *, key: vla.loss(p, CFG, b, key=key), optimizer)
    state = init_state(params, optimizer, rng.key(7))
    new, metrics = step(state, {k: v[None] for k, v in make_batch().items()}, {"lr": torch.tensor(1e-2)})
    assert torch.isfinite(metrics["loss"]) and metrics["weight"].item() == 9 * CFG.head.action_dim
    assert tree.equal(new["params"]["vlm"], params["vlm"])
    assert not torch.equal(new["params"]["obs_embedding"], params["obs_embedding"])
    assert tree.first_difference(new["params"]["action_head"], params["action_head"]) is not None


def counting(fn, calls: list):
    def wrapped(*a, **k):
        calls.append(1)
        return fn(*a, **k)

    return wrapped


def test_sample_actions(params, monkeypatch):
    batch = make_batch()
    vlm_calls, head_calls = [], []
    monkeypatch.setattr(vlm, "embed", counting(vlm.embed, vlm_calls))
    monkeypatch.setattr(action_head, "apply", counting(action_head.apply, head_calls))
    a = vla.sample_actions(params, CFG, batch, key=rng.key(8), steps=6)
    assert a.shape == (B, CFG.head.horizon, CFG.head.action_dim)
    assert len(vlm_calls) == 1 and len(head_calls) == 6  # the prefix once per chunk, the head once per step
    assert torch.equal(vla.sample_actions(params, CFG, batch, key=rng.key(8), steps=6), a)
    cond = vla.encode(params, CFG, batch)
    b = vla.sample_actions(params, CFG, {"proprio": batch["proprio"]}, key=rng.key(8), steps=6, cond=cond)
    torch.testing.assert_close(b, a)
    assert len(vlm_calls) == 3  # encode above + the first two calls; cond= skips the VLM
    clamped = vla.sample_actions(params, dataclasses.replace(CFG, clamp=(-0.1, 0.1)), batch, key=rng.key(8))
    assert clamped.abs().max() <= 0.1
    with pytest.raises(ValueError, match="needs key="):
        vla.sample_actions(params, CFG, batch)
