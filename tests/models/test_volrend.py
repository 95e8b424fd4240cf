import math

import torch
from perfdata.models import volrend


def test_one_ray_matches_hand_computation() -> None:
    sigmas = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    deltas = torch.tensor([[0.5, 0.5, 1.0]], dtype=torch.float64)
    w, T = volrend.render_weights(sigmas, deltas)
    # tau = 0.5, 1.0, 0.5; T = 1, e^-0.5, e^-1.5; alpha = 1 - e^-tau
    T_hand = [1.0, math.exp(-0.5), math.exp(-1.5)]
    w_hand = [T_hand[0] * (1 - math.exp(-0.5)), T_hand[1] * (1 - math.exp(-1.0)), T_hand[2] * (1 - math.exp(-0.5))]
    assert torch.allclose(T[0], torch.tensor(T_hand, dtype=torch.float64))
    assert torch.allclose(w[0], torch.tensor(w_hand, dtype=torch.float64))
    colours = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    rgb = volrend.composite(w, colours)
    assert torch.allclose(rgb[0], torch.tensor(w_hand, dtype=torch.float64))
    opacity = volrend.accumulate_opacity(w)
    assert abs(float(opacity[0]) - (1 - math.exp(-2.0))) < 1e-12
    out = volrend.add_background(rgb, opacity, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(out[0], torch.tensor(w_hand, dtype=torch.float64) + math.exp(-2.0))
    depth = volrend.composite(w, torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    assert abs(float(depth[0]) - (w_hand[0] + 2 * w_hand[1] + 3 * w_hand[2])) < 1e-12


def _random_packed(n_rays: int, max_samples: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_samples + 1, (n_rays,), generator=g)
    dense_sigma = torch.rand(n_rays, max_samples, generator=g, dtype=torch.float64) * 3
    mask = torch.arange(max_samples)[None, :] < counts[:, None]
    dense_sigma = dense_sigma * mask
    ray_idx, k = torch.nonzero(mask, as_tuple=True)
    return dense_sigma, mask, ray_idx, k


def test_packed_equals_dense() -> None:
    dense_sigma, mask, ray_idx, k = _random_packed(40, 30, seed=1)
    delta = 0.1
    w_dense, T_dense = volrend.render_weights(dense_sigma, torch.full_like(dense_sigma, delta))
    w_packed, T_packed = volrend.render_weights_packed(dense_sigma[ray_idx, k], delta, ray_idx, 40)
    assert torch.allclose(w_packed, w_dense[ray_idx, k], atol=1e-12)
    assert torch.allclose(T_packed, T_dense[ray_idx, k], atol=1e-12)
    values = torch.rand(*dense_sigma.shape, 5, dtype=torch.float64)
    dense = volrend.composite(w_dense * mask, values)
    packed = volrend.composite_packed(w_packed, values[ray_idx, k], ray_idx, 40)
    assert torch.allclose(dense, packed, atol=1e-12)
    assert torch.allclose(volrend.accumulate_opacity(w_dense * mask), volrend.accumulate_opacity(w_packed, ray_idx, 40))


def test_packed_float32_long_batch_keeps_precision() -> None:
    # many rays with a large optical depth each: a plain float32 global cumsum would drift
    n_rays, n = 2000, 200
    sigma = torch.full((n_rays * n,), 50.0)
    ray_idx = torch.arange(n_rays).repeat_interleave(n)
    w, _ = volrend.render_weights_packed(sigma, 0.01, ray_idx, n_rays)
    first = w.view(n_rays, n)[:, 0]
    assert torch.allclose(first, torch.full_like(first, 1 - math.exp(-0.5)), atol=1e-6)


def test_packed_gradcheck() -> None:
    dense_sigma, _, ray_idx, k = _random_packed(6, 5, seed=2)
    sig = (dense_sigma[ray_idx, k] + 0.1).requires_grad_(True)

    def fn(s: torch.Tensor) -> torch.Tensor:
        w, _ = volrend.render_weights_packed(s, 0.3, ray_idx, 6)
        return volrend.composite_packed(w, torch.arange(len(s), dtype=s.dtype), ray_idx, 6)

    assert torch.autograd.gradcheck(fn, (sig,))


def test_distortion_matches_hand_computation_and_the_double_sum() -> None:
    # one ray: w = (0.5, 0.25) at t = (1, 3), step 0.5: 2 * 0.5 * 0.25 * |1 - 3| + 0.5 / 3 * (0.25 + 0.0625)
    w = torch.tensor([0.5, 0.25], dtype=torch.float64)
    t = torch.tensor([1.0, 3.0], dtype=torch.float64)
    out = volrend.distortion_packed(w, t, 0.5, torch.zeros(2, dtype=torch.long), 1)
    assert abs(float(out[0]) - (0.5 + 0.5 / 3 * 0.3125)) < 1e-12
    # packed rays (some empty) against the O(n^2) double sum per ray
    dense_sigma, mask, ray_idx, k = _random_packed(30, 12, seed=4)
    w_packed, _ = volrend.render_weights_packed(dense_sigma[ray_idx, k], 0.2, ray_idx, 30)
    t_packed = 0.2 * k.double() + 0.37
    got = volrend.distortion_packed(w_packed, t_packed, 0.2, ray_idx, 30)
    for r in range(30):
        wr, tr = w_packed[ray_idx == r], t_packed[ray_idx == r]
        want = (wr[:, None] * wr[None, :] * (tr[:, None] - tr[None, :]).abs()).sum() + 0.2 / 3 * (wr * wr).sum()
        assert abs(float(got[r]) - float(want)) < 1e-10, r
    assert float(got[mask.sum(1) == 0].abs().sum()) == 0.0 and float(got.max()) > 0.01
    # a ray whose weight sits in one sample scores less than one whose weight is spread over two far apart
    one = volrend.distortion_packed(torch.tensor([0.9]), torch.tensor([2.0]), 0.2, torch.zeros(1, dtype=torch.long), 1)
    two = volrend.distortion_packed(torch.tensor([0.45, 0.45]), torch.tensor([1.0, 3.0]), 0.2,
                                    torch.zeros(2, dtype=torch.long), 1)
    assert float(one) < float(two)
