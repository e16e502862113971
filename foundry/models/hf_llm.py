"""Hugging Face Llama / Qwen2 / Qwen3 causal LMs <-> `foundry.models.llm`, both ways, without `transformers`.

Supported `architectures`: LlamaForCausalLM (RoPE scaling 'linear' and 'llama3', optional attention and MLP
biases), Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (qk-norm); GQA, explicit `head_dim`, tied or untied
head. Both RoPE layouts agree: Hugging Face Llama/Qwen and `foundry.nn.rope` rotate halves
(`[-x2, x1]`), so q/k weights map without permutation. `config.json` is read in the transformers 5 form
(`rope_parameters`) and the 4.x form (`rope_theta` + `rope_scaling`).

Usage::

    imported = hf_llm.load("path/to/SmolLM2-135M")             # dtype=torch.float32 by default
    print(*imported.notes, sep="\\n")                          # e.g. "bf16 -> fp32 for 272 tensors"
    out = llm.apply(imported.params, imported.cfg, tokens)
    hf_llm.save("out/hf", params, cfg, tokenizer="runs/llm/tokenizer.json")   # loads with transformers
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from foundry import tree
from foundry.models import hf_io, llm

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}


@dataclasses.dataclass(frozen=True)
class Imported:
    cfg: llm.Config
    params: dict
    notes: list[str]  # what the import converted or left out, for the user to read


def architecture(hf: dict, *, source: str) -> str:
    """The one supported entry of `architectures`; anything else is an error naming the file."""
    archs = hf.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in ARCHITECTURES:
        raise ValueError(f"{source}: architectures {archs!r} is not supported; supported: {list(ARCHITECTURES)}")
    return archs[0]


def _field(hf: dict, key: str, source: str):
    if key not in hf:
        raise ValueError(f"{source}: missing field {key!r}")
    return hf[key]


def rope_scaling_from_hf(hf: dict, *, source: str) -> dict:
    """The `llm.Config` RoPE fields (rope_theta, rope_scaling, rope_factor, ...) from `rope_parameters`
    (transformers 5) or `rope_theta` + `rope_scaling` (4.x). Unsupported types (yarn, dynamic, longrope, ...)
    and partial rotary embeddings are errors."""
    legacy = {"rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_scaling") or {})}
    params = hf.get("rope_parameters") or legacy
    kind = params.get("rope_type", params.get("type", "default"))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"{source}: partial_rotary_factor={partial} is not supported (only full rotary embeddings)")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if kind == "default":
        return {"rope_theta": theta}
    if kind == "linear":
        return {"rope_theta": theta, "rope_scaling": "linear",
                "rope_factor": float(_field(params, "factor", f"{source} rope"))}  # fmt: skip
    if kind == "llama3":
        get = lambda k: _field(params, k, f"{source} rope_type 'llama3'")
        return {
            "rope_theta": theta, "rope_scaling": "llama3", "rope_factor": float(get("factor")),
            "rope_low_freq_factor": float(get("low_freq_factor")),
            "rope_high_freq_factor": float(get("high_freq_factor")),
            "rope_original_max_len": int(get("original_max_position_embeddings")),
        }  # fmt: skip
    raise ValueError(f"{source}: rope_type {kind!r} is not supported; supported: 'default', 'linear', 'llama3'")


def config_from_hf(hf: dict, *, source: str = hf_io.CONFIG) -> llm.Config:
    """Our `llm.Config` from a Hugging Face `config.json` dict (vocabulary as the checkpoint's embedding)."""
    arch = architecture(hf, source=source)
    get = lambda k: _field(hf, k, source)
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (SwiGLU needs 'silu')")
    if hf.get("use_sliding_window"):
        raise ValueError(f"{source}: use_sliding_window=true is not supported (full attention only)")
    d, n_heads = int(get("hidden_size")), int(get("num_attention_heads"))
    head_dim = int(hf.get("head_dim") or d // n_heads)
    rope_fields = rope_scaling_from_hf(hf, source=source)
    attention_bias = bool(hf.get("attention_bias", False))
    cfg = llm.Config(
        d_model=d,
        n_layers=int(get("num_hidden_layers")),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        head_dim_override=None if head_dim == d // n_heads else head_dim,
        vocab_size=int(get("vocab_size")),
        norm="rms",
        norm_eps=float(get("rms_norm_eps")),
        qk_norm=arch == "Qwen3ForCausalLM",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        **rope_fields,
        qkv_bias=arch == "Qwen2ForCausalLM" or attention_bias,
        out_bias=arch != "Qwen2ForCausalLM" and attention_bias,
        mlp_bias=arch == "LlamaForCausalLM" and bool(hf.get("mlp_bias", False)),
    )
    hidden = int(get("intermediate_size"))
    return cfg if hidden == cfg.mlp_hidden else dataclasses.replace(cfg, mlp_hidden_override=hidden)


def config_to_hf(cfg: llm.Config) -> dict:
    """A Hugging Face `config.json` dict for `cfg`: Qwen3 when it has qk-norm, Qwen2 when it has q/k/v
    biases only, Llama otherwise. Shapes no family has (LayerNorm, mixed biases) are errors."""
    if cfg.norm != "rms":
        raise ValueError(f"llm.Config.norm={cfg.norm!r}: Llama/Qwen checkpoints use RMSNorm; export needs norm='rms'")
    if cfg.qk_norm:
        arch = "Qwen3ForCausalLM"
    elif cfg.qkv_bias and not cfg.out_bias:
        arch = "Qwen2ForCausalLM"
    else:
        arch = "LlamaForCausalLM"
    if arch != "Qwen2ForCausalLM" and cfg.qkv_bias != cfg.out_bias:
        raise ValueError(f"{arch} has attention biases on q, k, v and o or on none; got qkv_bias={cfg.qkv_bias}, "
                         f"out_bias={cfg.out_bias}")  # fmt: skip
    if cfg.mlp_bias and arch != "LlamaForCausalLM":
        raise ValueError(f"{arch} has no MLP biases; llm.Config.mlp_bias=True exports only as Llama (no qk-norm)")
    kind = cfg.rope_scaling
    rope = {"rope_type": "default" if kind == "none" else kind, "rope_theta": cfg.rope_theta}
    if kind != "none":
        rope["factor"] = cfg.rope_factor
    if kind == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_len)  # fmt: skip
    hf = {
        "architectures": [arch],
        "model_type": _MODEL_TYPES[arch],
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_parameters": rope,
        "attention_dropout": 0.0,
        "dtype": "float32",
    }
    if arch != "Qwen2ForCausalLM":
        hf["attention_bias"] = cfg.qkv_bias
    if arch == "LlamaForCausalLM":
        hf["mlp_bias"] = cfg.mlp_bias
    else:
        hf["use_sliding_window"] = False
    return hf


def hf_names(cfg: llm.Config) -> dict[str, str]:
    """`{our dotted param path: Hugging Face tensor name}` for every param of `llm.init(cfg)`."""
    names = {"embed.w": "model.embed_tokens.weight", "final_norm.scale": "model.norm.weight"}
    if not cfg.tie_embeddings:
        names["head.w"] = "lm_head.weight"
    linears = {"attn.wq": "self_attn.q_proj", "attn.wk": "self_attn.k_proj", "attn.wv": "self_attn.v_proj",
               "attn.wo": "self_attn.o_proj", "mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj",
               "mlp.down": "mlp.down_proj"}  # fmt: skip
    biased = {
        "attn.wq": cfg.qkv_bias, "attn.wk": cfg.qkv_bias, "attn.wv": cfg.qkv_bias, "attn.wo": cfg.out_bias,
        "mlp.gate": cfg.mlp_bias, "mlp.up": cfg.mlp_bias, "mlp.down": cfg.mlp_bias,
    }  # fmt: skip
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "attn_norm.scale"] = theirs + "input_layernorm.weight"
        names[ours + "mlp_norm.scale"] = theirs + "post_attention_layernorm.weight"
        if cfg.qk_norm:
            names[ours + "attn.q_norm.scale"] = theirs + "self_attn.q_norm.weight"
            names[ours + "attn.k_norm.scale"] = theirs + "self_attn.k_norm.weight"
        for o, t in linears.items():
            names[f"{ours}{o}.w"] = f"{theirs}{t}.weight"
            if biased[o]:
                names[f"{ours}{o}.b"] = f"{theirs}{t}.bias"
    return names


def load(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Imported:
    """Import a Hugging Face Llama/Qwen2/Qwen3 directory: config, params in `dtype` (default fp32, the
    master-weight dtype; conversions are listed in `notes`). Strict: see `hf_io.take`."""
    ckpt = hf_io.read(path)
    cfg = config_from_hf(ckpt.config, source=str(ckpt.path / hf_io.CONFIG))
    unused = {}
    if cfg.tie_embeddings and {"lm_head.weight", "model.embed_tokens.weight"} <= set(ckpt.tensors):
        # Some tied checkpoints store the head anyway; it must be the embedding, or "tied" is a lie.
        if not torch.equal(ckpt.tensors["lm_head.weight"], ckpt.tensors["model.embed_tokens.weight"]):
            raise ValueError(f"{ckpt.path}: tie_word_embeddings is true but lm_head.weight in "
                             f"{ckpt.files['lm_head.weight']} differs from model.embed_tokens.weight")  # fmt: skip
        unused["lm_head.weight"] = "the tied output head (a copy of model.embed_tokens.weight)"
    template = llm.init_shapes(cfg)
    flat, notes = hf_io.take(ckpt, hf_names(cfg), tree.flatten(template), dtype=dtype, unused=unused)
    return Imported(cfg=cfg, params=hf_io.params_from(flat, template), notes=notes)


def save(
    path: str | os.PathLike,
    params: dict,
    cfg: llm.Config,
    *,
    tokenizer: str | os.PathLike | None = None,
) -> Path:
    """Export our LLM as a Hugging Face directory (config.json, model.safetensors, tokenizer.json when given)
    that `transformers` loads as Llama/Qwen2/Qwen3 (see `config_to_hf`). Tensors keep their dtype."""
    hf = config_to_hf(cfg)
    flat = tree.flatten(params)
    names = hf_names(cfg)
    if set(flat) != set(names):
        raise ValueError(f"params do not match the config: {sorted(set(flat) ^ set(names))[:12]} differ")
    dtypes = {t.dtype for t in flat.values()}
    if len(dtypes) == 1:
        hf["dtype"] = str(dtypes.pop()).removeprefix("torch.")
    return hf_io.write(path, hf, {names[k]: v for k, v in flat.items()}, tokenizer=tokenizer)
