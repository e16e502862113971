"""Write WebDataset tar shards, index them by their headers, and read single samples by seeking.

A sample is the run of consecutive tar members sharing a key: the member path up to the first dot of
its basename (`scene/000123.lowdim.npz` has key `scene/000123` and extension `lowdim.npz`), as webdataset
groups them. Shards are uncompressed, so indexing reads only the 512-byte headers (tarfile seeks over the
data) and a sample is later read with one seek + read per member, in any order.

Usage:

    index = index_dataset("data/text/train")     # warns when the manifest's counts are wrong
    with ShardFiles() as files:
        sample = read_sample(index.shards[0], 3, files)   # {"txt": b"...", "__key__": ..., "__shard__": ...}
    write_shards(samples, "data/captions/train", samples_per_shard=256, prefix="train")
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from foundry.data.manifest import DataError, ManifestEntry, manifest_path, read_manifest, write_manifest


@dataclasses.dataclass(frozen=True)
class SampleIndex:
    """Where one sample's members lie in its shard: `(extension, data offset, size)` per member."""

    key: str
    members: tuple[tuple[str, int, int], ...]


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """The samples of one tar file, in file order."""

    path: str
    samples: tuple[SampleIndex, ...]

    def __len__(self) -> int:
        return len(self.samples)


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    """A dataset's shards in manifest order, with sample counts taken from the tar files."""

    manifest: str
    shards: tuple[ShardIndex, ...]

    @property
    def shard_sizes(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.shards)

    @property
    def num_samples(self) -> int:
        return sum(self.shard_sizes)


def split_name(name: str) -> tuple[str, str] | None:
    """`(key, extension)` of a member path, split at the first dot of the basename; None without a dot."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{head}/{stem}" if head else stem), ext


def index_shard(path: str | os.PathLike) -> ShardIndex:
    """Scan a tar's headers; raises `DataError` if the file is missing or not a tar.

    A tar that ends early (a truncated write) keeps the members whose headers were read and warns; a
    member whose data runs past the end of the file is kept, and reading it raises a `DataError`.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"shard {path} does not exist")
    groups: list[tuple[str, list[tuple[str, int, int]]]] = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            _scan(tar, path, groups)
    except tarfile.ReadError as e:
        raise DataError(f"shard {path} is not a readable tar file ({e})") from None
    samples = tuple(SampleIndex(key, tuple(members)) for key, members in groups)
    return ShardIndex(path=path, samples=samples)


def _scan(tar: tarfile.TarFile, path: str, groups: list) -> None:
    while True:
        try:
            info = tar.next()
        except tarfile.ReadError as e:
            if not groups:
                raise
            warnings.warn(
                f"shard {path}: tar ends unexpectedly after sample {groups[-1][0]!r} ({e}); is the file "
                "truncated? Samples whose data is cut off raise DataError when read",
                stacklevel=4,
            )
            return
        if info is None:
            return
        parts = split_name(info.name) if info.isfile() else None
        if parts is None:
            continue
        key, ext = parts
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append((ext, info.offset_data, info.size))


def index_dataset(path: str | os.PathLike) -> DatasetIndex:
    """Index every shard listed in a manifest (a dataset directory or its manifest.jsonl).

    Raises `DataError` naming the manifest or shard that is missing. Warns, naming the shard and both
    counts, where the manifest's `num_sequences` differs from the samples found in the tar.
    """
    mpath = manifest_path(path)
    shards = []
    for entry in read_manifest(mpath):
        shard_path = mpath.parent / f"{entry.shard}.tar"
        if not shard_path.is_file():
            raise DataError(f"shard {shard_path} listed in manifest {mpath} does not exist")
        shard = index_shard(shard_path)
        if len(shard) != entry.num_sequences:
            warnings.warn(
                f"manifest {mpath}: shard {entry.shard!r} lists {entry.num_sequences} samples but "
                f"{shard_path} holds {len(shard)}; using {len(shard)}",
                stacklevel=2,
            )
        shards.append(shard)
    return DatasetIndex(manifest=str(mpath), shards=tuple(shards))


class ShardFiles:
    """Open shard files, kept open for repeated reads; a context manager that closes them."""

    def __init__(self) -> None:
        self._files: dict[str, BinaryIO] = {}

    def get(self, path: str) -> BinaryIO:
        if path not in self._files:
            try:
                self._files[path] = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as e:
                raise DataError(f"cannot open shard {path}: {e}") from None
        return self._files[path]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> ShardFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_sample(shard: ShardIndex, i: int, files: ShardFiles) -> dict[str, bytes | str]:
    """Sample `i` of `shard` as `{extension: bytes, "__key__": key, "__shard__": shard path}`.

    Raises `DataError` (naming what is wrong; the caller adds shard and key) for a member cut off by
    the end of the file, an I/O error, or two members with the same extension.
    """
    sample = shard.samples[i]
    f = files.get(shard.path)
    out: dict[str, bytes | str] = {"__key__": sample.key, "__shard__": shard.path}
    for ext, offset, size in sample.members:
        if ext in out:
            raise DataError(f"two members with extension {ext!r}")
        try:
            f.seek(offset)
            data = f.read(size)
        except OSError as e:
            raise DataError(f"member {ext!r} is unreadable: {e}") from None
        if len(data) != size:
            raise DataError(
                f"member {ext!r} is truncated: {size} bytes at offset {offset}, the file ends after "
                f"{len(data)} (a partly written shard?)"
            )
        out[ext] = data
    return out


def write_shards(
    samples: Iterable[dict[str, bytes | str]],
    out_dir: str | os.PathLike,
    *,
    samples_per_shard: int,
    prefix: str = "shard",
    log: Callable[[str], None] | None = None,
) -> list[ManifestEntry]:
    """Write samples (`{"__key__": key, ext: bytes, ...}`) as `<prefix>-NNNNN.tar` shards + manifest.

    Each shard is written under a temporary name and renamed when complete, and the manifest is written
    last (atomically), so an interrupted run never leaves a half shard or a manifest naming one. Keys must
    be unique, non-empty and free of dots; tar members get mtime 0 (the same input gives the same bytes).
    `log` (e.g. `print`) receives one line per shard.
    """
    import webdataset  # imports torch: keep it out of module import time

    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard = {samples_per_shard} must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[ManifestEntry] = []
    batch: list[dict[str, bytes | str]] = []
    for sample in samples:
        key = sample.get("__key__")
        if not isinstance(key, str) or not key or "." in key:
            raise ValueError(f"sample key {key!r} must be a non-empty string without dots")
        batch.append(sample)
        if len(batch) == samples_per_shard:
            entries.append(_write_shard(webdataset, batch, out, f"{prefix}-{len(entries):05d}", log))
            batch = []
    if not entries and not batch:
        raise ValueError(f"no samples to write to {out}")
    if batch:
        entries.append(_write_shard(webdataset, batch, out, f"{prefix}-{len(entries):05d}", log))
    write_manifest(out, entries)
    return entries


def _write_shard(wds: Any, samples: list, out: Path, name: str, log: Callable | None) -> ManifestEntry:
    path, tmp = out / f"{name}.tar", out / f".{name}.tar.tmp"
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0)
        for sample in samples:
            writer.write(sample)
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if log is not None:
        log(f"wrote {path} ({len(samples)} samples, {path.stat().st_size / 1e6:.2f} MB)")
    return ManifestEntry(shard=name, num_sequences=len(samples))
