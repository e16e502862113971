"""End-to-end tests of the VLM stage: smoke run, initialisation from an LLM run, resume, errors."""

import dataclasses

import pytest
import torch

from experiments import llm as llm_exp
from experiments import vlm as exp
from foundry import tree
from foundry.data.make_shapes import MakeShapesConfig, make_shapes
from foundry.data.make_text import write_text_dataset
from foundry.train import checkpoint
from foundry.train.config import RunConfig


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    make_shapes(MakeShapesConfig(out=str(out), train_samples=96, val_samples=16, image_size=32), log=lambda *a: None)
    return out


def debug_cfg(data, run_dir, **train_overrides) -> exp.VLMExperiment:
    cfg = exp.PRESETS["vlm-debug"][1]
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, manifests=(str(data / "train/manifest.jsonl"),), val_manifests=(str(data / "val/manifest.jsonl"),)
        ),
        train=dataclasses.replace(cfg.train, total_train_samples=32, **train_overrides),
        run=RunConfig(run_dir=str(run_dir), tracker="none", peak_tflops=1.0),
        eval_samples=4,
    )


def test_debug_preset_trains_and_evaluates(shapes, tmp_path):
    result = exp.train(debug_cfg(shapes, tmp_path / "run"))
    assert result.metrics["val_loss"] < 6.5  # below ln(512)
    assert 0.0 <= result.metrics["val_acc_color"] <= 1.0 and "val_blind_acc_color" in result.metrics
    ckpt = checkpoint.latest(tmp_path / "run")
    assert (ckpt / "tokenizer.json").exists()
    state = checkpoint.load(ckpt).state
    assert set(state["params"]) == {"vit", "projector", "llm"}


def test_initialisation_from_an_llm_run_and_resume(shapes, tmp_path):
    # An LLM run trained on the caption text, standing in for llm-shakespeare.
    llm_cfg = llm_exp.PRESETS["llm-debug"][1]
    llm_cfg = dataclasses.replace(
        llm_cfg,
        data=dataclasses.replace(llm_cfg.data, manifests=(str(shapes / "train/manifest.jsonl"),), val_manifests=()),
        text=dataclasses.replace(llm_cfg.text, seq_len=16),
        train=dataclasses.replace(llm_cfg.train, total_train_samples=32),
        run=RunConfig(run_dir=str(tmp_path / "llm"), tracker="none", peak_tflops=1.0),
    )
    llm_exp.train(llm_cfg)
    llm_params = checkpoint.load_params(tmp_path / "llm")

    frozen = dataclasses.replace(exp.PRESETS["vlm-debug"][1].train.optimizer, frozen=(r"^vit\.", r"^llm\."))
    cfg = debug_cfg(shapes, tmp_path / "vlm", optimizer=frozen)
    cfg = dataclasses.replace(cfg, init=exp.VLMInit(llm=str(tmp_path / "llm")))
    exp.train(cfg, max_steps=2)  # stops inside window 2 -> resumes from window 1's checkpoint
    exp.train(cfg)
    vlm_params = checkpoint.load_params(tmp_path / "vlm")
    # The LLM came from the LLM run (frozen here, so it is still equal) and so did the tokenizer.
    assert tree.equal(vlm_params["llm"], llm_params), tree.first_difference(vlm_params["llm"], llm_params)
    assert (tmp_path / "vlm/tokenizer.json").read_text() == (tmp_path / "llm/tokenizer.json").read_text()
    saved = checkpoint.load(checkpoint.latest(tmp_path / "vlm")).config
    assert saved["model"]["llm"]["d_model"] == llm_cfg.model.d_model
    assert saved["init"]["llm"] == str(tmp_path / "llm")


def test_bad_inputs_are_clear_errors(shapes, tmp_path):
    cfg = debug_cfg(shapes, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="make_shapes"):
        exp.train(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, manifests=("nope/manifest.jsonl",))))
    with pytest.raises(FileNotFoundError, match=r"tokenizer.json not found in .*not-a-run"):
        exp.train(dataclasses.replace(cfg, init=exp.VLMInit(llm=str(tmp_path / "not-a-run"))))


def test_text_only_rows_mix_with_captions(shapes, tmp_path):
    # Co-training: a text-only dataset mixed in by weight keeps the language loss alongside the captions.
    lines = [f"Line {i}: to be or not to be, that is the question." for i in range(40)]
    write_text_dataset(lines, tmp_path / "text", samples_per_shard=16)
    text = tmp_path / "text/manifest.jsonl"
    cfg = debug_cfg(shapes, tmp_path / "mix")
    mixed = dataclasses.replace(cfg.data, manifests=(*cfg.data.manifests, str(text)), weights=(0.7, 0.3))
    result = exp.train(dataclasses.replace(cfg, data=mixed))
    assert torch.isfinite(torch.tensor(result.metrics["train_loss"]))


def test_tokenizer_option_takes_a_file_or_a_run_dir(shapes, tmp_path):
    exp.train(debug_cfg(shapes, tmp_path / "a"))
    for source in (tmp_path / "a", tmp_path / "a/tokenizer.json"):
        run_dir = tmp_path / f"b{len(str(source))}"
        cfg = dataclasses.replace(debug_cfg(shapes, run_dir), tokenizer=str(source))
        exp.resolve_tokenizer(cfg, run_dir.mkdir() or run_dir)
        assert (run_dir / "tokenizer.json").read_text() == (tmp_path / "a/tokenizer.json").read_text()
