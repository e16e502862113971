"""Decoder-only transformer: pre-norm blocks, RoPE, SwiGLU, RMSNorm (or LayerNorm), optional qk-norm,
grouped-query attention, tied or untied output head.

Params::

    {"embed": {"w": (V, D)},
     "blocks": [{"attn_norm", "attn": {"wq", "wk", "wv", "wo", "q_norm"?, "k_norm"?}, "mlp_norm",
                 "mlp": {"gate", "up", "down"}}, ...],    # linear params {"w", "b"?}: biases when configured
     "final_norm": {...}, "head"?: {"w": (V, D)}}          # "head" only when untied

Usage::

    cfg = llm.preset("debug", vocab_size=512)
    params = llm.init(rng.key(0), cfg)
    out = llm.apply(params, cfg, tokens)                    # out["logits"]: (B, T, V)
    loss, aux = llm.loss(params, cfg, {"tokens": tokens, "mask": mask})
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from foundry import rng
from foundry.nn import attention, embedding, linear, masks, mlp, norm, rope


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the decoder. `vocab_size=0` means "take it from the tokenizer" (resolved by the experiment)."""

    d_model: int = 96
    n_layers: int = 8
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (multi-head attention)
    head_dim_override: int | None = None  # None: d_model // n_heads
    mlp_hidden_override: int | None = None  # None: 8/3 d_model rounded up to a multiple of 32
    vocab_size: int = 0
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-5
    qk_norm: bool = False
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    # RoPE frequency scaling for a longer context than pretraining (Hugging Face `rope_scaling` types 'linear'
    # and 'llama3'); 'none' leaves the frequencies as they are. Flat scalars, not a nested dataclass: configs
    # are built inside compiled code (the action head's blocks), where dynamo cannot wrap default instances.
    rope_scaling: Literal["none", "linear", "llama3"] = "none"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0  # llama3 only
    rope_high_freq_factor: float = 4.0  # llama3 only
    rope_original_max_len: int = 8192  # llama3 only: the pretraining context
    qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2)
    out_bias: bool = False  # a bias on the attention output projection (Llama attention_bias=True)
    mlp_bias: bool = False  # biases on the SwiGLU projections (Llama mlp_bias=True)
    max_seq_len: int = 2048  # the longest sequence generation will cache
    init_std: float = 0.02

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.d_model // self.n_heads

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_hidden_override:
            return self.mlp_hidden_override
        return 32 * math.ceil(8 * self.d_model / 3 / 32)


# Size presets named like the reference system's. Vocabulary comes from the tokenizer.
PRESETS: dict[str, Config] = {
    "debug": Config(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, qk_norm=True),
    "11m": Config(d_model=96, n_layers=8, n_heads=4),
    "100m": Config(d_model=512, n_layers=12, n_heads=8),
    "410m": Config(d_model=1024, n_layers=24, n_heads=16),
    "1b": Config(d_model=2048, n_layers=24, n_heads=16),
}


def preset(name: str, **overrides) -> Config:
    """A size preset by name, with field overrides (e.g. `vocab_size=4096`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown LLM preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def _check(cfg: Config) -> None:
    if cfg.vocab_size <= 0:
        raise ValueError("llm.Config.vocab_size is unset (0): set it or let the experiment take it from the tokenizer")
    if cfg.n_heads % cfg.kv_heads:
        raise ValueError(f"llm.Config: n_heads ({cfg.n_heads}) must be a multiple of n_kv_heads ({cfg.kv_heads})")
    if cfg.rope_scaling not in ("none", "linear", "llama3"):
        raise ValueError(f"llm.Config.rope_scaling must be 'none', 'linear' or 'llama3', got {cfg.rope_scaling!r}")
    if cfg.rope_scaling != "none" and cfg.rope_factor <= 0:
        raise ValueError(f"llm.Config.rope_factor must be > 0, got {cfg.rope_factor}")


def init(key: torch.Tensor, cfg: Config) -> dict:
    """fp32 params. Residual output projections get std / sqrt(2 n_layers) (GPT-2)."""
    _check(cfg)
    k_embed, k_head, *k_blocks = rng.split(key, 2 + cfg.n_layers)
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    blocks = []
    for kb in k_blocks:
        ka, km = rng.split(kb, 2)
        blocks.append(
            {
                "attn_norm": norm.init(cfg.norm, cfg.d_model),
                "attn": attention.init(
                    ka,
                    cfg.d_model,
                    n_heads=cfg.n_heads,
                    n_kv_heads=cfg.kv_heads,
                    head_dim=cfg.head_dim,
                    qk_norm=cfg.qk_norm,
                    bias=cfg.qkv_bias,
                    out_bias=cfg.out_bias,
                    std=cfg.init_std,
                    out_std=out_std,
                ),
                "mlp_norm": norm.init(cfg.norm, cfg.d_model),
                "mlp": mlp.swiglu_init(
                    km, cfg.d_model, cfg.mlp_hidden, std=cfg.init_std, out_std=out_std, bias=cfg.mlp_bias
                ),
            }
        )
    params = {
        "embed": embedding.init(k_embed, cfg.vocab_size, cfg.d_model, std=cfg.init_std),
        "blocks": blocks,
        "final_norm": norm.init(cfg.norm, cfg.d_model),
    }
    if not cfg.tie_embeddings:
        params["head"] = linear.init(k_head, cfg.d_model, cfg.vocab_size, std=cfg.init_std)
    return params


def init_shapes(cfg: Config) -> dict:
    """The params tree as meta tensors (shapes and dtypes, no memory): for counting and planning."""
    with torch.device("meta"):
        return init(rng.key(0, device="meta"), cfg)


def rope_frequencies(cfg: Config) -> torch.Tensor:
    """(head_dim / 2,) fp32 RoPE inverse frequencies for `rope_theta`, scaled as `rope_scaling` says."""
    inv_freq = rope.inv_frequencies(cfg.head_dim, cfg.rope_theta)
    if cfg.rope_scaling == "none":
        return inv_freq
    if cfg.rope_scaling == "linear":
        return rope.linear_scaled(inv_freq, cfg.rope_factor)
    if cfg.rope_scaling == "llama3":
        return rope.llama3_scaled(
            inv_freq, factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor, original_max_len=cfg.rope_original_max_len,
        )  # fmt: skip
    raise ValueError(f"llm.Config.rope_scaling {cfg.rope_scaling!r} is not one of 'none', 'linear', 'llama3'")


def embed(params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) int -> (B, T, D) input embeddings (the VLM replaces some of these with image embeddings)."""
    return embedding.apply(params["embed"], tokens)


def logits(params: dict, cfg: Config, x: torch.Tensor) -> torch.Tensor:
    """Final norm + output head: (B, T, D) -> (B, T, V)."""
    x = norm.apply(params["final_norm"], x, eps=cfg.norm_eps)
    return embedding.attend(params["embed"], x) if cfg.tie_embeddings else linear.apply(params["head"], x)


def _block(p: dict, cfg: Config, x, cos, sin, mask, causal, cache, cache_index):
    h, new_cache = attention.apply(
        p["attn"],
        norm.apply(p["attn_norm"], x, eps=cfg.norm_eps),
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.kv_heads,
        cos=cos,
        sin=sin,
        mask=mask,
        causal=causal,
        norm_eps=cfg.norm_eps,
        cache=cache,
        cache_index=cache_index,
    )
    x = x + h
    x = x + mlp.swiglu_apply(p["mlp"], norm.apply(p["mlp_norm"], x, eps=cfg.norm_eps))
    return x, new_cache


def forward(
    params: dict,
    cfg: Config,
    x: torch.Tensor,  # (B, T, D) input embeddings
    *,
    positions: torch.Tensor | None = None,  # (T,) or (B, T) absolute positions; default arange(T)
    key_valid: torch.Tensor | None = None,  # (B, S) bool: False on padding keys
    prefix_len: torch.Tensor | None = None,  # (B,) int: bidirectional prefix length (prefix-LM)
    causal: bool = True,
    hidden_layers: tuple[int, ...] = (),
    cache: list[dict] | None = None,
    remat: bool = False,
) -> dict:
    """Run the blocks on embeddings. Returns `{"x": final hidden (B, T, D) before the final norm,
    "hidden": tuple of block outputs for `hidden_layers` (negative indices allowed), "cache": new cache}`.

    With `cache` (from `init_cache`), the new keys/values are written at `positions` and queries attend to
    every cached slot at a position <= their own. `remat=True` recomputes each block in the backward pass
    (activation checkpointing; needs the autograd gradient backend)."""
    _b, t, _ = x.shape
    if positions is None:
        positions = torch.arange(t, device=x.device)
    cos, sin = rope.cos_sin(positions, rope_frequencies(cfg))
    num_keys = cache[0]["k"].shape[2] if cache is not None else t
    mask = None
    if cache is not None or key_valid is not None or prefix_len is not None or positions.dim() == 2:
        mask = masks.attention_mask(positions, num_keys, causal=causal, key_valid=key_valid, prefix_len=prefix_len)
    cache_index = None
    if cache is not None:
        if positions.dim() != 1:
            raise ValueError("cached decoding needs positions shared across the batch: shape (T,)")
        cache_index = positions
    wanted = {i % cfg.n_layers for i in hidden_layers}
    hidden, new_cache = {}, []
    for i, p in enumerate(params["blocks"]):
        layer_cache = cache[i] if cache is not None else None
        if remat and torch.is_grad_enabled():
            x, c = torch.utils.checkpoint.checkpoint(
                _block, p, cfg, x, cos, sin, mask, causal, layer_cache, cache_index, use_reentrant=False
            )
        else:
            x, c = _block(p, cfg, x, cos, sin, mask, causal, layer_cache, cache_index)
        new_cache.append(c)
        if i in wanted:
            hidden[i] = x
    return {
        "x": x,
        "hidden": tuple(hidden[i % cfg.n_layers] for i in hidden_layers),
        "cache": new_cache if cache is not None else None,
    }


def apply(params: dict, cfg: Config, tokens: torch.Tensor, **kwargs) -> dict:
    """Tokens (B, T) -> `{"logits": (B, T, V), "hidden": ..., "cache": ...}`; kwargs as in `forward`."""
    out = forward(params, cfg, embed(params, tokens), **kwargs)
    return {"logits": logits(params, cfg, out["x"]), "hidden": out["hidden"], "cache": out["cache"]}


def init_cache(cfg: Config, batch: int, max_len: int | None = None, *, dtype=torch.float32, device=None) -> list[dict]:
    """An empty KV cache for `batch` sequences of up to `max_len` (default cfg.max_seq_len) tokens."""
    max_len = max_len or cfg.max_seq_len
    return [
        attention.empty_cache(batch, cfg.kv_heads, max_len, cfg.head_dim, dtype, device) for _ in range(cfg.n_layers)
    ]


def token_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean next-token cross entropy in fp32. logits (B, T, V), targets (B, T), weights (B, T).
    Returns (mean loss, total weight); the weight lets the train step average exactly over micro-batches."""
    weights = weights.float()
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    total = weights.sum()
    return (ce * weights.flatten()).sum() / total.clamp_min(1.0), total


def chunked_token_loss(
    params: dict,
    cfg: Config,
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    chunk_elems: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_loss(logits(params, cfg, x), ...)` without materialising all logits at once: rows are processed
    in chunks of about `chunk_elems` logits, which keeps each chunk's softmax in cache (2x faster for a 50k
    vocabulary on CPU). x (B, T, D) final hidden states, targets/weights (B, T)."""
    x, targets, weights = x.flatten(0, 1), targets.flatten(), weights.flatten().float()
    rows = max(1, chunk_elems // cfg.vocab_size)
    total = x.new_zeros((), dtype=torch.float32)
    for start in range(0, x.shape[0], rows):
        lg = logits(params, cfg, x[start : start + rows]).float()  # (rows, V)
        nll = torch.logsumexp(lg, -1) - lg.gather(-1, targets[start : start + rows, None])[:, 0]
        total = total + (nll * weights[start : start + rows]).sum()
    count = weights.sum()
    return total / count.clamp_min(1.0), count


def loss(params: dict, cfg: Config, batch: dict, *, key: torch.Tensor | None = None, remat: bool = False):
    """Next-token loss on a text batch `{"tokens": (B, T+1) int, "mask": (B, T+1) bool}`: a position counts
    when its target token is real. Returns (loss, {"weight": tokens counted})."""
    del key  # deterministic model: no dropout
    tokens, mask = batch["tokens"], batch["mask"]
    out = forward(params, cfg, embed(params, tokens[:, :-1]), remat=remat)
    value, count = chunked_token_loss(params, cfg, out["x"], tokens[:, 1:], mask[:, 1:])
    return value, {"weight": count}


def matmul_params(cfg: Config) -> int:
    """Parameters that take part in matmuls per token (all but norms; the embedding lookup is not a
    matmul, the output head is)."""
    attn = cfg.d_model * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.kv_heads)
    per_block = attn + 3 * cfg.d_model * cfg.mlp_hidden
    return cfg.n_layers * per_block + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: Config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 x matmul params + attention scores and values,
    12 x n_layers x n_heads x head_dim x seq_len (PaLM appendix B; nanoGPT `estimate_mfu`)."""
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def resize_vocab(params: dict, cfg: Config, new_vocab: int) -> dict:
    """Grow the vocabulary to `new_vocab` (new special tokens such as `<image>`): new rows of `embed.w` and
    of `head.w` (when untied) are the mean of the existing rows, so new tokens start as an "average" token
    and the initial loss is barely disturbed (Hewitt, 2021, "Initializing new word embeddings"). Returns new
    params (the input is not modified); pair them with `dataclasses.replace(cfg, vocab_size=new_vocab)`.
    Shrinking is an error: it would drop trained rows."""
    old = cfg.vocab_size
    if params["embed"]["w"].shape[0] != old:
        raise ValueError(f"resize_vocab: embed.w has {params['embed']['w'].shape[0]} rows but vocab_size is {old}")
    if new_vocab < old:
        raise ValueError(
            f"resize_vocab: new_vocab={new_vocab} is smaller than vocab_size={old}; shrinking embed.w "
            f"({old} rows) would drop trained rows"
        )

    def grow(w: torch.Tensor) -> torch.Tensor:  # (old, D) -> (new_vocab, D)
        mean = w.float().mean(0, keepdim=True).to(w.dtype)
        return torch.cat([w, mean.expand(new_vocab - old, -1)], 0)

    out = {**params, "embed": {**params["embed"], "w": grow(params["embed"]["w"])}}
    if "head" in params:
        out["head"] = {**params["head"], "w": grow(params["head"]["w"])}
    return out
