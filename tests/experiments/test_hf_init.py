"""The LLM and VLM stages start from Hugging Face directories (--init.hf, --init.hf-vision)."""

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only extra (pip install -e '.[dev]'): HF init tests skipped"
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from experiments import export_hf
from experiments import llm as llm_exp
from experiments import vlm as vlm_exp
from foundry import tree
from foundry.data.make_shapes import MakeShapesConfig, make_shapes
from foundry.data.tokenizer import SPECIAL_TOKENS, load_tokenizer
from foundry.models import hf_llm, llm
from foundry.train import checkpoint, runs
from foundry.train.config import RunConfig


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    make_shapes(MakeShapesConfig(out=str(out), train_samples=48, val_samples=8, image_size=32), log=lambda *a: None)
    return out


def hf_tokenizer(texts) -> Tokenizer:
    """A byte-level BPE like a Hub model's: its own end-of-text token, none of ours."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory, shapes):
    path = tmp_path_factory.mktemp("hf") / "llama"
    captions = [json.dumps(i) for i in range(200)] + ["a red circle", "a blue square on the left"] * 20
    tok = hf_tokenizer(captions)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    return path


def llm_cfg(shapes, run_dir, hf_dir) -> llm_exp.LLMExperiment:
    cfg = llm_exp.PRESETS["llm-debug"][1]
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, manifests=(str(shapes / "train/manifest.jsonl"),), val_manifests=()),
        text=dataclasses.replace(cfg.text, seq_len=16),
        init=llm_exp.InitConfig(hf=str(hf_dir)),
        train=dataclasses.replace(cfg.train, total_train_samples=16, num_checkpoints=1,
                                  schedule=dataclasses.replace(cfg.train.schedule, peak_lr=1e-12, warmup_steps=1)),
        run=RunConfig(run_dir=str(run_dir), tracker="none", peak_tflops=1.0),
    )  # fmt: skip


def test_llm_then_vlm_start_from_hugging_face_directories(shapes, hf_llama, tmp_path, capsys):
    llm_exp.train(llm_cfg(shapes, tmp_path / "llm", hf_llama))
    assert "bf16 -> fp32 for 21 tensors" in capsys.readouterr().out
    imported = hf_llm.load(hf_llama)
    saved = checkpoint.load(checkpoint.latest(tmp_path / "llm"))
    tok = load_tokenizer(tmp_path / "llm/tokenizer.json")
    assert tok.token_to_id("<|endoftext|>") == 0 and all(tok.token_to_id(t) is not None for t in SPECIAL_TOKENS)
    assert saved.config["model"]["vocab_size"] == 305 == imported.cfg.vocab_size + 5  # grown by our specials
    assert saved.config["model"]["d_model"] == 32 and saved.config["model"]["qk_norm"] is False  # not the preset's
    params = saved.state["params"]
    assert tree.allclose(params["blocks"], imported.params["blocks"], atol=1e-6)  # lr 1e-12: still the import
    assert torch.allclose(params["embed"]["w"][:300], imported.params["embed"]["w"], atol=1e-6)

    # Exported back, the run loads in transformers and gives the same logits; its tokenizer goes along.
    out = export_hf.export(export_hf.ExportConfig(run=str(tmp_path / "llm"), out=str(tmp_path / "export")))
    assert (out / "tokenizer.json").read_text() == (tmp_path / "llm/tokenizer.json").read_text()
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([tok.encode("a red circle").ids])
    mcfg = runs.config_from_dict(llm.Config, saved.config["model"])
    with torch.no_grad():
        assert (model(input_ids=ids).logits - llm.apply(params, mcfg, ids)["logits"]).abs().max() <= 1e-4

    # The VLM composes --init.llm (that run) with --init.hf-vision (a SigLIP tower, 32 px, patch 8).
    torch.manual_seed(1)
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=32, patch_size=8)  # fmt: skip
    transformers.SiglipVisionModel(vision).save_pretrained(tmp_path / "siglip")
    cfg = vlm_exp.PRESETS["vlm-debug"][1]
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, manifests=(str(shapes / "train/manifest.jsonl"),),
                                 val_manifests=(str(shapes / "val/manifest.jsonl"),)),
        init=vlm_exp.VLMInit(llm=str(tmp_path / "llm"), hf_vision=str(tmp_path / "siglip")),
        train=dataclasses.replace(cfg.train, total_train_samples=16, num_checkpoints=1),
        run=RunConfig(run_dir=str(tmp_path / "vlm"), tracker="none", peak_tflops=1.0),
        eval_samples=0,
    )  # fmt: skip
    vlm_exp.train(cfg)
    assert "not loaded: 11 tensors of the attention-pooling head" in capsys.readouterr().out
    saved = checkpoint.load(checkpoint.latest(tmp_path / "vlm"))
    assert saved.config["model"]["vit"]["d_model"] == 16 and saved.config["model"]["llm"]["d_model"] == 32

    with pytest.raises(ValueError, match=r"--init\.hf-vision and --init\.from-run both"):
        vlm_exp.train(dataclasses.replace(cfg, init=vlm_exp.VLMInit(from_run=str(tmp_path / "vlm"),
                                                                    hf_vision=str(tmp_path / "siglip"))))  # fmt: skip


def test_llm_init_conflicts_are_clear_errors(shapes, hf_llama, tmp_path):
    cfg = llm_cfg(shapes, tmp_path / "a", hf_llama)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=48))
    with pytest.raises(ValueError, match=r"--init.hf .* disagrees with the checkpoint: d_model=48 \(checkpoint: 32\)"):
        llm_exp.train(wider)
    with pytest.raises(ValueError, match=r"--init\.hf and --init\.from-run both"):
        llm_exp.train(dataclasses.replace(cfg, init=llm_exp.InitConfig(hf=str(hf_llama), from_run=str(tmp_path))))
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((hf_llama / f).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer\.json; .* --tokenizer\.path"):
        llm_exp.train(dataclasses.replace(cfg, init=llm_exp.InitConfig(hf=str(bare))))
