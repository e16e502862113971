import dataclasses

import pytest
import torch

from foundry import rng
from foundry.infer.caption import caption
from foundry.infer.generate import Sampling
from foundry.models import vlm
from foundry_kernels import pixel_shuffle as ps

CFG = vlm.preset("vlm-debug", llm_vocab=67, image_token_id=66)


@pytest.fixture(autouse=True)
def eager_pixel_shuffle(monkeypatch):
    monkeypatch.setattr(ps, "COMPILED", False)


@pytest.fixture(scope="module")
def params():
    return vlm.init(rng.key(0), CFG)


def prompt_for(cfg: vlm.Config, text: torch.Tensor, n_images: int) -> torch.Tensor:
    image = torch.full((text.shape[0], n_images * cfg.tokens_per_image), cfg.image_token_id)
    return torch.cat([image, text], 1)


@pytest.mark.parametrize("prefix_lm", [True, False])
@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, top_k=20)])
def test_cached_and_uncached_captions_agree(params, prefix_lm, sampling):
    cfg = dataclasses.replace(CFG, prefix_lm=prefix_lm)
    images = rng.uniform(rng.key(1), (3, 2, 3, 32, 32), low=-1.0, high=1.0)
    prompt = prompt_for(cfg, rng.randint(rng.key(2), (3, 3), 0, 66), 2)
    kw = dict(max_new_tokens=10, sampling=sampling, key=rng.key(3))
    a = caption(params, cfg, images, prompt, **kw)
    b = caption(params, cfg, images, prompt, use_cache=False, **kw)
    assert a.tokens.shape == (3, 10)
    assert torch.equal(a.tokens, b.tokens)


def test_left_padded_prompt_and_single_image_input(params):
    images = rng.uniform(rng.key(4), (1, 3, 32, 32), low=-1.0, high=1.0)  # (B, 3, S, S): one image each
    prompt = prompt_for(CFG, torch.tensor([[3, 4]]), 1)
    alone = caption(params, CFG, images, prompt, max_new_tokens=6)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    valid = torch.cat([torch.zeros(1, 3, dtype=torch.bool), torch.ones_like(prompt, dtype=torch.bool)], 1)
    together = caption(params, CFG, images, padded, prompt_valid=valid, max_new_tokens=6)
    assert torch.equal(alone.tokens, together.tokens)
    with pytest.raises(ValueError, match="row 0 has 3 <image> placeholder tokens"):
        caption(params, CFG, images, prompt[:, 1:], max_new_tokens=2)
