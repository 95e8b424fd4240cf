"""3D labels on a synthetic room (exact depth and label maps): from a labelled point cloud and from 2D maps."""

from __future__ import annotations

import numpy as np
import pytest
from perfdata.pipelines.labels import LabelConfig, labels_from_maps, labels_from_points, read_labelled_points
from plyfile import PlyData, PlyElement

from perfdata import camera
from perfdata.cli import main
from perfdata.grid import SparseGrid
from perfdata.store import WriteConfig, grid_arrays, open_store, refresh_root, write_scene
from perfdata.store.location import Location
from perfdata.store.validate import validate_store

RESO = 128


@pytest.fixture(scope="module")
def room():
    """A room scene, its labelled surface points (from exact depth) and a voxel grid of those surfaces, with the
    truth label of each voxel (majority of the surface points inside it)."""
    from perfdata.synthetic import make_room_scene

    scene = make_room_scene(seed=3, n_views=6, size=64)
    pts, labs = [], []
    for f in scene.frames:
        p, flat = camera.backproject(f.load_depth(), f.K, f.c2w)
        pts.append(p)
        labs.append(f.load_labels().ravel()[flat])
    pts, labs = np.concatenate(pts), np.concatenate(labs).astype(np.int64)
    g = scene.world_to_grid(pts)
    cells = np.floor((g + 1) / 2 * RESO).astype(np.int64)
    inside = ((cells >= 0) & (cells < RESO)).all(1)
    lin = (cells[inside] @ np.array([RESO * RESO, RESO, 1]))
    keys, inv = np.unique(lin, return_inverse=True)
    votes = np.zeros((len(keys), labs.max() + 1), np.int64)
    np.add.at(votes, (inv, labs[inside]), 1)
    coords = np.stack([keys // RESO**2, keys // RESO % RESO, keys % RESO], 1).astype(np.int32)
    n = len(coords)
    grid = SparseGrid(coords=coords, density=np.ones(n, np.float32), sh=np.zeros((n, 27), np.float32),
                      reso=(RESO,) * 3, world_from_grid=scene.world_from_grid)
    return scene, pts, labs, grid, votes.argmax(1)


def test_labels_from_points_match_truth_within_5cm(room):
    scene, pts, labs, grid, truth = room
    far = SparseGrid(coords=np.array([[64, 64, 60]], np.int32), density=np.ones(1, np.float32),
                     sh=np.zeros((1, 27), np.float32), reso=(RESO,) * 3, world_from_grid=scene.world_from_grid)
    labels, dist = labels_from_points(grid, pts, labs, LabelConfig(max_dist=0.05))
    assert (labels >= 0).mean() > 0.99 and dist[labels >= 0].max() <= 0.05
    assert (labels == truth).mean() > 0.95
    far_label, far_dist = labels_from_points(far, pts, labs)
    assert far_label[0] == -1 and far_dist[0] > 0.05


def test_labels_fused_from_2d_maps_agree_with_points(room):
    scene, pts, labs, grid, truth = room
    labels, votes = labels_from_maps(grid, scene.frames)
    voted = labels >= 0
    assert voted.mean() > 0.99 and votes[voted].min() >= 1
    assert (labels[voted] == truth[voted]).mean() > 0.97
    half, _ = labels_from_maps(grid, scene.frames[:3])
    assert 0.2 < (half >= 0).mean() < 0.95  # only what those views saw


def test_label_command_writes_labels_into_store(room, tmp_path, capsys):
    scene, pts, labs, grid, truth = room
    loc = Location(str(tmp_path / "s.zarr"))
    write_scene(loc, "room_3", grid_arrays(grid, WriteConfig()), WriteConfig())
    refresh_root(loc, "rooms")
    vertex = np.empty(len(pts), [("x", "f4"), ("y", "f4"), ("z", "f4"), ("label", "u2")])
    vertex["x"], vertex["y"], vertex["z"], vertex["label"] = pts[:, 0], pts[:, 1], pts[:, 2], labs
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "room_3_labels.ply"))
    assert read_labelled_points(tmp_path / "room_3_labels.ply")[0].shape == pts.shape
    with pytest.raises(SystemExit) as exc:
        main(["label", "--store", str(loc.url), "--points", str(tmp_path / "{scene}_labels.ply")])
        raise SystemExit(0)
    assert exc.value.code == 0
    store = open_store(loc.url)
    back = store.read_scene("room_3")
    ref = grid.sorted()
    expected, dist = labels_from_points(ref, pts.astype(np.float32).astype(np.float64), labs)
    np.testing.assert_array_equal(back.labels, expected)
    stored_dist = store.array("room_3", "label_dist")[:]
    np.testing.assert_allclose(stored_dist, dist, rtol=1e-3, atol=1e-6)
    assert store.scene_attrs("room_3").extra["labels_source"].endswith("room_3_labels.ply")
    assert validate_store(loc.url).ok
