"""Checkpoint directories: atomic save, newest-complete lookup, load, and shape/name checks on restore.

A checkpoint is one directory `<run_dir>/checkpoints/step_00000100/` holding

    params.safetensors     the parameter tree, flattened to dotted names (`llm.blocks.3.attn.wq`)
    opt_state.safetensors  the optimizer state tree
    ema.safetensors        the EMA tree (only if the train state has "ema")
    config.json            the resolved experiment config
    <assets>               files shipped with the run (tokenizer.json, normalization stats, ...)
    state.json             {"format": 1, "step", "key", "trees", **extra}: written last

Everything is written into a hidden sibling `.step_00000100.tmp-<pid>`, fsynced, and renamed into place, so a
crash at any moment leaves either the previous checkpoints or the new one complete, never a directory that
`latest` would pick half-written. Old checkpoints are renamed away before they are deleted, likewise.

Usage:

    ckpt_dir = checkpoint.save(run_dir, state, config=dataclasses.asdict(cfg), extra={"data": cursor},
                               assets={"tokenizer.json": tok_path}, keep=3)
    if (last := checkpoint.latest(run_dir)) is not None:
        state, extra = checkpoint.restore(last, template_state)   # clear error if shapes/names differ
    params = checkpoint.load_params("runs/llm")                    # newest checkpoint of another run
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from foundry import tree
from foundry.tree import Tree

FORMAT = 1
TREES = ("params", "opt_state", "ema")  # the tensor trees of a train state, each in `<name>.safetensors`
OPTIONAL_TREES = ("ema",)
STATE_KEYS = frozenset({"step", "key", *TREES})
RESERVED_JSON_KEYS = frozenset({"format", "step", "key", "trees"})
RESERVED_FILES = frozenset({"state.json", "config.json", *(f"{name}.safetensors" for name in TREES)})

_FINAL_RE = re.compile(r"^step_(\d{8,})$")
_TEMP_RE = re.compile(r"^\.step_\d{8,}\.(tmp|old|del)-(\d+)$")
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the train state (step and key as int64 tensors), config and extra from JSON."""

    path: Path
    state: dict[str, Any]
    config: dict[str, Any]
    extra: dict[str, Any]


# ----------------------------------------------------------------------------------------------- saving


def save(
    run_dir: str | Path,
    state: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    assets: Mapping[str, str | Path | bytes] | None = None,
    keep: int | None = None,
) -> Path:
    """Write `state` as `<run_dir>/checkpoints/step_{step:08d}` atomically and return that directory.

    `extra` (JSON values: data cursor, metrics so far) goes into state.json; `assets` maps file names to a
    path to copy (file or directory) or bytes to write. With `keep`, only the newest `keep` complete
    checkpoints remain after a successful save."""
    unknown = set(state) - STATE_KEYS
    missing = {"step", "key", "params", "opt_state"} - set(state)
    if unknown or missing:
        raise ValueError(
            f"train state keys: missing {sorted(missing)}, unknown {sorted(unknown)}; expected "
            f"{sorted(STATE_KEYS)} (put other values such as the data cursor in `extra`)"
        )
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    step, key = _scalar_step(state["step"]), _key_list(state["key"])
    extra = dict(extra or {})
    if clash := RESERVED_JSON_KEYS & set(extra):
        raise ValueError(f"extra uses reserved state.json keys {sorted(clash)}")
    trees = [name for name in TREES if name in state]
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    final = root / f"step_{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        for name in trees:
            _write_tree(tmp / f"{name}.safetensors", state[name], name)
        _write_json(tmp / "config.json", config)
        for name, source in (assets or {}).items():
            _write_asset(tmp, name, source)
        meta = {"format": FORMAT, "step": step, "key": key, "trees": trees, **extra}
        _write_json(tmp / "state.json", meta)  # last: its presence marks the checkpoint complete
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            _remove_dir(old)
    return final


def _scalar_step(step: Any) -> int:
    if isinstance(step, torch.Tensor):
        if step.numel() != 1 or step.is_floating_point():
            raise ValueError(f"state['step'] must be an integer scalar, got {step.dtype} {tuple(step.shape)}")
        step = step.item()
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"state['step'] must be a non-negative integer, got {step!r}")
    return step


def _key_list(key: Any) -> list[int]:
    if not isinstance(key, torch.Tensor) or key.is_floating_point() or key.dim() != 1:
        raise ValueError(f"state['key'] must be a 1-D integer tensor, got {key!r}")
    return [int(k) for k in key.tolist()]


def _write_tree(path: Path, value: Tree, name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for leaf_path, leaf in tree.flatten(value).items():
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{name}.{leaf_path}: checkpoint trees hold tensors only, got {type(leaf).__name__}")
        tensors[leaf_path] = _saveable(leaf, seen_storages)
    save_file(tensors, str(path), metadata={"format": str(FORMAT), "tree": name})
    _fsync_file(path)


def _saveable(t: torch.Tensor, seen_storages: set[int]) -> torch.Tensor:
    """A detached CPU tensor safetensors accepts: contiguous and sharing memory with no other saved tensor."""
    t = t.detach().cpu()
    ptr = t.untyped_storage().data_ptr()
    if not t.is_contiguous() or (t.numel() > 0 and ptr in seen_storages):
        t = t.contiguous().clone()
        ptr = t.untyped_storage().data_ptr()
    seen_storages.add(ptr)
    return t


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _write_asset(ckpt_dir: Path, name: str, source: str | Path | bytes) -> None:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name in RESERVED_FILES or not name:
        raise ValueError(
            f"asset name {name!r} must be a relative path inside the checkpoint, not {sorted(RESERVED_FILES)}"
        )
    dest = ckpt_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        dest.write_bytes(source)
        _fsync_file(dest)
        return
    source = Path(source)
    if source.is_dir():
        shutil.copytree(source, dest)
        for file in dest.rglob("*"):
            if file.is_file():
                _fsync_file(file)
    elif source.is_file():
        shutil.copyfile(source, dest)
        _fsync_file(dest)
    else:
        raise FileNotFoundError(f"asset {name!r}: {source} does not exist")


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` (same step saved twice) is renamed away first."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if old is not None:
            os.rename(old, final)  # put the previous checkpoint back
        raise
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old)


def _remove_dir(path: Path) -> None:
    """Delete a checkpoint so that no half-deleted directory keeps its final name."""
    doomed = path.with_name(f".{path.name}.del-{os.getpid()}")
    os.rename(path, doomed)
    _fsync_dir(path.parent)
    shutil.rmtree(doomed)


def _remove_stale_temporaries(root: Path) -> None:
    """Remove temporaries of saves that failed in this process or crashed (their process no longer runs).

    One process saves a run at a time, so a temporary of this process is never still being written."""
    for entry in root.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match and (int(match.group(2)) == os.getpid() or not _pid_alive(int(match.group(2)))):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- finding


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run (final name `step_N` and a state.json), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _FINAL_RE.match(entry.name)
        if match and (entry / "state.json").is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None; temporaries of interrupted saves are ignored."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------- loading


def load(ckpt_dir: str | Path) -> Checkpoint:
    """Read a checkpoint directory; tensors are copied out of the file (which may be deleted afterwards)."""
    path = Path(ckpt_dir)
    meta = _read_json(path / "state.json")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / 'state.json'}: checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    state: dict[str, Any] = {"step": torch.tensor(meta["step"], dtype=torch.int64)}
    for name in meta["trees"]:
        state[name] = tree.unflatten(_read_tensors(path / f"{name}.safetensors"))
    state["key"] = torch.tensor(meta["key"], dtype=torch.int64)
    extra = {k: v for k, v in meta.items() if k not in RESERVED_JSON_KEYS}
    return Checkpoint(path=path, state=state, config=_read_json(path / "config.json"), extra=extra)


def load_params(path: str | Path) -> Tree:
    """The params tree of a checkpoint directory, or of the newest checkpoint of a run directory."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        ckpt = latest(path)
        if ckpt is None:
            raise FileNotFoundError(f"no complete checkpoint in {path / 'checkpoints'}")
        path = ckpt
    elif not (path / "state.json").is_file():
        raise FileNotFoundError(
            f"{path}: neither a complete checkpoint (no state.json) nor a run directory (no checkpoints/)"
        )
    return tree.unflatten(_read_tensors(path / "params.safetensors"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: not a complete checkpoint") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt JSON ({e})") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the checkpoint")
    try:
        tensors = load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    # load_file maps the file; clone so the tensors own their memory and the file can be deleted.
    return {name: t.clone() for name, t in tensors.items()}


# -------------------------------------------------------------------------------------------- restoring


def check_compatible(template: Tree, loaded: Tree, *, what: str, source: str | Path) -> None:
    """Raise ValueError naming `what` in `source` if names, shapes or dtypes of the two trees differ.

    Template leaves only need `.shape` and `.dtype` (meta tensors work)."""
    want, got = tree.flatten(template), tree.flatten(loaded)
    problems = []
    for name in want.keys() & got.keys():
        w, g = want[name], got[name]
        if tuple(w.shape) != tuple(g.shape):
            problems.append(f"shape mismatch: {name} checkpoint {tuple(g.shape)} vs model {tuple(w.shape)}")
        if w.dtype != g.dtype:
            problems.append(f"dtype mismatch: {name} checkpoint {g.dtype} vs model {w.dtype}")
    problems.sort()
    if missing := sorted(want.keys() - got.keys()):
        problems.append(f"missing: {_short_list(missing)}")
    if unexpected := sorted(got.keys() - want.keys()):
        problems.append(f"unexpected: {_short_list(unexpected)}")
    if problems:
        raise ValueError(
            f"{what} in {source}: " + "; ".join(problems) + " (did the model config change? compare the "
            "checkpoint's config.json with the current config)"
        )


def _short_list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = f", ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def restore(ckpt_dir: str | Path, template_state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a checkpoint into the structure of `template_state` and return `(state, extra)`.

    Names, shapes and dtypes must match the template exactly (nothing is cast); a mismatch is a ValueError
    that says what differs. Tensors go to the template leaf's device (CPU if the template is on `meta`)."""
    ckpt = load(ckpt_dir)
    if missing := set(template_state) - set(ckpt.state):
        raise ValueError(f"{ckpt.path}: the checkpoint has no {sorted(missing)} but the train state needs it")
    if unexpected := set(ckpt.state) - set(template_state):
        raise ValueError(f"{ckpt.path}: the checkpoint has {sorted(unexpected)} that the train state lacks")
    state = {}
    for name, template in template_state.items():
        what = f"{name}.safetensors" if name in TREES else f"state.json {name!r}"
        check_compatible({name: template}, {name: ckpt.state[name]}, what=what, source=ckpt.path)
        state[name] = _into_structure(template, ckpt.state[name])
    return state, ckpt.extra


def _into_structure(template: Tree, loaded: Tree) -> Tree:
    """`loaded`'s leaves in `template`'s structure (key order, tuples), on the template leaves' devices."""
    flat = tree.flatten({"t": loaded})  # wrapped so that a bare tensor (step, key) has a non-empty path

    def place(path: str, like: torch.Tensor) -> torch.Tensor:
        return flat[path] if like.device.type == "meta" else flat[path].to(like.device)

    return tree.map_with_path(place, {"t": template})["t"]
