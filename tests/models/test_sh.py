import math

import torch
from perfdata.models import sh


def test_basis_known_values() -> None:
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    Y = sh.eval_sh_basis(dirs)
    c0, c1, c2 = sh.C0, sh.C1, sh.C2
    expected = torch.tensor(
        [
            [c0, 0, c1, 0, 0, 0, 2 * c2[2], 0, 0],
            [c0, 0, 0, -c1, 0, 0, -c2[2], 0, c2[4]],
            [c0, -c1, 0, 0, 0, 0, -c2[2], 0, -c2[4]],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(Y, expected, atol=1e-12)
    assert abs(c0 - 0.5 / math.sqrt(math.pi)) < 1e-12


def test_basis_degrees_and_xy_term() -> None:
    d = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64) / math.sqrt(2.0)
    assert sh.eval_sh_basis(d, 0).shape == (1, 1)
    assert sh.eval_sh_basis(d, 1).shape == (1, 4)
    assert abs(float(sh.eval_sh_basis(d)[0, 4]) - sh.C2[0] * 0.5) < 1e-12


def test_basis_is_orthonormal_on_the_sphere() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    Y = sh.eval_sh_basis(d)
    gram = 4 * math.pi * (Y.T @ Y) / len(d)
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=0.02)


def test_sh_to_rgb_layout_and_clamp() -> None:
    d = torch.tensor([[0.0, 0.0, 1.0]])
    basis = sh.eval_sh_basis(d)
    coeffs = torch.zeros(1, 27)
    coeffs[0, 0] = 0.2 / sh.C0  # R DC
    coeffs[0, 9 + 2] = 0.1 / sh.C1  # G, Y_2 = C1 z
    coeffs[0, 18] = 5.0  # B saturates
    rgb = sh.sh_to_rgb(coeffs, basis)
    assert torch.allclose(rgb, torch.tensor([[0.7, 0.6, 1.0]]), atol=1e-6)
