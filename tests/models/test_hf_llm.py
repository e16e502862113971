"""Hugging Face Llama / Qwen2 / Qwen3 import and export against the transformers forward pass."""

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only extra (pip install -e '.[dev]'): HF parity tests skipped"
)

from foundry import rng, tree
from foundry.models import hf_llm, llm

SIZES = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=256)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}  # fmt: skip
FAMILIES = {
    "llama-untied": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-tied-bias-llama3": ("LlamaConfig", "LlamaForCausalLM",
                               {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True,
                                "rope_parameters": LLAMA3}),
    "llama-linear-rope": ("LlamaConfig", "LlamaForCausalLM",
                          {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}}),
    "qwen2-bias": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3-qknorm-headdim": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16, "tie_word_embeddings": False}),
}  # fmt: skip


def hf_model(family: str, seed: int = 0):
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**SIZES, **extra)).eval()
    with torch.no_grad():  # norms and biases start at 1 / 0: randomise them so the mapping is really tested
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(n: int = 40) -> torch.Tensor:
    return rng.randint(rng.key(7), (2, n), 0, SIZES["vocab_size"])  # 40 > 16: past llama3's original context


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", list(FAMILIES))
def test_import_matches_transformers_logits(family, tmp_path):
    model = hf_model(family)
    model.save_pretrained(tmp_path)
    imported = hf_llm.load(tmp_path)
    ids = tokens()
    ours = llm.apply(imported.params, imported.cfg, ids)["logits"]
    diff = (ours - hf_logits(model, ids)).abs().max().item()
    print(f"{family}: max abs logit diff {diff:.2e}")
    assert diff <= 1e-4
    # The logits of a tiny random model barely depend on RoPE scaling: check the frequencies themselves.
    torch.testing.assert_close(llm.rope_frequencies(imported.cfg), model.model.rotary_emb.inv_freq, rtol=1e-6, atol=0)
    assert imported.notes == []  # fp32 checkpoint into fp32: nothing converted, nothing left out
    expected_tied = model.config.tie_word_embeddings
    assert imported.cfg.tie_embeddings == expected_tied and ("head" in imported.params) != expected_tied


def test_config_fields_are_derived(tmp_path):
    hf_model("llama-tied-bias-llama3").save_pretrained(tmp_path / "l")
    cfg = hf_llm.load(tmp_path / "l").cfg
    rope = (cfg.rope_scaling, cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor)
    assert rope == ("llama3", 8.0, 1.0, 4.0) and cfg.rope_original_max_len == 16 and cfg.rope_theta == 500000.0
    assert (cfg.qkv_bias, cfg.out_bias, cfg.mlp_bias, cfg.qk_norm) == (True, True, True, False)
    hf_model("qwen3-qknorm-headdim").save_pretrained(tmp_path / "q")
    cfg = hf_llm.load(tmp_path / "q").cfg
    assert (cfg.head_dim, cfg.kv_heads, cfg.norm_eps, cfg.qk_norm, cfg.mlp_hidden) == (16, 2, 1e-6, True, 48)


def test_transformers_4_config_form(tmp_path):
    # Hub checkpoints saved by transformers 4.x carry rope_theta + rope_scaling instead of rope_parameters.
    model = hf_model("llama-tied-bias-llama3")
    model.save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    rope = hf.pop("rope_parameters")
    hf["rope_theta"] = rope.pop("rope_theta")
    hf["rope_scaling"] = rope
    (tmp_path / "config.json").write_text(json.dumps(hf))
    imported = hf_llm.load(tmp_path)
    assert imported.cfg.rope_scaling == "llama3" and imported.cfg.rope_theta == 500000.0
    ids = tokens()
    assert (llm.apply(imported.params, imported.cfg, ids)["logits"] - hf_logits(model, ids)).abs().max() <= 1e-4


def test_sharded_bf16_checkpoint(tmp_path):
    model = hf_model("qwen3-qknorm-headdim").to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    imported = hf_llm.load(tmp_path)
    n = len(tree.leaves(imported.params))
    assert imported.notes == [f"bf16 -> fp32 for {n} tensors"]
    ref = model.state_dict()["model.layers.1.self_attn.k_norm.weight"].float()
    assert torch.equal(imported.params["blocks"][1]["attn"]["k_norm"]["scale"], ref)
    kept = hf_llm.load(tmp_path, dtype=torch.bfloat16)
    assert kept.notes == [] and kept.params["embed"]["w"].dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["llama-untied", "llama-tied-bias-llama3", "qwen2-bias", "qwen3-qknorm-headdim"])
def test_export_round_trips_and_loads_in_transformers(family, tmp_path):
    model = hf_model(family)
    model.save_pretrained(tmp_path / "src")
    cfg = hf_llm.load(tmp_path / "src").cfg
    params = llm.init(rng.key(3), cfg)  # Foundry-made weights (random biases would be zero: perturb all)
    params = tree.map(lambda x: x + 0.05 * torch.randn_like(x), params)
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"version": "1.0"}')
    hf_llm.save(tmp_path / "out", params, cfg, tokenizer=tok)
    assert (tmp_path / "out/tokenizer.json").read_text() == tok.read_text()
    back = hf_llm.load(tmp_path / "out")
    assert back.cfg == cfg
    flat, flat_back = tree.flatten(params), tree.flatten(back.params)
    assert flat.keys() == flat_back.keys() and all(torch.equal(flat[k], flat_back[k]) for k in flat)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(loaded).__name__ == type(model).__name__
    ids = tokens()
    diff = (llm.apply(params, cfg, ids)["logits"] - hf_logits(loaded, ids)).abs().max().item()
    assert diff <= 1e-4, diff


def test_export_refuses_existing_dirs_and_unexportable_configs(tmp_path):
    cfg = llm.preset("debug", vocab_size=64)
    params = llm.init(rng.key(0), cfg)
    hf_llm.save(tmp_path / "a", params, cfg)
    with pytest.raises(FileExistsError, match="already exists"):
        hf_llm.save(tmp_path / "a", params, cfg)
    with pytest.raises(ValueError, match="norm='rms'"):
        layer = dataclasses.replace(cfg, norm="layer")
        hf_llm.save(tmp_path / "b", llm.init(rng.key(0), layer), layer)
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporaries left


def test_unsupported_configs_are_clear_errors(tmp_path):
    hf_model("llama-untied").save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"architectures \['MistralForCausalLM'\] is not supported"):
        hf_llm.config_from_hf({**hf, "architectures": ["MistralForCausalLM"]}, source="x/config.json")
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        hf_llm.config_from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, source="x")
    with pytest.raises(ValueError, match="missing field 'hidden_size'"):
        hf_llm.config_from_hf({k: v for k, v in hf.items() if k != "hidden_size"}, source="x")
    with pytest.raises(ValueError, match="use_sliding_window"):
        hf_llm.config_from_hf({**hf, "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True}, source="x")


def test_shape_mismatch_and_unmapped_tensors_are_named(tmp_path):
    hf_model("llama-untied").save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "intermediate_size": 64}))
    with pytest.raises(
        ValueError,
        match=r"shape mismatch: model\.layers\.0\.mlp\.gate_proj\.weight in "
        r"model\.safetensors is \(48, 32\), blocks\.0\.mlp\.gate\.w needs \(64, 32\)",
    ):
        hf_llm.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "num_hidden_layers": 1}))
    with pytest.raises(
        ValueError,
        match=r"unmapped checkpoint tensors \[model\.layers\.1\.input_layernorm\.weight "
        r"\(32,\) in model\.safetensors",
    ):
        hf_llm.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"missing tensor model\.layers\.2\.input_layernorm\.weight \(32,\)"):
        hf_llm.load(tmp_path)
