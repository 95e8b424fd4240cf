"""The MSI background: layer geometry, texel reads and compositing against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from perfdata.models import background as B
from perfdata.models.sh import C0


def test_layer_radii_follow_inverse_radius_spacing() -> None:
    np.testing.assert_allclose(B.layer_radii(4), [8 / 7, 8 / 5, 8 / 3, 8.0])


def test_far_hits_from_the_centre_and_from_outside() -> None:
    # from the centre, every layer counts; the first stretch starts at radius 1
    o, d = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    t, dt = B.far_hits(o, d, 4)
    np.testing.assert_allclose(t[0], B.layer_radii(4), rtol=1e-6)
    np.testing.assert_allclose(dt[0], np.diff([1.0, *B.layer_radii(4)]), rtol=1e-6)
    # a camera 3 units out looking past the centre at distance 2 from it: only layers of radius >= 2 count
    o, d = torch.tensor([[2.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    t, dt = B.far_hits(o, d, 4)
    radii = B.layer_radii(4)
    counted = radii >= 2.0
    expected_t = 3.0 + np.sqrt(np.maximum(radii**2 - 4.0, 0))
    np.testing.assert_allclose(t[0, counted], expected_t[counted], rtol=1e-6)
    assert (dt[0, ~counted] == 0).all()
    first = int(np.argmax(counted))
    assert dt[0, first] == pytest.approx(expected_t[first] - 3.0, rel=1e-6)  # from where the ray is at radius 2


def test_texel_read_is_bilinear_with_wrapping_longitude() -> None:
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(8, 4, 2, 4)).astype(np.float32))
    u = torch.tensor([[0.25, 7.5], [3.0, 7.75]])  # 7.5: halfway between the last column and the first
    v = torch.tensor([[1.5, 2.0], [0.0, 9.0]])   # 9.0: clamps to the last row
    out = B.sample_layers(data, u, v)
    d = data.numpy()

    def hand(uu: float, vv: float, k: int) -> np.ndarray:
        vv = min(max(vv, 0.0), 3.0)
        u0, v0 = math.floor(uu), min(math.floor(vv), 2)
        fu, fv = uu - u0, vv - v0
        u1 = (u0 + 1) % 8
        return ((1 - fu) * (1 - fv) * d[u0 % 8, v0, k] + fu * (1 - fv) * d[u1, v0, k]
                + (1 - fu) * fv * d[u0 % 8, v0 + 1, k] + fu * fv * d[u1, v0 + 1, k])

    for i in range(2):
        for k in range(2):
            np.testing.assert_allclose(out[i, k].numpy(), hand(float(u[i, k]), float(v[i, k]), k), atol=1e-5)


def test_equirect_coordinates_follow_svox2() -> None:
    # +z is longitude 0 (the middle column), +x a quarter turn on, +y the top row
    u, v = B.equirect_coords(torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 8)
    np.testing.assert_allclose(u[:2].numpy(), [8.0, 12.0], atol=1e-5)
    np.testing.assert_allclose(v.numpy(), [4.0, 4.0, 0.0], atol=1e-5)


def test_composite_matches_a_hand_computation() -> None:
    """Two layers of constant colour and density seen from the centre, light left takes the colour behind."""
    data = torch.zeros((8, 4, 2, 4))
    data[:, :, 0, :3] = (torch.tensor([1.0, 0.0, 0.0]) - 0.5) / C0  # inner layer red
    data[:, :, 1, :3] = (torch.tensor([0.0, 0.0, 1.0]) - 0.5) / C0  # outer layer blue
    data[:, :, 0, 3], data[:, :, 1, 3] = 2.0, 0.5
    behind = torch.tensor([0.0, 1.0, 0.0])
    rgb = B.render(B.MSI(data, behind), torch.zeros(1, 3), torch.tensor([[0.6, 0.0, 0.8]]))
    r = B.layer_radii(2)  # 4/3, 4
    a0 = 1 - math.exp(-2.0 * (r[0] - 1.0))
    a1 = 1 - math.exp(-0.5 * (r[1] - r[0]))
    expected = [a0, (1 - a0) * (1 - a1), (1 - a0) * a1]
    np.testing.assert_allclose(rgb[0].numpy(), expected, atol=1e-5)


def test_gradients_reach_the_texels_a_ray_reads() -> None:
    data = torch.ones((8, 4, 3, 4), requires_grad=True)
    rgb = B.render(B.MSI(data, torch.zeros(3)), torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]))
    rgb.sum().backward()
    assert data.grad is not None
    touched = data.grad.abs().sum(dim=(2, 3)) > 0
    assert touched[4, 2] and touched.sum() <= 4  # longitude 0 sits at column 4, the equator at row 2
