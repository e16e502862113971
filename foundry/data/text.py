"""Text samples -> token rows: decode (tokenize, add bos/eos, crop) and collate (pad or pack).

A text sample holds one of (first found wins): `json.gz` (gzipped JSON list of token ids, already
tokenized), `json` (a string, or an object with a "text" string), `txt` (UTF-8). Raw text is tokenized on
the fly; special-token strings inside raw text (a literal "<bos>") are encoded as plain text, so data
cannot inject control tokens. Each sample becomes `[bos] + ids + [eos]`; when longer than a row
(`seq_len + 1` tokens) a window of one row is cut at an offset drawn from the sample's seed.

Batch: `{"tokens": (B, seq_len + 1) int64, "mask": (B, seq_len + 1) bool (True on real tokens),
"_skipped": 0-D int64}`. A model reads `tokens[:, :-1]`, predicts `tokens[:, 1:]`, and weights the loss
with `mask[:, 1:]`.

Rows (`TextConfig.pack`):
- crop (pack=False): one sample per row, padded with `<pad>` (mask False) when shorter.
- pack (pack=True): the batch's `B * samples_per_row` decoded samples, in plan order, are concatenated
  and cut into B rows, row-major; tokens past the B rows are dropped, a shortfall is padded. Only the
  batch's own samples are used, so a batch is a pure function of its plan entries (resume- and
  worker-safe). Attention crosses sample boundaries inside a row (GPT-2 style); bos/eos mark them.

Usage:

    decode, collate = text_functions(cfg.text, tokenizer, batch_size=32)
    for batch in iterate_batches(plan, batch_size=cfg.text.samples_per_batch(32), decode=decode,
                                 collate=collate, seed=0):
        ...
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from foundry.data.config import TextConfig
from foundry.data.manifest import DataError
from foundry.data.shards import ShardFiles, index_dataset, read_sample
from foundry.data.tokenizer import special_ids


def raw_text(sample: dict[str, Any]) -> str | None:
    """The text of a `txt` or `json` member (None if the sample has neither); bad data -> DataError.
    `txt` wins when both exist: in image-caption samples the `json` member is metadata."""
    if "txt" in sample:
        try:
            return sample["txt"].decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"member 'txt' is not valid UTF-8 ({e})") from None
    if "json" in sample:
        try:
            obj = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"member 'json' is not valid JSON ({e})") from None
        text = obj.get("text") if isinstance(obj, dict) else obj
        if not isinstance(text, str):
            raise DataError("member 'json' must hold a string or an object with a 'text' string")
        return text
    return None


def token_ids(data: bytes, vocab_size: int) -> np.ndarray:
    """Token ids of a `json.gz` member, checked to be a list of ints in [0, vocab_size)."""
    try:
        obj = json.loads(gzip.decompress(data))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"member 'json.gz' is not valid gzip ({e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"member 'json.gz' is not valid JSON ({e})") from None
    if not isinstance(obj, list) or not all(type(x) is int for x in obj):
        raise DataError("member 'json.gz' must hold a JSON list of int token ids")
    ids = np.asarray(obj, dtype=np.int64)
    _check_range(ids, vocab_size, "json.gz")
    return ids


def _check_range(ids: np.ndarray, vocab_size: int, member: str) -> None:
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if len(bad):
        raise DataError(f"member {member!r}: token id {int(bad[0])} is outside the vocab [0, {vocab_size})")


@dataclasses.dataclass(frozen=True)
class TextDecoder:
    """`decode(sample, seed) -> {"tokens": int64 array}` for `iterate_batches` (see module docstring).

    `tokenizer_json` (`Tokenizer.to_str()`) is needed for raw text only; each process rebuilds the
    tokenizer from it once, with special-token strings encoded as plain text.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    max_len: int  # tokens kept per sample: a row, seq_len + 1
    tokenizer_json: str | None = None

    def __call__(self, sample: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
        if "json.gz" in sample:
            ids = token_ids(sample["json.gz"], self.vocab_size)
        else:
            text = raw_text(sample)
            if text is None:
                found = sorted(k for k in sample if not k.startswith("__"))
                raise DataError(f"no text member: expected 'json.gz', 'json' or 'txt', found {found}")
            ids = np.asarray(self._tokenizer().encode(text, add_special_tokens=False).ids, dtype=np.int64)
            _check_range(ids, self.vocab_size, "tokenized text")
        tokens = np.concatenate([[self.bos_id], ids, [self.eos_id]]).astype(np.int64)
        if len(tokens) > self.max_len:
            start = int(np.random.default_rng(seed).integers(0, len(tokens) - self.max_len + 1))
            tokens = tokens[start : start + self.max_len]
        return {"tokens": tokens}

    def _tokenizer(self) -> Tokenizer:
        tok = self.__dict__.get("_tok")
        if tok is None:
            if self.tokenizer_json is None:
                raise DataError("raw text sample but no tokenizer was given (TextDecoder.tokenizer_json)")
            tok = Tokenizer.from_str(self.tokenizer_json)
            tok.encode_special_tokens = True
            self.__dict__["_tok"] = tok  # a per-process cache, never pickled (see __getstate__)
        return tok

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_tok"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclasses.dataclass(frozen=True)
class TextCollate:
    """`collate(decoded) -> {"tokens", "mask"}` of `rows` rows of `row_len` tokens (crop or pack)."""

    rows: int
    row_len: int
    pad_id: int
    pack: bool = False

    def __call__(self, decoded: list[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        tokens = torch.full((self.rows, self.row_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((self.rows, self.row_len), dtype=torch.bool)
        if self.pack:
            parts = [d["tokens"] for d in decoded if d is not None]
            flat = torch.from_numpy(np.concatenate([*parts, np.zeros(0, np.int64)]))[: tokens.numel()]
            tokens.view(-1)[: len(flat)] = flat
            mask.view(-1)[: len(flat)] = True
            return {"tokens": tokens, "mask": mask}
        if len(decoded) != self.rows:
            raise ValueError(f"crop collate got {len(decoded)} samples for {self.rows} rows (one per row)")
        for i, d in enumerate(decoded):
            if d is not None:
                n = len(d["tokens"])
                tokens[i, :n] = torch.from_numpy(d["tokens"])
                mask[i, :n] = True
        return {"tokens": tokens, "mask": mask}


def text_functions(
    cfg: TextConfig, tokenizer: Tokenizer, *, batch_size: int, vocab_size: int | None = None
) -> tuple[TextDecoder, TextCollate]:
    """Decode and collate for batches of `batch_size` rows; read `cfg.samples_per_batch(batch_size)`
    samples per batch. `vocab_size` (default: the tokenizer's) bounds pre-tokenized ids."""
    ids = special_ids(tokenizer)
    missing = [t for t in ("<pad>", "<bos>", "<eos>") if t not in ids]
    if missing:
        raise ValueError(f"the tokenizer lacks special tokens {missing}; train it with SPECIAL_TOKENS")
    decode = TextDecoder(
        vocab_size=vocab_size or tokenizer.get_vocab_size(),
        bos_id=ids["<bos>"],
        eos_id=ids["<eos>"],
        max_len=cfg.row_len,
        tokenizer_json=tokenizer.to_str(),
    )
    return decode, TextCollate(rows=batch_size, row_len=cfg.row_len, pad_id=ids["<pad>"], pack=cfg.pack)


def texts_from_manifests(manifests: Iterable[str | os.PathLike], *, max_bytes: int | None = None) -> Iterator[str]:
    """The raw text (`json`/`txt` members) of every sample of the datasets, up to about `max_bytes`;
    for training a tokenizer. Samples without raw text are passed over."""
    seen = 0
    for manifest in manifests:
        index = index_dataset(manifest)
        with ShardFiles() as files:
            for shard in index.shards:
                for i, entry in enumerate(shard.samples):
                    try:
                        text = raw_text(read_sample(shard, i, files))
                    except DataError as e:
                        raise DataError(f"shard {shard.path}: sample {entry.key!r}: {e}") from None
                    if text is not None:
                        yield text
                        seen += len(text.encode("utf-8"))
                        if max_bytes is not None and seen >= max_bytes:
                            return
