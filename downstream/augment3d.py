"""Training-time symmetries of 3D grids (cls3d, seg3d): the 8 maps of the dihedral group of the square about the
grid's z axis (a mirror of x, then 0-3 quarter turns about z), which keep the up axis up, so a shape class and
a room's semantics are unchanged. Dense volumes, sparse cells and their labels move together, and the SH
coefficients are rotated with the grid (a quarter turn of a radiance field also turns its view dependence), so
"sh" features stay a field seen from rotated directions rather than colours from the wrong side.

With `colour` > 0 an item is also re-coloured with that probability (recolour.py's colour_transform: RGB channels
permuted, scaled about grey, shifted). Colour is 0.5 + sum_k c_k Y_k(d) (models/sh.py), so the new field is
exact in SH space: the channels' coefficient blocks mix by the 3x3 matrix, and the shift moves the DC coefficient
of occupied cells by shift / C0. A class whose colour is arbitrary (a synthetic object, a mug) then has to be
recognised by its shape; leave it 0 where colour is part of the class (an apple, a stop sign).

    ds = AugmentedGrids(StoreGridDataset(...), seed=0)   # train split only
    ds.set_epoch(e)                                       # draws from default_rng([seed, epoch, index])

The z axis is the grid's third axis: up for synthetic scenes (perfdata.synthetic, z up) and ScanNet; a store
whose grids have another up axis gets symmetries that tilt the scene.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from perfdata.downstream.recolour import colour_transform

N_SYMMETRIES = 8
N_COLOURS = 3
"""SH coefficients are laid out per colour channel: [R0..R(nb-1), G0.., B0..] (nb = 9 at degree 2)."""


def symmetry_matrix(k: int, flip: bool) -> np.ndarray:
    """(3, 3) map of centred cell positions: mirror x when `flip`, then k quarter turns x -> y about z."""
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    mirror = np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3)
    return np.linalg.matrix_power(turn, k) @ mirror


@functools.lru_cache(maxsize=3 * N_SYMMETRIES)
def sh_matrix(k: int, flip: bool, n_basis: int = 9) -> torch.Tensor:
    """(nb, nb) float32 M with c' = M c: the SH coefficients (nb = 1, 4 or 9: degree 0, 1, 2) of
    f'(d) = f(A^-1 d), A = symmetry_matrix(k, flip), in models/sh.py's basis and signs.

    Exact: polynomials of degree <= 2 on the sphere are closed under orthogonal maps, so a least-squares fit on
    64 directions recovers M (blocks per degree; entries 0 or +-1 for these maps)."""
    from perfdata.models.sh import eval_sh_basis

    degree = {1: 0, 4: 1, 9: 2}[n_basis]
    a = symmetry_matrix(k, flip)
    dirs = np.random.default_rng(0).normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    basis = eval_sh_basis(torch.from_numpy(dirs), degree).numpy()
    moved = eval_sh_basis(torch.from_numpy(dirs @ np.linalg.inv(a).T), degree).numpy()
    m = np.linalg.lstsq(basis, moved, rcond=None)[0]  # basis @ m = moved, so B(d) (m c) = B(A^-1 d) c
    return torch.from_numpy(np.round(m, 9)).float()


def rotate_sh(feats: torch.Tensor, k: int, flip: bool, n_sh: int) -> torch.Tensor:
    """feats (..., C) whose last n_sh (3, 12, 27 or 0) columns are SH [R.., G.., B..] -> a new tensor with them
    transformed by sh_matrix(k, flip); the other columns unchanged."""
    if n_sh == 0 or (k == 0 and not flip):
        return feats.clone()
    assert n_sh in (3, 12, 27) and feats.shape[-1] >= n_sh, f"bad SH width {n_sh} of {tuple(feats.shape)}"
    out = feats.clone()
    nb = n_sh // N_COLOURS
    sh = feats[..., -n_sh:].reshape(*feats.shape[:-1], N_COLOURS, nb)
    out[..., -n_sh:] = (sh @ sh_matrix(k, flip, nb).T).reshape(*feats.shape[:-1], n_sh)
    return out


def recolour_sh(feats: torch.Tensor, m: np.ndarray, shift: np.ndarray, n_sh: int) -> torch.Tensor:
    """feats (..., C) whose first column is occupancy and last n_sh columns are SH [R.., G.., B..] -> a new
    tensor whose SH describe colour' = 0.5 + m (colour - 0.5) + shift (colour_transform): channel blocks mixed by
    m, and shift / C0 added to the DC coefficients of occupied cells (occupancy > 0; empty cells stay zero)."""
    from perfdata.models.sh import C0

    out = feats.clone()
    if n_sh == 0:
        return out
    nb = n_sh // N_COLOURS
    sh = feats[..., -n_sh:].reshape(*feats.shape[:-1], N_COLOURS, nb)
    new = torch.from_numpy(m).to(feats.dtype) @ sh
    occupied = (feats[..., :1] > 0).to(feats.dtype)
    new[..., 0] += occupied * torch.from_numpy(shift / C0).to(feats.dtype)
    out[..., -n_sh:] = new.reshape(*feats.shape[:-1], n_sh)
    return out


def transform_volume(v: torch.Tensor, k: int, flip: bool, first: int) -> torch.Tensor:
    """A (..., X, Y, Z, ...) volume whose x axis is dim `first` (y = first + 1): mirrored in x, then turned."""
    if flip:
        v = v.flip(first)
    return torch.rot90(v, k, dims=(first, first + 1)).contiguous()


def transform_coords(coords: torch.Tensor, k: int, flip: bool, reso: int) -> torch.Tensor:
    """(m, 3) int cell indices of a D^3 grid -> their cells under the same map as transform_volume."""
    x, y, z = coords.unbind(1)
    if flip:
        x = reso - 1 - x
    for _ in range(k):
        x, y = reso - 1 - y, x
    return torch.stack([x, y, z], dim=1).to(coords.dtype)


def transform_item(item: dict[str, torch.Tensor], k: int, flip: bool, reso: int, n_sh: int,
                   colour: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """A StoreGridDataset item (dense {"x", "y"} or sparse {"coords", "feats", "y"}) under symmetry (k, flip),
    re-coloured by `colour` (colour_transform's (m, shift)) when given."""

    def feats_of(f: torch.Tensor) -> torch.Tensor:
        f = rotate_sh(f, k, flip, n_sh)
        return f if colour is None else recolour_sh(f, *colour, n_sh)

    y = item["y"]
    if "coords" in item:
        return {"coords": transform_coords(item["coords"], k, flip, reso), "feats": feats_of(item["feats"]),
                "y": y.clone()}
    x = transform_volume(item["x"], k, flip, 1)
    x = feats_of(x.movedim(0, -1)).movedim(-1, 0).contiguous()
    return {"x": x, "y": transform_volume(y, k, flip, 0) if y.ndim == 3 else y.clone()}


class AugmentedGrids(torch.utils.data.Dataset):
    """A grid dataset whose item i of epoch e is under a symmetry drawn from default_rng([seed, e, i]) (the same
    draw with any number of DataLoader workers or processes), and with probability `colour` (items with SH
    only) re-coloured by a colour_transform drawn from the same generator."""

    def __init__(self, base: Any, seed: int, reso: int, n_sh: int, colour: float = 0.0) -> None:
        self.base, self.seed, self.reso, self.n_sh, self.epoch = base, seed, reso, n_sh, 0
        self.colour = colour

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        draw = int(rng.integers(N_SYMMETRIES))
        colour = colour_transform(rng) if self.n_sh and self.colour > 0 and rng.random() < self.colour else None
        return transform_item(self.base[i], draw % 4, draw >= 4, self.reso, self.n_sh, colour)
