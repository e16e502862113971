"""Hugging Face model directories on disk, with `json` and `safetensors` only (no `transformers`): read
`config.json` and the weights (`model.safetensors`, or shards listed in `model.safetensors.index.json`),
map checkpoint tensors onto a params tree strictly, and write a directory back atomically.

The family importers (`hf_llm`, `hf_vit`) own the names and the config translation; this module owns the
files. Strict means: every checkpoint tensor is used (or named by the importer as unused by design), every
param is filled, every shape matches; otherwise one error lists each problem with the file, tensor name and
shapes.

Usage::

    ckpt = hf_io.read("path/to/hf-model")            # config dict, tensors, which file holds each
    flat, notes = hf_io.take(ckpt, names, template, dtype=torch.float32)
    hf_io.write("out/hf-model", config_dict, tensors, tokenizer="runs/llm/tokenizer.json")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from foundry import tree

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
_MAX_LISTED = 12


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A Hugging Face model directory read into memory."""

    path: Path
    config: dict
    tensors: dict[str, torch.Tensor]
    files: dict[str, str]  # tensor name -> the file it came from (for error messages)


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a missing or malformed file is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {path.parent} a Hugging Face model directory?)")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def shard_files(path: Path) -> dict[str, list[str]]:
    """`{file name: [tensor names it should hold]}` from the index, or `{model.safetensors: []}` (any
    names) for a single-file checkpoint."""
    index = path / INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no 'weight_map' object mapping tensor names to shard files")
        shards: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            shards.setdefault(file, []).append(name)
        for file, names in shards.items():
            if not (path / file).is_file():
                raise FileNotFoundError(
                    f"{index} names shard {file} (holding {_short(sorted(names))}) but {path / file} does not exist"
                )
        return shards
    if (path / WEIGHTS).is_file():
        return {WEIGHTS: []}
    raise FileNotFoundError(f"{path}: no {WEIGHTS} and no {INDEX}; is it a Hugging Face model directory?")


def header(file: Path) -> dict:
    """The safetensors header of `file`, checked against the file size: a truncated file is an error that
    names the tensors whose bytes are missing."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{file}: truncated safetensors file ({size} bytes, not even a header length)")
        (n,) = struct.unpack("<Q", raw)
        if 8 + n > size:
            raise ValueError(f"{file}: truncated safetensors file (header of {n} bytes, file of {size} bytes)")
        try:
            meta = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: corrupt safetensors header ({e})") from None
    available = size - 8 - n
    cut = sorted(k for k, v in meta.items() if k != "__metadata__" and v["data_offsets"][1] > available)
    if cut:
        raise ValueError(
            f"{file}: truncated safetensors file ({available} data bytes): tensors {_short(cut)} are cut off"
        )
    return meta


def read(path: str | os.PathLike) -> Checkpoint:
    """Read `config.json` and every tensor of a Hugging Face model directory (copied into memory)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (expected a Hugging Face model directory)")
    config = read_json(path / CONFIG)
    tensors, files = {}, {}
    for file, expected in shard_files(path).items():
        names = [k for k in header(path / file) if k != "__metadata__"]
        if missing := sorted(set(expected) - set(names)):
            raise ValueError(f"{path / INDEX} places {_short(missing)} in {file}, which does not hold them")
        try:
            with safe_open(str(path / file), framework="pt") as f:
                for name in names:
                    if name in tensors:
                        raise ValueError(f"{path}: tensor {name} is in both {files[name]} and {file}")
                    tensors[name], files[name] = f.get_tensor(name).clone(), file
        except SafetensorError as e:
            raise ValueError(f"{path / file}: corrupt safetensors file ({e})") from None
    return Checkpoint(path=path, config=config, tensors=tensors, files=files)


def take(
    ckpt: Checkpoint,
    names: Mapping[str, str],  # our dotted param path -> checkpoint tensor name
    template: Mapping[str, torch.Tensor],  # our dotted param path -> a tensor of the wanted shape (meta is fine)
    *,
    dtype: torch.dtype,
    reshape: frozenset[str] = frozenset(),  # our paths whose checkpoint tensor is reshaped (same element count)
    unused: Mapping[str, str] | None = None,  # checkpoint tensors deliberately not loaded: name -> why
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The flat params `{our path: tensor}` in `dtype`, and notes for the user (dtype conversions, tensors
    left out by design). Raises one ValueError listing every unmapped checkpoint tensor, missing tensor and
    shape mismatch."""
    if set(names) != set(template):
        raise ValueError(f"importer bug: names cover {sorted(set(names) ^ set(template))} differently from params")
    unused = dict(unused or {})
    problems, flat, converted = [], {}, {}
    for ours, theirs in names.items():
        want = tuple(template[ours].shape)
        if theirs not in ckpt.tensors:
            problems.append(f"missing tensor {theirs} {want} (for {ours})")
            continue
        t = ckpt.tensors[theirs]
        if ours in reshape and t.numel() == template[ours].numel():
            t = t.reshape(want)
        if tuple(t.shape) != want:
            problems.append(
                f"shape mismatch: {theirs} in {ckpt.files[theirs]} is {tuple(t.shape)}, {ours} needs {want}"
            )
            continue
        if not t.is_floating_point():
            problems.append(f"{theirs} in {ckpt.files[theirs]} has non-float dtype {t.dtype}")
            continue
        if t.dtype != dtype:
            key = f"{_dtype_name(t.dtype)} -> {_dtype_name(dtype)}"
            converted[key] = converted.get(key, 0) + 1
        flat[ours] = t.to(dtype)
    used = set(names.values()) | set(unused)
    if unmapped := sorted(set(ckpt.tensors) - used):
        shown = [f"{n} {tuple(ckpt.tensors[n].shape)} in {ckpt.files[n]}" for n in unmapped]
        problems.append(f"unmapped checkpoint tensors {_short(shown)}")
    if problems:
        raise ValueError(f"{ckpt.path}: cannot import: " + "; ".join(problems))
    notes = [f"{key} for {n} tensors" for key, n in sorted(converted.items())]
    why_counts: dict[str, int] = {}
    for name, why in unused.items():
        if name in ckpt.tensors:
            why_counts[why] = why_counts.get(why, 0) + 1
    notes += [f"not loaded: {n} tensors of {why}" for why, n in why_counts.items()]
    return flat, notes


def params_from(flat: dict[str, torch.Tensor], template: dict) -> dict:
    """A params tree in `template`'s structure (lists where it has lists) from flat dotted paths."""
    return tree.map_with_path(lambda path, _: flat[path], template)


def write(
    path: str | os.PathLike,
    config: dict,
    tensors: Mapping[str, torch.Tensor],
    *,
    tokenizer: str | os.PathLike | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` (and a copy of `tokenizer`) as a new directory `path`,
    atomically: everything goes into a hidden sibling that is fsynced and renamed into place. An existing
    `path` is an error (nothing is overwritten)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; remove it or choose another export directory")
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise FileNotFoundError(f"tokenizer {tokenizer} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})  # fmt: skip
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / TOKENIZER)
        for file in tmp.iterdir():
            _fsync(file)
        _fsync(tmp)
        os.rename(tmp, path)
        _fsync(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}.get(
        dtype, str(dtype).removeprefix("torch.")
    )


def _short(names: list[str]) -> str:
    more = f", ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return "[" + ", ".join(names[:_MAX_LISTED]) + more + "]"
