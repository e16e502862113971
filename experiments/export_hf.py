"""Export a trained LLM run as a Hugging Face model directory (config.json, model.safetensors, tokenizer.json)
that `transformers` loads as Llama / Qwen2 / Qwen3 (see `foundry.models.hf_llm.config_to_hf`).

Usage:
    python experiments/export_hf.py --run runs/llm-shakespeare --out exports/llm-shakespeare
    python experiments/export_hf.py --run runs/llm-shakespeare/checkpoints/step_00000400 --out exports/x
    # then, e.g.: transformers.AutoModelForCausalLM.from_pretrained("exports/llm-shakespeare")

The newest checkpoint of a run directory is exported (or the given checkpoint directory); the output is
written atomically and never overwrites an existing directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from foundry.models import hf_llm, llm
from foundry.train import checkpoint, runs


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    run: str  # an LLM run directory (its newest checkpoint) or a checkpoint directory
    out: str  # the Hugging Face directory to create


def export(cfg: ExportConfig) -> Path:
    """Write `cfg.run`'s LLM params, config and tokenizer to `cfg.out`; returns the new directory."""
    model = runs.run_config(cfg.run).get("model")
    if not isinstance(model, dict) or "d_model" not in model:
        raise ValueError(f"{cfg.run}: config.json has no LLM 'model' section; export supports LLM runs")
    mcfg = runs.config_from_dict(llm.Config, model)
    params = checkpoint.load_params(cfg.run)
    return hf_llm.save(cfg.out, params, mcfg, tokenizer=runs.run_file(cfg.run, "tokenizer.json"))


if __name__ == "__main__":
    print(f"exported to {export(tyro.cli(ExportConfig))}")
