import pytest
import torch

from foundry import rng
from foundry.infer.generate import Sampling, generate, sample_token
from foundry.models import llm

CFG = llm.preset("debug", vocab_size=61, max_seq_len=64)


@pytest.fixture(scope="module")
def params():
    return llm.init(rng.key(0), CFG)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, top_k=10, top_p=0.9)])
def test_cached_and_uncached_generation_agree(params, sampling):
    prompt = rng.randint(rng.key(1), (3, 6), 0, CFG.vocab_size)
    valid = torch.ones_like(prompt, dtype=torch.bool)
    valid[1, :2] = False  # a left-padded row
    kw = dict(max_new_tokens=15, prompt_valid=valid, sampling=sampling, key=rng.key(2))
    a = generate(params, CFG, prompt, **kw)
    b = generate(params, CFG, prompt, use_cache=False, **kw)
    assert torch.equal(a.tokens, b.tokens)


def test_left_padding_does_not_change_a_row(params):
    prompt = rng.randint(rng.key(3), (1, 5), 0, CFG.vocab_size)
    alone = generate(params, CFG, prompt, max_new_tokens=8)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    valid = torch.tensor([[False] * 3 + [True] * 5])
    together = generate(params, CFG, padded, prompt_valid=valid, max_new_tokens=8)
    assert torch.equal(alone.tokens, together.tokens)


def test_stop_tokens_pad_the_rest(params):
    prompt = rng.randint(rng.key(4), (2, 4), 0, CFG.vocab_size)
    free = generate(params, CFG, prompt, max_new_tokens=10)
    stop = int(free.tokens[0, 3])
    out = generate(params, CFG, prompt, max_new_tokens=10, stop_tokens=(stop,), pad_id=-1)
    first = int((free.tokens[0] == stop).nonzero()[0])
    assert out.lengths[0] == first + 1
    assert (out.tokens[0, first + 1 :] == -1).all()
    assert torch.equal(out.tokens[0, : first + 1], free.tokens[0, : first + 1])


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert sample_token(logits, Sampling(), key=None).item() == 1
    assert sample_token(logits, Sampling(temperature=5.0, top_k=1), key=rng.key(0)).item() == 1
    picks = {sample_token(logits, Sampling(temperature=1.0, top_p=0.5), key=rng.key(i)).item() for i in range(50)}
    assert picks <= {1, 3}  # the nucleus holds the two most likely tokens
    draws = torch.stack([sample_token(logits, Sampling(temperature=1.0), key=rng.key(i)) for i in range(400)])
    freq = (draws == 1).float().mean().item()
    assert abs(freq - logits.softmax(-1)[0, 1].item()) < 0.08
    with pytest.raises(ValueError, match="needs key="):
        sample_token(logits, Sampling(temperature=1.0), key=None)


def test_too_long_generation_is_an_error(params):
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        generate(params, CFG, torch.zeros(1, 60, dtype=torch.long), max_new_tokens=10)
