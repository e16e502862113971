"""Byte-level BPE: round trips, whole special tokens, save/load, growing the vocabulary."""

from __future__ import annotations

import pytest

from foundry.data.manifest import DataError
from foundry.data.tokenizer import (
    SPECIAL_TOKENS,
    add_special_tokens,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)


@pytest.mark.parametrize(
    "text",
    [
        "to be or not to be",
        "  leading and trailing  ",
        "Ünïcödé — 🙂 中文",
        "tabs\tand\nnewlines\r\n",
        "",
        "<x>",
    ],
)
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text


def test_special_tokens_come_first_and_stay_whole(tokenizer):
    assert special_ids(tokenizer) == {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    ids = tokenizer.encode("to be<bos>or<image><obs>").ids
    assert special_ids(tokenizer)["<bos>"] in ids and 3 in ids and 4 in ids
    assert tokenizer.get_vocab_size() == 400


def test_save_load_and_add_special_tokens(tmp_path, tokenizer):
    path = save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(path)
    assert loaded.encode("to be or not").ids == tokenizer.encode("to be or not").ids
    grown = add_special_tokens(loaded, ["<image>", "<act>"])
    assert special_ids(grown)["<act>"] == 400 and grown.get_vocab_size() == 401
    assert loaded.get_vocab_size() == 400  # the input is not changed
    assert grown.encode("x<act>").ids[-1] == 400
    with pytest.raises(DataError, match=r"missing\.json does not exist"):
        load_tokenizer(tmp_path / "missing.json")


def test_vocab_size_checked():
    with pytest.raises(ValueError, match="vocab_size = 100"):
        train_tokenizer(["abc"], vocab_size=100)
