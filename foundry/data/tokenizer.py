"""Byte-level BPE tokenizer (HuggingFace `tokenizers`), trained here on the project's own text.

Byte-level means every string round-trips: `tok.decode(tok.encode(s).ids, skip_special_tokens=False)
== s`. The special tokens come first (ids 0..4 for `SPECIAL_TOKENS`, so `<pad>` is 0) and are never split
by BPE. Later stages grow the vocabulary with `add_special_tokens`; existing ids never change.

Usage:

    from foundry.data.text import texts_from_manifests

    tok = train_tokenizer(texts_from_manifests(["data/text/train"]), vocab_size=4096)
    save_tokenizer(tok, "runs/llm/tokenizer.json")
    tok = load_tokenizer("runs/llm/tokenizer.json")
    ids = special_ids(tok)          # {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<image>": 3, "<obs>": 4}
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from foundry.data.manifest import DataError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>", "<obs>")


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 4096,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (special tokens and the 256 bytes included)."""
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size = {vocab_size} < 256 bytes + {len(special_tokens)} special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    """Write `tokenizer.json` atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tok.to_str(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a `tokenizer.json`; a missing file raises `DataError` naming it."""
    if not os.path.isfile(path):
        raise DataError(f"tokenizer file {path} does not exist")
    return Tokenizer.from_file(str(path))


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """`{name: id}` of the special tokens the tokenizer has (those of `SPECIAL_TOKENS` and any added)."""
    out = {}
    for name in SPECIAL_TOKENS:
        i = tok.token_to_id(name)
        if i is not None:
            out[name] = i
    for i, added in sorted(tok.get_added_tokens_decoder().items()):
        if added.special:
            out.setdefault(added.content, i)
    return out


def add_special_tokens(tok: Tokenizer, names: Iterable[str]) -> Tokenizer:
    """A copy of `tok` with the missing `names` appended as special tokens (new ids at the end)."""
    out = Tokenizer.from_str(tok.to_str())
    missing = [n for n in names if out.token_to_id(n) is None]
    out.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in missing])
    return out
