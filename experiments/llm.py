"""LLM stage: train a decoder-only language model on text shards.

Usage:
    python -m foundry.data.make_text --out data/shakespeare      # once: Shakespeare shards (train + val)
    python experiments/llm.py llm-debug                            # seconds
    python experiments/llm.py llm-shakespeare                      # ~10 min on 2 CPU cores
    python experiments/llm.py llm-shakespeare --train.total-train-samples 8192 --run-dir runs/x
    python experiments/llm.py llm-debug --print-config         # show the resolved config, no training
    # start from pretrained weights: a Hugging Face Llama/Qwen2/Qwen3 directory (config.json, *.safetensors,
    # tokenizer.json); the model shape comes from its config.json, the training setup from the preset
    python experiments/llm.py llm-shakespeare --init.hf ~/models/SmolLM2-135M --run-dir runs/llm-smol
    torchrun --nproc-per-node 2 experiments/llm.py llm-debug      # 2 processes, each half of every batch

Running the same command again resumes the run directory from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import torch
import tyro

from foundry import rng, tree
from foundry.data.config import DataConfig, TextConfig
from foundry.data.sources import check_manifests, training_source, validation_batches
from foundry.data.text import text_functions, texts_from_manifests
from foundry.data.tokenizer import special_ids
from foundry.infer.generate import Sampling, generate
from foundry.models import hf_llm, llm
from foundry.train import checkpoint, dist, loop, runs
from foundry.train.config import AdamWConfig, RunConfig, ScheduleConfig, TrainConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    path: str | None = None  # an existing tokenizer.json; None trains one on the training text
    vocab_size: int = 4096
    train_bytes: int = 8_000_000  # text read to train it


@dataclasses.dataclass(frozen=True)
class InitConfig:
    from_run: str | None = None  # start from another run's weights (run or checkpoint dir) and tokenizer
    # A Hugging Face Llama/Qwen2/Qwen3 directory: its config.json replaces the preset's model shape, its
    # weights start the run and its tokenizer.json (or --tokenizer.path) is the run's tokenizer.
    hf: str | None = None


@dataclasses.dataclass(frozen=True)
class LLMExperiment:
    model: llm.Config = llm.PRESETS["11m"]
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    init: InitConfig = InitConfig()
    train: TrainConfig = TrainConfig()
    # Flags without a prefix: --run-dir, --tracker, --aim-repo, --device, --peak-tflops, --print-config.
    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = RunConfig(run_dir="runs/llm")
    sample_prompt: str = "ROMEO:"  # a sample generation is logged after every window


SHAKESPEARE = DataConfig(
    manifests=("data/shakespeare/train/manifest.jsonl",),
    val_manifests=("data/shakespeare/val/manifest.jsonl",),
    val_samples=128,
    num_workers=1,
)

PRESETS = {
    "llm-debug": (
        "A few hundred thousand parameters, 32 steps, eager: a smoke test in seconds.",
        LLMExperiment(
            model=llm.PRESETS["debug"],
            data=dataclasses.replace(SHAKESPEARE, val_samples=32, num_workers=0),
            text=TextConfig(seq_len=64),
            tokenizer=TokenizerConfig(vocab_size=512, train_bytes=1_000_000),
            train=TrainConfig(
                total_train_samples=256,
                num_checkpoints=2,
                global_batch_size=8,
                schedule=ScheduleConfig(peak_lr=3e-3, warmup_steps=4),
                compile=False,
                log_every=4,
            ),
            run=RunConfig(run_dir="runs/llm-debug"),
        ),
    ),
    "llm-shakespeare": (
        "The 11m shape on the Shakespeare shards with the project's own 4096-token BPE, bf16, ~10 min here.",
        LLMExperiment(
            model=llm.PRESETS["11m"],
            data=SHAKESPEARE,
            text=TextConfig(seq_len=256),
            train=TrainConfig(
                total_train_samples=32 * 800,
                num_checkpoints=4,
                global_batch_size=32,
                precision="bf16",
                schedule=ScheduleConfig(peak_lr=2e-3, warmup_steps=100, floor_fraction=0.1),
                optimizer=AdamWConfig(weight_decay=0.1),
                log_every=20,
            ),
            run=RunConfig(run_dir="runs/llm-shakespeare"),
        ),
    ),
}


DATA_HINT = (
    "make the Shakespeare shards with `python -m foundry.data.make_text --out data/shakespeare` (or `make data`), "
    "or point --data.manifests / --data.val-manifests at your own"
)


def resolve_tokenizer(cfg: LLMExperiment, run_dir: Path):
    """See `runs.run_tokenizer`; a new BPE is trained on the training text. With --init.hf the checkpoint's
    tokenizer.json (or --tokenizer.path): its embedding rows belong to those ids."""
    texts = lambda: texts_from_manifests(cfg.data.manifests, max_bytes=cfg.tokenizer.train_bytes)
    path = cfg.tokenizer.path
    if cfg.init.hf and path is None:
        path = str(Path(cfg.init.hf) / "tokenizer.json")
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"--init.hf {cfg.init.hf} has no tokenizer.json; its embeddings need the tokenizer they were "
                "trained with: pass it with --tokenizer.path"
            )
    return runs.run_tokenizer(
        run_dir, init_run=cfg.init.from_run, path=path, train_texts=texts, vocab_size=cfg.tokenizer.vocab_size,
    )  # fmt: skip


def import_hf(cfg: LLMExperiment) -> hf_llm.Imported | None:
    """The --init.hf checkpoint (fp32), its notes printed; None without --init.hf."""
    if not cfg.init.hf:
        return None
    if cfg.init.from_run:
        raise ValueError("--init.hf and --init.from-run both give the starting weights: choose one")
    imported = hf_llm.load(cfg.init.hf, dtype=torch.float32)
    for note in imported.notes:
        print(f"llm: --init.hf {cfg.init.hf}: {note}")
    return imported


def resolve_model(cfg: LLMExperiment, tok, imported: hf_llm.Imported | None) -> llm.Config:
    """The model config: the preset's, or the imported checkpoint's shape (see `runs.imported_model_config`);
    the vocabulary from the tokenizer (at least the checkpoint's, which may be padded beyond it)."""
    mcfg = cfg.model
    if imported is not None:
        presets = [*llm.PRESETS.values(), *(c.model for _, c in PRESETS.values())]
        mcfg = runs.imported_model_config(
            mcfg, imported.cfg, presets=presets, keep=("max_seq_len", "init_std"), flag="--init.hf", source=cfg.init.hf
        )  # fmt: skip
        return dataclasses.replace(mcfg, vocab_size=max(mcfg.vocab_size, tok.get_vocab_size()))
    if mcfg.vocab_size == 0:
        mcfg = dataclasses.replace(mcfg, vocab_size=tok.get_vocab_size())
    return mcfg


def train(cfg: LLMExperiment, *, max_steps: int | None = None) -> loop.Result:
    """Run (or resume) the LLM stage described by `cfg`; returns the loop's result. `max_steps` stops this
    call early (a simulated interruption, for tests)."""
    check_manifests((*cfg.data.manifests, *cfg.data.val_manifests), hint=DATA_HINT)
    run_dir = Path(cfg.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    imported = import_hf(cfg)
    tok = resolve_tokenizer(cfg, run_dir)
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg, tok, imported))
    mcfg, tcfg, device = cfg.model, cfg.train, cfg.run.device
    tracker = runs.start(cfg.run, experiment="llm", config=runs.to_dict(cfg), tags=("llm",))

    init_key, train_key = rng.split(rng.key(tcfg.seed))
    params = llm.init(init_key, mcfg)
    if cfg.init.from_run:
        loaded = checkpoint.load_params(cfg.init.from_run)
        checkpoint.check_compatible(params, loaded, what="params", source=cfg.init.from_run)
        params = loaded
    if imported is not None:  # the tokenizer may have grown by our special tokens: new rows = mean row
        loaded = llm.resize_vocab(imported.params, imported.cfg, mcfg.vocab_size)
        checkpoint.check_compatible(params, loaded, what="params", source=cfg.init.hf)
        params = loaded
    params = tree.map(lambda x: x.to(device), params)
    optimizer = AdamW(tcfg.optimizer, params)
    state = init_state(params, optimizer, train_key, use_ema=tcfg.ema.enabled)

    world = dist.current()
    rows = tcfg.rank_batch_size(world.size)  # this process's share of every global batch
    decode, collate = text_functions(cfg.text, tok, batch_size=rows, vocab_size=mcfg.vocab_size)
    per_batch = cfg.text.samples_per_batch(rows)
    batches = training_source(
        cfg.data, seed=tcfg.seed, batch_size=per_batch, batches_per_window=tcfg.steps_per_window,
        decode=decode, collate=collate, rank=world.rank, world_size=world.size,
    )  # fmt: skip
    loss_fn = lambda p, b, *, key: llm.loss(p, mcfg, b, key=key, remat=tcfg.remat)
    ids = special_ids(tok)

    def evaluate(state: dict) -> dict[str, float]:
        metrics = {}
        for name, params in [("", state["params"]), ("ema_", state.get("ema"))]:
            if params is None or not cfg.data.val_manifests:
                continue
            val_batches = validation_batches(cfg.data, batch_size=per_batch, decode=decode, collate=collate)
            loss = runs.mean_loss(loss_fn, params, val_batches, device=device)
            metrics[f"{name}loss"], metrics[f"{name}perplexity"] = loss, math.exp(min(loss, 50.0))
        prompt = torch.tensor([[ids["<bos>"], *tok.encode(cfg.sample_prompt).ids]], device=device)
        out = generate(state["params"], mcfg, prompt, max_new_tokens=48, sampling=Sampling(temperature=0.8, top_k=40),
                       key=rng.fold_in(train_key, int(state["step"])), stop_tokens=(ids["<eos>"],))  # fmt: skip
        tracker.log_text("sample", cfg.sample_prompt + tok.decode(out.tokens[0].tolist()), step=int(state["step"]))
        return metrics

    return runs.train_loop(
        cfg, tracker=tracker, state=state, optimizer=optimizer, loss_fn=loss_fn, batches=batches, evaluate=evaluate,
        assets={"tokenizer.json": run_dir / "tokenizer.json"},
        flops_per_sample=llm.flops_per_token(mcfg, cfg.text.seq_len) * cfg.text.seq_len, desc="llm",
        max_steps=max_steps,
    )  # fmt: skip


if __name__ == "__main__":
    runs.cli(PRESETS, train)
