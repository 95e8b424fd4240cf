"""Smooth sparse grids like a fitted field's, shared by the store and export tests (a uniquely named module,
imported through sys.path, so it never collides with another conftest)."""

from __future__ import annotations

import numpy as np

from perfdata.grid import SparseGrid


def shell_grid(reso: int = 64, seed: int = 0, labels: bool = False, logits: int = 0) -> SparseGrid:
    """Voxels of a thin spherical shell with smooth density and SH fields (plus a little noise), unsorted."""
    rng = np.random.default_rng(seed)
    g = (np.arange(reso) + 0.5) / reso * 2 - 1
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    coords = np.argwhere(np.abs(r - 0.6) < 3.0 / reso).astype(np.int32)
    coords = coords[rng.permutation(len(coords))]
    c = (2 * coords + 1) / reso - 1
    freqs = rng.normal(0, 3, size=(27, 3))
    amp = np.tile(np.array([1.0] + [0.3] * 3 + [0.1] * 5), 3)
    sh = (np.sin(c @ freqs.T + rng.uniform(0, 6, 27)) * amp + rng.normal(0, 0.002, (len(c), 27))).astype(np.float32)
    density = (30 * np.cos(3 * c[:, 0]) + rng.normal(0, 0.5, len(c))).astype(np.float32)
    world = np.diag([2.0, 2.0, 2.0, 1.0])
    world[:3, 3] = [0.5, -1.0, 3.0]
    return SparseGrid(
        coords=coords, density=density, sh=sh, reso=(reso, reso, reso), world_from_grid=world,
        labels=(c[:, 2] > 0).astype(np.int16) if labels else None,
        logits=rng.normal(size=(len(c), logits)).astype(np.float32) if logits else None,
    )
