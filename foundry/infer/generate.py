"""Autoregressive generation for the decoder, with or without a KV cache (both give the same tokens).

Prompts of different lengths are left-padded: `prompt_valid` marks real tokens. RoPE only sees position
differences, so a row's left padding shifts all its positions equally and changes nothing. A prefix of
input embeddings (images in the VLM) can replace the prompt's token embeddings.

Usage::

    out = generate(params, cfg, prompt, max_new_tokens=50, sampling=Sampling(temperature=0.8, top_k=40),
                   key=rng.key(0), stop_tokens=(eos_id,))
    out.tokens  # (B, max_new_tokens), pad_id after a stop token; out.lengths: (B,)
"""

from __future__ import annotations

import dataclasses

import torch

from foundry import rng
from foundry.models import llm


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy. top_k / top_p (nucleus, Holtzman et al. 2020) filter before sampling."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None


@dataclasses.dataclass(frozen=True)
class Generation:
    tokens: torch.Tensor  # (B, N) generated ids; pad_id after a stop token
    lengths: torch.Tensor  # (B,) tokens generated up to and including the stop token


def sample_token(logits: torch.Tensor, sampling: Sampling, *, key: torch.Tensor | None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,). Sampling uses the Gumbel-max trick with draws from `key`."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    if key is None:
        raise ValueError("sampling with temperature > 0 needs key=")
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop_sorted = probs.cumsum(-1) - probs >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    u = rng.uniform(key, logits.shape, low=1e-10, high=1.0)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def generate(
    params: dict,
    cfg: llm.Config,
    prompt: torch.Tensor,  # (B, T0) int, left-padded
    *,
    max_new_tokens: int,
    prompt_valid: torch.Tensor | None = None,  # (B, T0) bool
    prompt_embeds: torch.Tensor | None = None,  # (B, T0, D): replaces embed(prompt) (e.g. image tokens)
    prefix_len: torch.Tensor | None = None,  # (B,) bidirectional prefix (prefix-LM)
    sampling: Sampling = Sampling(),
    key: torch.Tensor | None = None,
    stop_tokens: tuple[int, ...] = (),
    pad_id: int = 0,
    use_cache: bool = True,
) -> Generation:
    """Generate up to `max_new_tokens` tokens after the prompt; step i samples with `fold_in(key, i)`."""
    b, t0 = prompt.shape
    if prompt_valid is None:
        prompt_valid = torch.ones_like(prompt, dtype=torch.bool)
    x = llm.embed(params, prompt) if prompt_embeds is None else prompt_embeds
    total = t0 + max_new_tokens
    if total > cfg.max_seq_len and use_cache:
        raise ValueError(f"prompt ({t0}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len {cfg.max_seq_len}")
    valid = torch.cat([prompt_valid, torch.ones(b, max_new_tokens, dtype=torch.bool, device=prompt.device)], 1)
    cache = llm.init_cache(cfg, b, total, dtype=x.dtype, device=x.device) if use_cache else None
    # With a cache the keys are all `total` slots; without one, the keys are the tokens so far.
    prefill_valid = valid if use_cache else prompt_valid
    out = llm.forward(
        params,
        cfg,
        x,
        positions=torch.arange(t0, device=x.device),
        key_valid=prefill_valid,
        prefix_len=prefix_len,
        cache=cache,
    )
    logits, cache = llm.logits(params, cfg, out["x"][:, -1]), out["cache"]
    tokens, done = [], torch.zeros(b, dtype=torch.bool, device=prompt.device)
    lengths = torch.zeros(b, dtype=torch.int64, device=prompt.device)
    stops = torch.tensor(stop_tokens, dtype=torch.int64, device=prompt.device)
    for i in range(max_new_tokens):
        sampled = sample_token(logits, sampling, key=None if key is None else rng.fold_in(key, i))
        tok = torch.where(done, torch.full_like(sampled, pad_id), sampled)
        tokens.append(tok)
        lengths = lengths + (~done).long()
        done = done | torch.isin(tok, stops)
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        # Finished rows keep decoding their own samples (never pad_id, which may not be a valid id).
        x = torch.cat([x, llm.embed(params, sampled[:, None])], 1)
        if use_cache:
            pos = torch.tensor([t0 + i], device=x.device)
            out = llm.forward(
                params, cfg, x[:, -1:], positions=pos, key_valid=valid, prefix_len=prefix_len, cache=cache
            )
            cache = out["cache"]
        else:
            out = llm.forward(params, cfg, x, key_valid=valid[:, : x.shape[1]], prefix_len=prefix_len)
        logits = llm.logits(params, cfg, out["x"][:, -1])
    generated = torch.stack(tokens, 1)
    if generated.shape[1] < max_new_tokens:
        pad = torch.full(
            (b, max_new_tokens - generated.shape[1]), pad_id, dtype=generated.dtype, device=generated.device
        )
        generated = torch.cat([generated, pad], 1)
    return Generation(tokens=generated, lengths=lengths)
