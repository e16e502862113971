"""Run-directory plumbing shared by the experiments: config serialisation, the tracker, the MFU peak,
and evaluation of a loss function over held-out batches.

Under torchrun, `cli` starts the process group after parsing (parsing has no side effects) and ends it
after training; only rank 0 writes the run's shared files (config.json, the tokenizer) and gets a real
tracker, the other ranks a `NullTracker` (see `foundry.train.dist`).

Usage::

    tracker = runs.start(cfg.run, experiment="llm", config=runs.to_dict(cfg))
    val = runs.mean_loss(loss_fn, params, val_batches)
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import tyro
from tokenizers import Tokenizer

from foundry.data.tokenizer import (
    SPECIAL_TOKENS,
    add_special_tokens,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)
from foundry.train import checkpoint, dist, loop
from foundry.train.config import RunConfig
from foundry.train.mfu import compute_dtype, measure_peak_flops
from foundry.train.tracking import NullTracker, Tracker, make_tracker


def to_dict(cfg: Any) -> dict:
    """A JSON-able dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def start(run: RunConfig, *, experiment: str, config: dict, tags: tuple[str, ...] = ()) -> Tracker:
    """Create the run directory, write the resolved `config.json` (atomically) and open the tracker; on
    ranks other than 0 of a distributed run, nothing is written and the tracker records nothing."""
    run_dir = Path(run.run_dir)
    if not dist.current().is_main:
        return NullTracker()
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(run_dir / "config.json")
    return make_tracker(run.tracker, run_dir=run_dir, repo=run.aim_repo, experiment=experiment, tags=tags)


def peak_flops(run: RunConfig, dtype: torch.dtype) -> float:
    """The configured peak, or the measured matmul peak of this device in `dtype`."""
    if run.peak_tflops is not None:
        return run.peak_tflops * 1e12
    return measure_peak_flops(dtype, run.device)


def train_loop(cfg: Any, *, tracker: Tracker, **kwargs: Any) -> loop.Result:
    """`loop.run` for a resolved experiment config (with `train` and `run` fields): its train config, run
    directory, device, saved config and the MFU peak taken from `cfg`; the tracker is closed however the
    loop ends. `kwargs` are the rest of `loop.run`'s arguments (state, optimizer, loss_fn, batches, ...)."""
    try:
        return loop.run(
            cfg.train, run_dir=cfg.run.run_dir, tracker=tracker, config=to_dict(cfg), device=cfg.run.device,
            peak_flops=peak_flops(cfg.run, compute_dtype(cfg.train.precision)), **kwargs,
        )  # fmt: skip
    finally:
        tracker.close()


@torch.no_grad()
def mean_loss(loss_fn: Callable, params: dict, batches: Iterable[dict], *, device: str = "cpu") -> float:
    """The weight-averaged loss of `loss_fn(params, batch, key=None) -> (loss, {"weight"})` over batches."""
    total, weight = 0.0, 0.0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if not k.startswith("_")}
        loss, aux = loss_fn(params, batch, key=None)
        w = float(aux["weight"])
        total += float(loss) * w
        weight += w
    if weight == 0:
        raise ValueError("validation produced no weighted samples (empty or fully padded validation set)")
    return total / weight


def run_file(path: str | Path, name: str) -> Path:
    """A file saved with a run: `path` is a run directory (its own copy, else its newest checkpoint's) or a
    checkpoint directory. Used to initialise a stage from another run (tokenizer.json, config.json)."""
    path = Path(path)
    candidates = [path / name]
    newest = checkpoint.latest(path)
    if newest is not None:
        candidates.insert(0, newest / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found in {path} (looked in {[str(c) for c in candidates]}); is it a run dir?")


def run_config(path: str | Path) -> dict:
    """The resolved experiment config saved with a run (or checkpoint) directory."""
    return json.loads(run_file(path, "config.json").read_text())


def cli(presets: dict, train: Callable[[Any], Any], *, args: list[str] | None = None) -> None:
    """An experiment's entry point: parse a named preset plus overrides; print the resolved config
    (`--print-config`) or train and print the final validation metrics as JSON."""
    cfg = tyro.extras.overridable_config_cli(presets, args=args)
    if cfg.run.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return
    # Under torchrun: one process group for the whole run, with a timeout; a failing rank says so.
    with dist.session(timeout_s=cfg.run.dist_timeout_s, device=cfg.run.device) as world:
        result = train(cfg)
    if world.is_main:
        print(json.dumps({k: round(v, 4) for k, v in result.metrics.items() if k.startswith("val_")}))


def config_from_dict(cls: type, d: dict) -> Any:
    """A (nested) frozen config dataclass from its `dataclasses.asdict` JSON (lists back to tuples).
    Unknown keys are errors; missing keys keep their defaults."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(set(d) - names):
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; it has {sorted(names)}")
    kwargs = {}
    for name, value in d.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[name] = config_from_dict(hint, value)
        else:
            kwargs[name] = _tuples(value)
    return cls(**kwargs)


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def run_tokenizer(
    run_dir: str | Path,
    *,
    init_run: str | None,
    path: str | None,
    train_texts: Callable[[], Iterable[str]],
    vocab_size: int,
) -> Tokenizer:
    """A run's tokenizer, decided once and saved as <run_dir>/tokenizer.json: the run's own copy (resume),
    else the init run's (its weights were trained with it), else `path` (a tokenizer.json or a run dir),
    else a byte-level BPE trained on `train_texts()`. Missing special tokens are added.
    Distributed: rank 0 decides and saves it; the other ranks wait for it and load the saved file."""
    saved = Path(run_dir) / "tokenizer.json"
    world = dist.current()
    if not world.is_main:
        dist.barrier(world)
        return load_tokenizer(saved)
    tok = _resolve_tokenizer(saved, init_run=init_run, path=path, train_texts=train_texts, vocab_size=vocab_size)
    dist.barrier(world)
    return tok


def _resolve_tokenizer(
    saved: Path, *, init_run: str | None, path: str | None, train_texts: Callable[[], Iterable[str]], vocab_size: int
) -> Tokenizer:
    if saved.exists():
        tok = load_tokenizer(saved)
    elif init_run:
        tok = load_tokenizer(run_file(init_run, "tokenizer.json"))
    elif path:
        tok = load_tokenizer(path if Path(path).is_file() else run_file(path, "tokenizer.json"))
    else:
        tok = train_tokenizer(train_texts(), vocab_size=vocab_size)
    tok = add_special_tokens(tok, [t for t in SPECIAL_TOKENS if t not in special_ids(tok)])
    save_tokenizer(tok, saved)
    return tok


def imported_model_config(
    current: Any, imported: Any, *, presets: Iterable[Any], keep: tuple[str, ...], flag: str, source: str
) -> Any:
    """The model config of a checkpoint imported with `flag` (e.g. --init.hf), which replaces the preset's:
    the checkpoint decides the shape, while the `keep` fields (those it does not describe, such as the
    generation cache length) stay as configured. `current` must be an unmodified preset (one of `presets`,
    `keep` fields aside) or agree with the checkpoint: a --model.* flag that contradicts it is an error
    naming each field, never silently overridden."""
    merged = dataclasses.replace(imported, **{k: getattr(current, k) for k in keep})
    if current == merged:
        return merged
    for preset in presets:
        if dataclasses.replace(current, **{k: getattr(preset, k) for k in keep}) == preset:
            return merged
    diffs = [
        f"{f.name}={getattr(current, f.name)!r} (checkpoint: {getattr(merged, f.name)!r})"
        for f in dataclasses.fields(current)
        if getattr(current, f.name) != getattr(merged, f.name)
    ]
    raise ValueError(
        f"{flag} {source} sets the model shape from its config.json, but the model config was changed from the "
        f"preset and disagrees with the checkpoint: {'; '.join(diffs)}. Drop those --model flags (or match them)."
    )
