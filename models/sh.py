"""Real spherical harmonics up to degree 2, with the constants and sign convention of Plenoxels / PlenOctrees.

Coefficients of a voxel are laid out [R0..R8, G0..G8, B0..B8] (DESIGN.md section 2) and
colour = clamp(sum_k c_k Y_k(d) + 0.5, 0, 1).
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)


def n_basis(degree: int) -> int:
    """Number of basis functions of an SH expansion up to `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def eval_sh_basis(dirs: torch.Tensor, degree: int = 2) -> torch.Tensor:
    """SH basis at unit directions.

    Args:
        dirs: (n, 3) unit vectors (x, y, z).
        degree: 0, 1 or 2.
    Returns:
        (n, (degree + 1)^2) basis values Y_0..Y_8 (for degree 2), same dtype as `dirs`.
    """
    assert dirs.ndim == 2 and dirs.shape[1] == 3, f"dirs must be (n, 3), got {tuple(dirs.shape)}"
    assert 0 <= degree <= 2, f"SH degree must be 0, 1 or 2, got {degree}"
    x, y, z = dirs.unbind(-1)
    cols = [torch.full_like(x, C0)]
    if degree >= 1:
        cols += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        cols += [
            C2[0] * x * y,
            C2[1] * y * z,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * x * z,
            C2[4] * (xx - yy),
        ]
    return torch.stack(cols, dim=-1)


def sh_to_rgb(sh: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Colour from SH coefficients.

    Args:
        sh: (n, 3 * n_basis) coefficients laid out [R0.., G0.., B0..].
        basis: (n, n_basis) basis values at the viewing directions (`eval_sh_basis`).
    Returns:
        (n, 3) colour clamp(sum_k c_k Y_k + 0.5, 0, 1).
    """
    n, nb = basis.shape
    assert sh.shape == (n, 3 * nb), f"sh must be ({n}, {3 * nb}), got {tuple(sh.shape)}"
    raw = torch.bmm(sh.view(n, 3, nb), basis.unsqueeze(-1)).squeeze(-1)
    return (raw + 0.5).clamp(0.0, 1.0)
