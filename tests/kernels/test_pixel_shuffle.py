import pytest
import torch

from foundry import rng
from foundry_kernels.pixel_shuffle import pixel_shuffle, pixel_shuffle_reference


def slow_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    """Loop over output tokens: token (i, j) = concat of grid tokens (i*r + a, j*r + b), a outer."""
    b, n, d = x.shape
    side = int(n**0.5)
    grid = x.reshape(b, side, side, d)
    out = [
        torch.cat([grid[:, i * r + a, j * r + c] for a in range(r) for c in range(r)], -1)
        for i in range(side // r)
        for j in range(side // r)
    ]
    return torch.stack(out, 1)


@pytest.mark.parametrize(("b", "side", "d", "r"), [(3, 4, 5, 2), (1, 6, 3, 3), (5, 8, 4, 4), (2, 6, 7, 2)])
def test_reference_matches_loop(b, side, d, r):
    x = rng.normal(rng.key(side * r), (b, side * side, d))
    y = pixel_shuffle_reference(x, r)
    assert y.shape == (b, side * side // r**2, d * r * r)
    torch.testing.assert_close(y, slow_reference(x, r), rtol=0, atol=0)


def test_four_d_input_is_per_image():
    x = rng.normal(rng.key(1), (3, 2, 16, 5))
    y = pixel_shuffle_reference(x, 2)
    assert y.shape == (3, 2, 4, 20)
    torch.testing.assert_close(y[:, 1], slow_reference(x[:, 1], 2), rtol=0, atol=0)
    assert torch.equal(pixel_shuffle(x, 1), x)


def test_errors_name_n_side_and_r():
    with pytest.raises(ValueError, match=r"N=15 tokens do not form a square grid.*r=2"):
        pixel_shuffle_reference(torch.zeros(1, 15, 4), 2)
    with pytest.raises(ValueError, match=r"grid side 6 \(N=36\) is not divisible by r=4"):
        pixel_shuffle(torch.zeros(1, 36, 4), 4)  # checked eagerly, before any compile
    with pytest.raises(ValueError, match=r"expected \(B, N, D\)"):
        pixel_shuffle_reference(torch.zeros(36, 4), 2)


@pytest.mark.compile
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_matches_reference_forward_and_backward(dtype):
    torch._dynamo.reset()
    cases = [((3, 36, 8), 3), ((5, 2, 64, 6), 2), ((1, 64, 6), 4)]  # odd batches, 3-D and 4-D, several r
    for shape, r in cases:
        x = rng.normal(rng.key(len(shape) + r), shape, dtype=dtype)
        w = rng.normal(rng.key(7), (*shape[:-2], shape[-2] // r**2, shape[-1] * r * r), dtype=dtype)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = pixel_shuffle(xa, r, compiled=True), pixel_shuffle_reference(xb, r)
        assert ya.dtype == dtype
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)  # a pure permutation: exact in any dtype
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
