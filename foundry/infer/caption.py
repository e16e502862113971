"""Captioning with the VLM: image embeddings replace the prompt's <image> placeholders, then the LLM
generates with `foundry.infer.generate.generate` (KV cache or not; both give the same tokens).

The prompt has the training layout: `tokens_per_image` placeholder ids per image, then the text prompt,
left-padded across the batch (`prompt_valid`). With `cfg.prefix_lm` the whole prompt is the bidirectional
prefix, as in training, where the caption starts at `prefix_len`.

Usage::

    prompt = torch.cat([torch.full((B, cfg.tokens_per_image), cfg.image_token_id), text_prompt], 1)
    out = caption(params, cfg, images, prompt, max_new_tokens=32, stop_tokens=(eos_id,))
    out.tokens  # (B, 32); out.lengths (B,)
"""

from __future__ import annotations

import torch

from foundry.infer.generate import Generation, Sampling, generate
from foundry.models import vlm

GREEDY = Sampling()


@torch.no_grad()
def caption(
    params: dict,
    cfg: vlm.Config,
    images: torch.Tensor,  # (B, I, 3, S, S) or (B, 3, S, S)
    prompt_tokens: torch.Tensor,  # (B, T0) int with <image> placeholders, left-padded
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    key: torch.Tensor | None = None,
    stop_tokens: tuple[int, ...] = (),
    image_valid: torch.Tensor | None = None,  # (B, I) bool
    prompt_valid: torch.Tensor | None = None,  # (B, T0) bool
    pad_id: int = 0,
    use_cache: bool = True,
) -> Generation:
    """Generate up to `max_new_tokens` tokens describing `images` after `prompt_tokens`."""
    embeds = vlm.embed(params, cfg, prompt_tokens, images, image_valid)  # (B, T0, D)
    b, t0 = prompt_tokens.shape
    prefix_len = torch.full((b,), t0, dtype=torch.int64, device=prompt_tokens.device) if cfg.prefix_lm else None
    return generate(
        params["llm"],
        cfg.llm,
        prompt_tokens,
        max_new_tokens=max_new_tokens,
        prompt_valid=prompt_valid,
        prompt_embeds=embeds,
        prefix_len=prefix_len,
        sampling=sampling,
        key=key,
        stop_tokens=stop_tokens,
        pad_id=pad_id,
        use_cache=use_cache,
    )
