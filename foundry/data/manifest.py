"""Dataset manifests and the data layer's error type.

A dataset is a directory holding `manifest.jsonl` and WebDataset tar shards. Each manifest line names a
shard (without `.tar`) and how many samples it holds:

    {"shard": "train-00000", "num_sequences": 256}

Usage:

    entries = read_manifest("data/text/train")            # a directory or its manifest.jsonl
    write_manifest("data/text/train", entries)            # atomic: temp file + rename

The counts are advisory: `foundry.data.shards.index_dataset` trusts the tar files and warns on mismatch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"


class DataError(Exception):
    """Bad or missing data: the message names the file (shard, manifest) and the sample key at fault."""


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: the shard's name (file `<shard>.tar` next to the manifest) and its count."""

    shard: str
    num_sequences: int


def manifest_path(path: str | os.PathLike) -> Path:
    """`path` itself if it names a file, else `path/manifest.jsonl` (a dataset directory)."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Parse a manifest; raises `DataError` naming the file (and line) when missing or malformed."""
    path = manifest_path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist (give a dataset dir or its {MANIFEST_NAME})")
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                entries.append(_parse_line(line, path, lineno))
    if not entries:
        raise DataError(f"manifest {path} lists no shards")
    names = [e.shard for e in entries]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"manifest {path} lists shard {dup!r} more than once")
    return entries


def _parse_line(line: str, path: Path, lineno: int) -> ManifestEntry:
    where = f"manifest {path} line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("shard"), str):
        raise DataError(f"{where}: expected {{'shard': str, 'num_sequences': int}}, got {line.strip()!r}")
    count = obj.get("num_sequences", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise DataError(f"{where}: num_sequences must be an int >= 0, got {count!r}")
    shard = obj["shard"].removesuffix(".tar")
    if not shard or "/" in shard:
        raise DataError(f"{where}: shard name {obj['shard']!r} must be a file name next to the manifest")
    return ManifestEntry(shard=shard, num_sequences=count)


def write_manifest(directory: str | os.PathLike, entries: Iterable[ManifestEntry]) -> Path:
    """Write `directory/manifest.jsonl` atomically (temp file, fsync, rename); returns its path."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps({"shard": e.shard, "num_sequences": e.num_sequences}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
