"""Boolean attention masks for `scaled_dot_product_attention` (True = may attend).

One builder covers the three layouts the stages need: causal (LLM), causal with padding (batched
prompts), and prefix-LM (bidirectional over an image + prompt prefix, causal over the suffix; as in
PaliGemma). Query and key indices are absolute positions in the (possibly cached) sequence.
"""

from __future__ import annotations

import torch


def attention_mask(
    q_index: torch.Tensor,  # (T,) or (B, T) int: absolute position of each query
    num_keys: int,
    *,
    causal: bool = True,
    key_valid: torch.Tensor | None = None,  # (B, S) bool: False on padding / unwritten cache slots
    prefix_len: torch.Tensor | None = None,  # (B,) int: keys < prefix_len are visible to every query
) -> torch.Tensor:
    """A (B or 1, 1, T, S) bool mask. Each query may always attend to its own position, so a row is never
    fully masked (a fully masked row makes SDPA return NaN)."""
    q = q_index if q_index.dim() == 2 else q_index[None]  # (B|1, T)
    k = torch.arange(num_keys, device=q.device)  # (S,)
    q4, k4 = q[:, None, :, None], k[None, None, None, :]  # (B|1, 1, T, 1), (1, 1, 1, S)
    allowed = (k4 <= q4) if causal else torch.ones_like(k4 <= q4)
    if prefix_len is not None:
        allowed = allowed | (k4 < prefix_len[:, None, None, None])
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, None, :]
    return allowed | (k4 == q4)
