"""The MSI background end to end: chosen from the capture, fitted with the grid (against one learned colour on
an object in textured surroundings without masks), exported into its store group and read back, and the `bg`
render of a scene holds its surroundings and no trace of the object."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from perfdata.models import plenoxel
from perfdata.pipelines.capture import choose_background, cleared_cube
from perfdata.pipelines.fit import fit_scene, msi_schedule
from perfdata.pipelines.fitconfig import FitConfig
from perfdata.pipelines.poses import Camera
from perfdata.pipelines.render_view import prepare_fields, render_view

from perfdata import camera
from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.scene import similarity
from perfdata.store import open_store
from perfdata.store.location import Location
from perfdata.store.validate import validate_store
from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene
from perfdata.synthetic import make_object_scene
from perfdata.synthetic.objects import ObjectSceneConfig

SMALL = dict(resolution=(32,), steps=120, batch_rays=2048, device="cpu", msi_height=16, msi_layers=8,
             depth_weight=0.0, init_from_depth=False)


@pytest.fixture(scope="module")
def backdrop_fits() -> dict:
    """A synthetic object on a textured dome and ground (no masks, no depth used), fitted with auto (-> msi)
    and with one learned colour, same steps."""
    scene = make_object_scene(3, n_views=24, size=32, config=ObjectSceneConfig(backdrop="textured"))
    return {"scene": scene, "msi": fit_scene(scene, FitConfig(background="auto", **SMALL)),
            "learned": fit_scene(scene, FitConfig(background="learned", **SMALL))}


def test_msi_beats_one_colour_on_an_object_in_its_surroundings(backdrop_fits: dict) -> None:
    msi, learned = backdrop_fits["msi"], backdrop_fits["learned"]
    print(f"held-out psnr: msi {msi.metrics['psnr']:.2f}, learned colour {learned.metrics['psnr']:.2f}")
    assert msi.config.background == "msi" and learned.config.background == "learned"  # recorded as chosen
    assert msi.metrics["psnr"] > learned.metrics["psnr"] + 3.0
    assert msi.grid.msi is not None and msi.grid.msi.shape == (32, 16, 8, 4) and learned.grid.msi is None


def _opacity_iou(result, scene) -> float:  # noqa: ANN001
    """IoU of the grid's opacity > 0.5 with the object's true silhouette (labels != background) on the
    held-out views."""
    grid = plenoxel.PlenoxelGrid.from_sparse(result.grid)
    inter = union = 0
    for f in scene.with_holdout(8).heldout_frames:
        solid = plenoxel.render_camera(grid, f.K, f.c2w, f.width, f.height)["opacity"].numpy() > 0.5
        truth = f.load_labels() > 0
        inter, union = inter + int((solid & truth).sum()), union + int((solid | truth).sum())
    return inter / max(union, 1)


def test_masks_put_the_object_in_the_grid_and_the_rest_behind(backdrop_fits: dict) -> None:
    """With CO3D-like foreground masks the grid's opacity follows the object's silhouette much better."""
    scene = backdrop_fits["scene"]
    masked = dataclasses.replace(scene, frames=tuple(dataclasses.replace(f, mask=f.load_labels() > 0)
                                                     for f in scene.frames))
    with_masks = fit_scene(masked, FitConfig(background="auto", **SMALL))
    iou, iou_plain = _opacity_iou(with_masks, scene), _opacity_iou(backdrop_fits["msi"], scene)
    print(f"silhouette IoU: with masks {iou:.3f}, without {iou_plain:.3f}")
    assert iou > 0.6 and iou > iou_plain + 0.1
    assert with_masks.metrics["psnr"] > backdrop_fits["learned"].metrics["psnr"] + 3.0


def test_msi_survives_export_and_reads_back(backdrop_fits: dict, tmp_path: Path) -> None:
    grid = backdrop_fits["msi"].grid
    loc = Location(str(tmp_path / "s.zarr"))
    write_scene(loc, "obj", grid_arrays(grid, WriteConfig()), WriteConfig())
    refresh_root(loc)
    assert validate_store(str(tmp_path / "s.zarr")).ok
    back = open_store(str(tmp_path / "s.zarr")).read_scene("obj")
    assert back.msi is not None
    step = (grid.msi.max(axis=(0, 1)) - grid.msi.min(axis=(0, 1))) / 255.0  # per layer and channel
    assert np.all(np.abs(back.msi - grid.msi) <= step / 2 + 1e-6)
    # the exported field renders the held-out views as the fit did
    scene = backdrop_fits["scene"].with_holdout(8)
    f = scene.heldout_frames[0]
    a = plenoxel.render_camera(plenoxel.PlenoxelGrid.from_sparse(grid), f.K, f.c2w, f.width, f.height)["rgb"]
    b = plenoxel.render_camera(plenoxel.PlenoxelGrid.from_sparse(back), f.K, f.c2w, f.width, f.height)["rgb"]
    assert float((a - b).abs().max()) < 0.06  # SH and MSI bytes: quantisation only


def test_a_corrupt_background_chunk_is_found_and_named(backdrop_fits: dict, tmp_path: Path) -> None:
    loc = Location(str(tmp_path / "s.zarr"))
    write_scene(loc, "obj", grid_arrays(backdrop_fits["msi"].grid, WriteConfig()), WriteConfig())
    refresh_root(loc)
    chunk = max((p for p in (tmp_path / "s.zarr/scenes/obj/background/data/c").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    key = chunk.relative_to(tmp_path / "s.zarr").as_posix()
    report = validate_store(str(tmp_path / "s.zarr"))
    assert not report.ok and any(p.where == key for p in report.problems)
    with pytest.raises(InputError, match=key):
        open_store(str(tmp_path / "s.zarr")).read_scene("obj")


def _object_with_msi(labelled: bool) -> SparseGrid:
    """A red ball (labelled 1) on a grey slab (labelled 0, background) inside the cube, a blue MSI outside."""
    reso = 32
    idx = np.stack(np.meshgrid(*[np.arange(reso)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ctr = (2 * idx + 1) / reso - 1
    ball = np.linalg.norm(ctr, axis=1) < 0.4
    slab = (np.abs(ctr[:, :2]).max(axis=1) < 0.8) & (np.abs(ctr[:, 2] + 0.6) < 0.1)
    near_ball = np.linalg.norm(ctr, axis=1) < 0.5  # empty voxels around the ball carry its colour, as a fit's do
    keep = near_ball | slab
    sh = np.zeros((keep.sum(), 27), np.float32)
    colour = np.where(near_ball[keep, None], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5])
    sh[:, [0, 9, 18]] = (colour - 0.5) / 0.28209479177387814
    msi = np.zeros((16, 8, 4, 4), np.float32)
    msi[..., :3] = (np.array([0.0, 0.0, 1.0]) - 0.5) / 0.28209479177387814
    msi[..., 3] = 5.0
    return SparseGrid(coords=idx[keep].astype(np.int32), density=np.where((ball | slab)[keep], 300.0, 0.0).astype(np.float32), sh=sh,
                      reso=(reso,) * 3, world_from_grid=similarity(1.0, np.zeros(3)),
                      labels=near_ball[keep].astype(np.int16) if labelled else None,
                      background=np.zeros(3, np.float32), msi=msi)


@pytest.mark.parametrize("labelled", [False, True])
def test_bg_render_shows_the_surroundings_and_no_trace_of_the_object(labelled: bool) -> None:
    grid = _object_with_msi(labelled)
    K = camera.intrinsics_from_fov(0.8, 32, 32)
    cam = Camera(K, camera.look_at(np.array([0.0, -3.5, 0.5]), np.zeros(3)), 32, 32)
    fields = prepare_fields(grid, ("background", "ball"), ("background",), 0.5, "cpu", need_bg=True)
    out = render_view(fields, cam, ("rgb", "bg"), 0.5, 4096)
    red = (out["rgb"][..., 0] > 0.8) & (out["rgb"][..., 2] < 0.2)
    assert red.sum() > 40  # the ball is in the view
    bg = out["bg"]
    assert (bg[..., 0] - bg[..., 1]).max() < 0.05  # nothing reddish: no trace of the ball
    blue = (bg[..., 2] > 0.95) & (bg[..., 0] < 0.05)
    if labelled:  # the slab (background class) stays, in front of the MSI
        assert (np.abs(bg - 0.5).max(-1) < 0.05).sum() > 20 and blue[red].mean() > 0.5
    else:  # the MSI alone
        assert blue.all()


def test_auto_background_by_capture() -> None:
    scene = make_object_scene(0, n_views=4, size=16)
    cfg = FitConfig()
    assert scene.background == "white" and choose_background(scene, cfg) == "white"  # masked object
    bare = dataclasses.replace(scene, background=None)
    for capture, expected in (("object", "msi"), ("forward_facing", "ndc"), ("room", "learned"), (None, "learned")):
        assert choose_background(dataclasses.replace(bare, meta={"capture": capture}), cfg) == expected
    assert choose_background(scene, FitConfig(background="learned")) == "learned"
    with pytest.raises(ConfigError, match="background must be one of"):
        FitConfig(background="sky")


def test_cleared_cube_shrinks_only_as_far_as_the_nearest_camera_needs() -> None:
    wfg = similarity(2.0, np.array([1.0, 0.0, 0.0]))
    near = np.array([[1.0, 3.0, 0.0], [1.0, -10.0, 0.0]])  # 3 from the centre: half-size 1.5 at clearance 2
    np.testing.assert_allclose(cleared_cube(wfg, near, 2.0)[:3, :3], 1.5 * np.eye(3))
    np.testing.assert_allclose(cleared_cube(wfg, near * 10, 2.0), wfg)  # far cameras: never grown


def test_msi_height_tv_and_distortion_follow_the_capture_unless_set() -> None:
    auto = FitConfig()
    assert auto.msi_height == 0
    # the larger image side / 4, in multiples of 8, within [16, 512]
    assert [auto.resolved_msi_height(s) for s in (40, 100, 237, 2400)] == [16, 24, 56, 512]
    assert FitConfig(msi_height=48).resolved_msi_height(100) == 48
    with pytest.raises(ConfigError, match="msi_height"):
        FitConfig(msi_height=1)
    # a fit records the height it used
    scene = make_object_scene(3, n_views=6, size=32, config=ObjectSceneConfig(backdrop="textured"))
    res = fit_scene(scene, FitConfig(background="msi", **{**SMALL, "msi_height": 0, "steps": 2}))
    assert res.config is not None and res.config.msi_height == 16 and res.grid.msi is not None
    assert res.grid.msi.data.shape[:2] == (32, 16)
    assert res.config.tv_sh == 1e-2 and res.config.distortion == 1e-2  # msi_schedule's, as the user left them unset
    kept = msi_schedule(FitConfig(tv_sh=5e-4, msi_height=40, distortion=2e-3), 100)
    assert (kept.tv_sh, kept.msi_height, kept.distortion) == (5e-4, 40, 2e-3)
