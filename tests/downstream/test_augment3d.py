"""3D training symmetries: dense and sparse items move the same cells, labels follow them, SH is rotated so the
field seen from the turned direction keeps its colour, and the draws are seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from perfdata.downstream import augment3d as A
from perfdata.downstream import grids as G
from perfdata.downstream.recolour import colour_transform
from perfdata.models.sh import eval_sh_basis

from perfdata.store import open_store

SYMMETRIES = [(k, flip) for flip in (False, True) for k in range(4)]


def test_coordinate_maps_by_hand() -> None:
    c = torch.tensor([[1, 0, 2]])
    assert A.transform_coords(c, 0, True, 4).tolist() == [[2, 0, 2]]  # mirror x: 1 -> 4 - 1 - 1
    assert A.transform_coords(c, 1, False, 4).tolist() == [[3, 1, 2]]  # quarter turn x -> y: (x, y) -> (D-1-y, x)
    assert A.transform_coords(c, 2, False, 4).tolist() == [[2, 3, 2]]
    assert np.allclose(A.symmetry_matrix(1, False) @ [1, 0, 0], [0, 1, 0])


@pytest.mark.parametrize(("k", "flip"), SYMMETRIES)
def test_dense_and_sparse_move_the_same_cells_with_their_labels(room_store: Path, k: int, flip: bool) -> None:
    store = open_store(str(room_store))
    kw = dict(reso=8, task="seg", n_classes=3, features="sh+density")
    dense = G.StoreGridDataset(store, ["room_0"], **kw)[0]
    sparse = G.StoreGridDataset(store, ["room_0"], sparse=True, **kw)[0]
    d, s = A.transform_item(dense, k, flip, 8, 27), A.transform_item(sparse, k, flip, 8, 27)
    x, y, z = s["coords"].long().unbind(1)
    assert torch.allclose(d["x"][:, x, y, z].T, s["feats"], atol=1e-5) and torch.equal(d["y"][x, y, z], s["y"])
    assert int((d["x"][0] > 0).sum()) == len(s["coords"])  # every occupied cell lands on one cell
    x0, y0, z0 = sparse["coords"].long().unbind(1)
    assert torch.equal(s["y"], sparse["y"]) and torch.equal(d["y"][x, y, z], dense["y"][x0, y0, z0])
    assert torch.allclose(d["x"][:2, x, y, z], dense["x"][:2, x0, y0, z0])  # occupancy and density just move


@pytest.mark.parametrize(("k", "flip"), SYMMETRIES)
def test_sh_turns_with_the_grid(k: int, flip: bool) -> None:
    # f'(A d) must equal f(d): the turned field seen along the turned direction has the original colour
    rng = np.random.default_rng(k + 4 * flip)
    sh = torch.from_numpy(rng.normal(size=(5, 27))).float()
    feats = torch.cat([torch.ones(5, 2), sh], dim=1)
    out = A.rotate_sh(feats, k, flip, 27)
    assert torch.equal(out[:, :2], feats[:, :2])
    dirs = rng.normal(size=(7, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    a = A.symmetry_matrix(k, flip)
    before = torch.einsum("ncb,db->ndc", sh.view(5, 3, 9), eval_sh_basis(torch.from_numpy(dirs).float()))
    after = torch.einsum("ncb,db->ndc", out[:, 2:].reshape(5, 3, 9), eval_sh_basis(torch.from_numpy(dirs @ a.T).float()))
    assert torch.allclose(before, after, atol=1e-5)
    m = A.sh_matrix(k, flip)
    assert torch.allclose(m @ m.T, torch.eye(9), atol=1e-6) and set(m.abs().unique().tolist()) <= {0.0, 1.0}


def test_augmented_dataset_is_seeded_per_epoch(object_store: Path) -> None:
    store = open_store(str(object_store))
    base = G.StoreGridDataset(store, store.scene_ids[:4], 8, "cls", store.root.classes, preload=True, features="density")
    aug, again = A.AugmentedGrids(base, 3, 8, 0), A.AugmentedGrids(base, 3, 8, 0)
    epochs = []
    for e in range(4):
        aug.set_epoch(e)
        again.set_epoch(e)
        items = [aug[i]["x"] for i in range(4)]
        assert all(torch.equal(a, again[i]["x"]) for i, a in enumerate(items))
        assert all(int(aug[i]["y"]) == int(base[i]["y"]) for i in range(4))
        epochs.append(torch.stack(items))
    assert not all(torch.equal(epochs[0], other) for other in epochs[1:])  # the draws change with the epoch


def test_recolouring_is_exact_on_the_field() -> None:
    # colour' = 0.5 + M (colour - 0.5) + shift at every direction, with colour = 0.5 + sum_k c_k Y_k(d) unclamped
    rng = np.random.default_rng(5)
    sh = torch.from_numpy(rng.normal(scale=0.3, size=(6, 27))).float()
    feats = torch.cat([torch.tensor([1.0, 0.5, 0.2, 1.0, 0.0, 0.0])[:, None], torch.ones(6, 1), sh], dim=1)
    feats[4:, 2:] = 0.0  # the last two cells are empty: zero features
    m, shift = colour_transform(np.random.default_rng(1))
    assert sorted(np.count_nonzero(m, axis=0)) == [1, 1, 1] and np.all((m == 0) | ((m >= 0.6) & (m <= 1.4)))
    out = A.recolour_sh(feats, m, shift, 27)
    assert torch.equal(out[:, :2], feats[:, :2]) and torch.equal(out[4:], feats[4:])  # empty cells stay zero
    dirs = rng.normal(size=(9, 3))
    basis = eval_sh_basis(torch.from_numpy(dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).float())
    before = torch.einsum("ncb,db->ndc", sh[:4].view(4, 3, 9), basis) + 0.5
    after = torch.einsum("ncb,db->ndc", out[:4, 2:].reshape(4, 3, 9), basis) + 0.5
    want = 0.5 + (before - 0.5) @ torch.from_numpy(m).float().T + torch.from_numpy(shift).float()
    assert torch.allclose(after, want, atol=1e-5)


def test_colour_augmentation_draws_are_seeded_and_keep_the_label(object_store: Path) -> None:
    store = open_store(str(object_store))
    base = G.StoreGridDataset(store, store.scene_ids[:3], 8, "cls", store.root.classes, preload=True,
                              features="sh+density")
    plain, coloured = A.AugmentedGrids(base, 3, 8, 27), A.AugmentedGrids(base, 3, 8, 27, colour=1.0)
    for i in range(3):
        p, c, again = plain[i], coloured[i], A.AugmentedGrids(base, 3, 8, 27, colour=1.0)[i]
        assert torch.equal(c["x"], again["x"]) and int(c["y"]) == int(p["y"])
        assert torch.equal(c["x"][:2], p["x"][:2])  # the same symmetry: occupancy and density unchanged
        assert not torch.allclose(c["x"][2:], p["x"][2:])  # the SH are re-coloured
