"""Hugging Face SigLIP vision tower import against the transformers forward pass."""

import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only extra (pip install -e '.[dev]'): HF parity tests skipped"
)

from foundry import rng, tree
from foundry.models import hf_vit, vit

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=36,
    patch_size=8,
    layer_norm_eps=1e-5,
)  # fmt: skip  (36 px, patch 8: the conv drops 4 rows/columns)


def siglip_vision(seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def images() -> torch.Tensor:
    return rng.uniform(rng.key(5), (2, 3, 36, 36)) * 2 - 1


def test_siglip_vision_model_matches_last_hidden_state(tmp_path):
    model = siglip_vision()
    model.save_pretrained(tmp_path)
    imported = hf_vit.load(tmp_path)
    assert imported.cfg == vit.Config(image_size=36, patch_size=8, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64,
                                      eps=1e-5)  # fmt: skip
    assert imported.notes == ["not loaded: 11 tensors of the attention-pooling head (the VLM uses every patch token)"]
    x = images()
    with torch.no_grad():
        ref = model(pixel_values=x).last_hidden_state
    diff = (vit.apply(imported.params, imported.cfg, x) - ref).abs().max().item()
    print(f"siglip vision: max abs feature diff {diff:.2e}")
    assert diff <= 1e-4


def test_full_siglip_model_imports_its_vision_tower(tmp_path):
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        vision_config=VISION,
        text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, bos_token_id=1, eos_token_id=2),
    )  # fmt: skip
    model = transformers.SiglipModel(config).eval().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    imported = hf_vit.load(tmp_path)
    n = len(tree.leaves(imported.params))
    assert imported.notes[0] == f"bf16 -> fp32 for {n} tensors"
    assert any("text tower" in note for note in imported.notes)
    x = images()
    with torch.no_grad():  # the bf16 weights are exact in fp32: compare both in fp32
        ref = model.float().vision_model(pixel_values=x).last_hidden_state
    assert (vit.apply(imported.params, imported.cfg, x) - ref).abs().max() <= 1e-4


def test_unsupported_vision_configs_are_clear_errors(tmp_path):
    siglip_vision().save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"model_type 'clip_vision_model' .* is not supported"):
        hf_vit.config_from_hf({**hf, "model_type": "clip_vision_model"}, source="x/config.json")
    with pytest.raises(ValueError, match="hidden_act 'quick_gelu' is not supported"):
        hf_vit.config_from_hf({**hf, "hidden_act": "quick_gelu"})
    (tmp_path / "config.json").write_text(json.dumps({**hf, "patch_size": 4}))
    with pytest.raises(
        ValueError,
        match=r"shape mismatch: embeddings\.position_embedding\.weight in "
        r"model\.safetensors is \(16, 32\), pos_emb needs \(81, 32\)",
    ):
        hf_vit.load(tmp_path)
