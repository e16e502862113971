"""Data configuration: frozen dataclasses, free of torch imports, that read no files when built.

`DataConfig` is the modality-independent part (which datasets, how they mix, workers, bad samples);
`TextConfig` says how text samples become rows of tokens. An experiment holds both, e.g.

    python -m experiments.llm --data.manifests A/manifest.jsonl B/manifest.jsonl --data.weights 0.7 0.3

Structural mistakes (weights that do not match the manifests, negative weights) fail at construction;
an empty manifest list fails where the mixture is used (`DataConfig.mix_weights`), so a default config
without datasets can still be built and printed.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which datasets to read and how to mix them (see `foundry.data.plan`)."""

    # Paths of `manifest.jsonl` files (or of the dataset directories holding them), one per dataset.
    manifests: tuple[str, ...] = ()
    # Mixing weight per manifest, in the same order; empty means equal weights. Normalized to sum to 1.
    weights: tuple[float, ...] = ()
    # DataLoader worker processes decoding samples; 0 decodes in the training process.
    num_workers: int = 0
    # "error": a bad sample stops training with a `DataError` naming shard and key; "skip": its slot
    # becomes a fully-masked padding row and is counted in the batch's `_skipped`.
    on_bad_sample: Literal["error", "skip"] = "error"
    # Validation datasets, each read in order (no shuffle); the first `val_samples` samples of each.
    val_manifests: tuple[str, ...] = ()
    val_samples: int = 512

    def __post_init__(self) -> None:
        if self.weights and len(self.weights) != len(self.manifests):
            raise ValueError(
                f"data.weights has {len(self.weights)} values but data.manifests has "
                f"{len(self.manifests)} paths: give one weight per manifest, or none for equal weights"
            )
        for i, w in enumerate(self.weights):
            if not w >= 0:  # also rejects NaN
                raise ValueError(f"data.weights[{i}] = {w} is negative (or NaN); weights must be >= 0")
        if self.weights and sum(self.weights) <= 0:
            raise ValueError(f"data.weights {self.weights} sum to 0: at least one must be positive")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers = {self.num_workers} must be >= 0")
        if self.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"data.on_bad_sample = {self.on_bad_sample!r}: use 'error' or 'skip'")
        if self.val_samples < 0:
            raise ValueError(f"data.val_samples = {self.val_samples} must be >= 0")

    @property
    def mix_weights(self) -> tuple[float, ...]:
        """The mixing weights normalized to sum to 1 (equal when `weights` is empty)."""
        if not self.manifests:
            raise ValueError(
                "data.manifests is empty: pass at least one dataset, e.g. "
                "--data.manifests data/text/train/manifest.jsonl"
            )
        raw = self.weights or (1.0,) * len(self.manifests)
        total = sum(raw)
        return tuple(w / total for w in raw)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """How text samples become token rows (see `foundry.data.text`)."""

    # Tokens per training row are seq_len + 1 (inputs are row[:-1], targets row[1:]).
    seq_len: int = 256
    # False: one sample per row, a random window when longer, padded when shorter.
    # True: each sample is cropped to one row at most, the batch's samples are concatenated and cut
    # into rows (pack many short samples per row).
    pack: bool = False
    # Pack only: a batch of B rows reads B * samples_per_row samples; tokens beyond B rows are dropped,
    # a shortfall is padded. Choose about row length / typical sample length.
    samples_per_row: int = 1

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"text.seq_len = {self.seq_len} must be >= 1")
        if self.samples_per_row < 1:
            raise ValueError(f"text.samples_per_row = {self.samples_per_row} must be >= 1")
        if self.samples_per_row > 1 and not self.pack:
            raise ValueError("text.samples_per_row > 1 needs text.pack = True (crop mode is one per row)")

    @property
    def row_len(self) -> int:
        """Tokens per row: seq_len + 1."""
        return self.seq_len + 1

    def samples_per_batch(self, batch_size: int) -> int:
        """Samples read for a batch of `batch_size` rows."""
        return batch_size * (self.samples_per_row if self.pack else 1)
