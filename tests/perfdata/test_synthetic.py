"""Synthetic scenes: exact geometry, determinism, consistency of the maps, the on-disk form and the reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from perfdata import camera
from perfdata.errors import ConfigError, InputError
from perfdata.readers import get_reader
from perfdata.scene import Frame
from perfdata.synthetic import (
    OBJECT_LABEL_NAMES,
    ROOM_LABEL_NAMES,
    SHAPE_CLASSES,
    ObjectSceneConfig,
    SynthConfig,
    make_object_scene,
    make_room_scene,
    plan_scenes,
    synthesize,
    write_scene,
)
from perfdata.synthetic.raytrace import Lighting, render_view
from perfdata.synthetic.shapes import Material, intersect, make_primitive, rotation_x, rotation_z

SIZE = 32


@pytest.fixture(scope="module")
def torus_scene():
    return make_object_scene(7, n_views=6, size=SIZE, shape="torus")


@pytest.fixture(scope="module")
def room_scene():
    return make_room_scene(3, n_views=6, size=SIZE)


def _arrays(scene):
    return [(f.load_image(), f.load_depth(), f.load_mask(), f.load_labels(), f.c2w) for f in scene.frames]


def test_same_seed_gives_identical_arrays_and_other_seeds_differ(torus_scene, room_scene):
    for made, again, other in [
        (torus_scene, make_object_scene(7, 6, SIZE, shape="torus"), make_object_scene(8, 6, SIZE, shape="torus")),
        (room_scene, make_room_scene(3, 6, SIZE), make_room_scene(4, 6, SIZE)),
    ]:
        for a, b in zip(_arrays(made), _arrays(again), strict=True):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
        assert not np.array_equal(made.frames[0].load_image(), other.frames[0].load_image())
        assert not np.array_equal(made.frames[0].load_depth(), other.frames[0].load_depth())
    assert torus_scene.meta["seed"] == 7 and room_scene.meta["seed"] == 3


def _sample_inverse_depth(depth: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear interpolation of 1/depth at pixel positions uv (n, 2) and the four neighbours' flat indices."""
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    h, w = depth.shape
    idx = np.stack([y0 * w + x0, y0 * w + x0 + 1, (y0 + 1) * w + x0, (y0 + 1) * w + x0 + 1], 1)
    with np.errstate(divide="ignore"):
        inv = 1.0 / depth.astype(np.float64).ravel()[idx]
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return np.sum(inv * weights, 1), idx


def _reprojection_error(f0: Frame, f1: Frame, plane_label: int) -> tuple[float, int]:
    """Back-project f0's pixels of a planar surface, project into f1, compare with f1's depth there.

    On a plane, 1/z is affine in (u, v), so bilinear interpolation of f1's inverse depth between four pixel centres
    that all see the same plane is exact: the comparison holds to float32 precision."""
    depth0, labels0, labels1 = f0.load_depth(), f0.load_labels(), f1.load_labels()
    points, flat = camera.backproject(np.where(labels0 == plane_label, depth0, 0.0), f0.K, f0.c2w)
    uv, z = camera.project(points, f0.K, f1.c2w)
    inside = (z > 0) & (uv[:, 0] > 0.5) & (uv[:, 1] > 0.5) & (uv[:, 0] < f1.width - 0.5) & (uv[:, 1] < f1.height - 0.5)
    inv, idx = _sample_inverse_depth(f1.load_depth(), uv[inside])
    same_plane = np.all(labels1.ravel()[idx] == plane_label, axis=1)
    err = np.abs(1.0 / inv[same_plane] - z[inside][same_plane])
    return float(err.max(initial=0.0)), int(same_plane.sum())


def test_depth_reprojects_exactly_between_frames(torus_scene, room_scene):
    err, n = _reprojection_error(torus_scene.frames[0], torus_scene.frames[1], OBJECT_LABEL_NAMES.index("background"))
    assert n > 100 and err < 1e-4
    floor = ROOM_LABEL_NAMES.index("floor")
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    compared = [_reprojection_error(room_scene.frames[i], room_scene.frames[j], floor) for i, j in pairs]
    assert sum(n for _, n in compared) > 100 and max(e for e, _ in compared) < 1e-4


def test_sphere_scene_points_fit_a_sphere_resting_on_the_ground():
    """Object pixels of every view of a sphere scene back-project onto one sphere (least-squares fit residual at
    float32 precision) whose lowest point touches the ground plane z = 0."""
    scene = make_object_scene(11, n_views=4, size=SIZE, shape="sphere")
    points = np.concatenate(
        [camera.backproject(np.where(f.load_mask(), f.load_depth(), 0.0), f.K, f.c2w)[0] for f in scene.frames]
    )
    assert len(points) > 200
    A = np.concatenate([2.0 * points, np.ones((len(points), 1))], 1)
    sol = np.linalg.lstsq(A, np.sum(points**2, 1), rcond=None)[0]
    centre, radius = sol[:3], math.sqrt(sol[3] + sol[:3] @ sol[:3])
    np.testing.assert_allclose(np.linalg.norm(points - centre, axis=1), radius, atol=2e-6)
    assert 0.25 <= radius <= 0.45 and centre[2] == pytest.approx(radius, abs=1e-5)


def test_sphere_depth_matches_closed_form():
    """Camera at distance D looking at a sphere of radius r: the centre pixel sees depth D - r, every hit lies on
    the sphere's near side, and exactly the rays passing within r of the centre hit."""
    D, r, size = 3.0, 0.5, 65
    K = camera.intrinsics_from_fov(math.radians(30.0), size, size)
    c2w = camera.look_at(np.array([0.0, -D, 0.0]), np.zeros(3))
    sphere = make_primitive("sphere", (r,), Material((0.8, 0.2, 0.2)), label=4)
    view = render_view([sphere], K, c2w, size, size, Lighting(), (1.0, 1.0, 1.0))
    assert view.depth[size // 2, size // 2] == pytest.approx(D - r, abs=1e-6)
    origins, dirs = camera.image_rays(K, c2w, size, size)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    miss_distance = np.linalg.norm(np.cross(unit, -origins), axis=1)  # distance of each ray's line from the centre
    np.testing.assert_array_equal(view.mask.ravel(), miss_distance < r)
    hit = view.depth.ravel() > 0
    p = origins[hit] + view.depth.ravel()[hit, None].astype(np.float64) * dirs[hit]
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), r, atol=2e-6)  # float32 depth, metres
    assert np.all(np.sum(p * dirs[hit], 1) < 0)  # the near side
    assert set(np.unique(view.labels)) == {-1, 4}
    np.testing.assert_array_equal(view.rgb[~view.mask], 1.0)


def test_plane_depth_matches_closed_form():
    """A tilted camera at height H over the plane z = 0: z-depth = H / (-(c2w[:3, :3] @ [x, y, 1])_z)."""
    H, size = 1.6, 33
    K = camera.intrinsics_from_fov(math.radians(60.0), size, size)
    c2w = camera.look_at(np.array([0.2, -0.3, H]), np.array([1.0, 2.0, 0.0]))
    floor = make_primitive("rect", (50.0, 50.0), Material((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "checker"), label=1, foreground=False)
    view = render_view([floor], K, c2w, size, size, Lighting(), (0.0, 0.0, 0.0))
    u, v = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    down = -(cam @ c2w[:3, :3].T)[..., 2]
    expected = np.where(down > 0, H / np.where(down > 0, down, 1.0), 0.0)
    expected = np.where(expected * np.linalg.norm(cam, axis=-1) < 50.0, expected, view.depth)  # far rows may miss
    np.testing.assert_allclose(view.depth, expected, rtol=1e-6)
    assert (view.depth > 0).mean() > 0.4 and not view.mask.any()


def _sdf(kind: str, params: tuple[float, ...], p: np.ndarray) -> np.ndarray:
    """Signed distance (n,) of local points (n, 3) to the solid primitives, written independently of shapes.py."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if kind == "sphere":
        return np.linalg.norm(p, axis=1) - params[0]
    if kind == "box":
        q = np.abs(p) - np.asarray(params)
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(1), 0.0)
    if kind == "cylinder":
        d = np.stack([np.hypot(x, y) - params[0], np.abs(z) - params[1]], 1)
        return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(1), 0.0)
    if kind == "torus":
        return np.hypot(np.hypot(x, y) - params[0], z) - params[1]
    r, h = params  # cone: outside the side or below the base (a bound, exact on the surface)
    side = (np.hypot(x, y) - r * (h - z) / h) * h / math.hypot(r, h)
    return np.maximum(np.maximum(side, -z), z - h)


@pytest.mark.parametrize(
    "kind,params",
    [("sphere", (0.4,)), ("box", (0.3, 0.2, 0.5)), ("cylinder", (0.25, 0.4)), ("cone", (0.35, 0.7)), ("torus", (0.4, 0.12))],
)
def test_primitive_hits_lie_on_the_surface_and_nothing_is_skipped(kind, params):
    rng = np.random.default_rng(0)
    rot = rotation_z(0.7) @ rotation_x(0.9)
    prim = make_primitive(kind, params, Material((1.0, 1.0, 1.0)), 1, (0.1, -0.2, 0.3), rot)
    origins = rng.normal(size=(3000, 3))
    origins = 2.5 * origins / np.linalg.norm(origins, axis=1, keepdims=True)
    dirs = (rng.uniform(-0.6, 0.6, size=(3000, 3)) + prim.translation) - origins  # aim near the object
    t, normals, local = intersect(prim, origins, dirs)
    hit = np.isfinite(t)
    assert 300 < hit.sum() < 2990  # both hits and misses are exercised
    np.testing.assert_allclose(_sdf(kind, params, local[hit]), 0.0, atol=1e-7)
    assert np.all(np.sum(normals[hit] * dirs[hit], 1) < 1e-9)  # rays enter through the front face
    np.testing.assert_allclose(np.linalg.norm(normals[hit], axis=1), 1.0, atol=1e-9)
    # march each ray up to its hit (misses: past the object) and check it never passes inside the solid
    end = np.where(hit, t, 2.0)
    steps = np.linspace(0.0, 1.0, 400)[:-1]
    o_local = (origins - prim.translation) @ rot
    d_local = dirs @ rot
    inside = [_sdf(kind, params, o_local + (s * end)[:, None] * d_local) < -1e-6 for s in steps]
    assert not np.any(inside)


def test_masks_labels_and_background_agree_with_depth(torus_scene, room_scene):
    torus_id = OBJECT_LABEL_NAMES.index("torus")
    for f in torus_scene.frames:
        rgb, depth, mask, labels = f.load_image(), f.load_depth(), f.load_mask(), f.load_labels()
        np.testing.assert_array_equal(labels == -1, depth == 0)
        np.testing.assert_array_equal(mask, labels == torus_id)
        np.testing.assert_array_equal(rgb[depth == 0], 1.0)  # white background where nothing is hit
        assert set(np.unique(labels)) <= {-1, 0, torus_id}
    assert torus_scene.background == "white" and torus_scene.meta["background_color"] == [1.0, 1.0, 1.0]
    furniture = ROOM_LABEL_NAMES.index("cabinet")
    seen = set()
    for f in room_scene.frames:
        depth, mask, labels = f.load_depth(), f.load_mask(), f.load_labels()
        assert np.all(depth > 0) and np.all(labels >= 0)
        np.testing.assert_array_equal(mask, labels >= furniture)
        seen |= set(np.unique(labels).tolist())
    assert {0, 1} <= seen and len(seen & set(range(furniture, len(ROOM_LABEL_NAMES)))) >= 1
    black = make_object_scene(1, 2, 16, shape="box", config=ObjectSceneConfig(background="black"))
    f = black.frames[0]
    np.testing.assert_array_equal(f.load_image()[f.load_depth() == 0], 0.0)


def test_every_shape_class_is_made_and_labelled():
    for i, shape in enumerate(SHAPE_CLASSES):
        scene = make_object_scene(i, n_views=3, size=24, shape=shape)
        assert scene.class_name == shape and scene.label_names == OBJECT_LABEL_NAMES
        ids = set(np.unique(np.concatenate([f.load_labels().ravel() for f in scene.frames])).tolist())
        assert 1 + i in ids and ids <= {-1, 0, 1 + i}
        assert np.mean([f.load_mask().mean() for f in scene.frames]) > 0.03
    planned = plan_scenes(SynthConfig("objects", Path("unused"), n_scenes=len(SHAPE_CLASSES)))
    assert [s.shape for s in planned] == list(SHAPE_CLASSES)
    assert len(SHAPE_CLASSES) >= 5 and make_object_scene(5, 1, 8).class_name in SHAPE_CLASSES


def test_scene_fields_and_normalisation(torus_scene, room_scene):
    for scene in (torus_scene, room_scene):
        lo, hi = (np.asarray(b) for b in scene.meta["bounds"])
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        assert np.all(np.abs(scene.world_to_grid(corners)) <= 1.0)
        for f in scene.frames:
            assert f.split == "train" and camera.is_valid_pose(f.c2w) and f.K[0, 0] > 0
            points, _ = camera.backproject(f.load_depth(), f.K, f.c2w)
            assert np.all(points >= lo - 1e-4) and np.all(points <= hi + 1e-4)
    assert room_scene.class_name == "room" and room_scene.background is None


def test_world_up_is_up_in_the_images(torus_scene):
    f = torus_scene.frames[0]
    uv, _ = camera.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]), f.K, f.c2w)
    assert uv[1, 1] < uv[0, 1]


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown shape 'blob'"):
        make_object_scene(0, 2, 16, shape="blob")
    with pytest.raises(ConfigError, match="background"):
        make_object_scene(0, 2, 16, config=ObjectSceneConfig(background="green"))
    with pytest.raises(ConfigError, match="n_views=0"):
        make_room_scene(0, n_views=0)
    with pytest.raises(ConfigError, match="kind"):
        plan_scenes(SynthConfig("castles", Path("x")))  # type: ignore[arg-type]


def test_synthesize_refuses_a_file_as_output(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="not a folder") as info:
        synthesize(SynthConfig("rooms", target, n_scenes=1, n_views=1, size=8))
    assert info.value.path == str(target) and target.read_text() == "x"


def test_write_scene_layout_and_reader_round_trip(tmp_path, torus_scene):
    folder = write_scene(torus_scene, tmp_path / "obj_torus")
    doc = json.loads((folder / "transforms.json").read_text())
    assert doc["camera_model"] == "OPENCV" and doc["w"] == doc["h"] == SIZE and doc["depth_unit_scale_factor"] == 1.0
    assert doc["fl_x"] == pytest.approx(torus_scene.frames[0].K[0, 0])
    block = doc["perfdata"]
    assert block["format_version"] == 1 and block["kind"] == "object" and block["class_name"] == "torus"
    assert block["label_names"] == list(OBJECT_LABEL_NAMES) and block["seed"] == 7 and block["background"] == "white"
    fr = doc["frames"][1]
    assert fr["file_path"] == "images/0001.png" and fr["depth_file_path"] == "depth/0001.npy"
    np.testing.assert_allclose(camera.opengl_to_opencv(np.array(fr["transform_matrix"])), torus_scene.frames[1].c2w)
    assert np.load(folder / fr["depth_file_path"]).dtype == np.float32
    loaded = get_reader("synthetic").load_scene(folder, "obj_torus")
    assert loaded.class_name == "torus" and loaded.label_names == OBJECT_LABEL_NAMES and loaded.background == "white"
    np.testing.assert_allclose(loaded.world_from_grid, torus_scene.world_from_grid, atol=1e-12)
    for a, b in zip(torus_scene.frames, loaded.frames, strict=True):
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.c2w, b.c2w)
        np.testing.assert_allclose(a.load_image(), b.load_image(), atol=0.5 / 255 + 1e-7)
        np.testing.assert_array_equal(a.load_depth(), b.load_depth())
        np.testing.assert_array_equal(a.load_mask(), b.load_mask())
        np.testing.assert_array_equal(a.load_labels(), b.load_labels())


def test_failed_write_leaves_nothing_behind(tmp_path, torus_scene):
    import dataclasses

    def broken() -> np.ndarray:
        raise OSError("disk full")

    frames = list(torus_scene.frames)
    frames[-1] = dataclasses.replace(frames[-1], depth=broken)
    with pytest.raises(OSError, match="disk full"):
        write_scene(dataclasses.replace(torus_scene, frames=tuple(frames)), tmp_path / "scene")
    assert list(tmp_path.iterdir()) == []


def test_textured_backdrop_surrounds_the_same_object_with_exact_depth_and_no_masks(tmp_path):
    plain = make_object_scene(11, n_views=4, size=SIZE, shape="cone")
    textured = make_object_scene(11, n_views=4, size=SIZE, shape="cone", config=ObjectSceneConfig(backdrop="textured"))
    assert textured.background is None and not textured.has_masks and textured.has_depth
    assert textured.meta["capture"] == "object" and textured.meta["backdrop"] == "textured"
    np.testing.assert_array_equal(textured.world_from_grid, plain.world_from_grid)  # the cube: object and stage
    surroundings = []
    for a, b in zip(plain.frames, textured.frames, strict=True):
        np.testing.assert_array_equal(a.c2w, b.c2w)
        mask, hit, depth = a.load_mask(), a.load_depth() > 0, b.load_depth()
        np.testing.assert_array_equal(b.load_image()[mask], a.load_image()[mask])  # same object, light, camera
        np.testing.assert_array_equal(depth[hit], a.load_depth()[hit])  # the ground plane continues
        assert (depth > 0).all() and (b.load_labels()[~hit] == 0).all()  # every ray hits the backdrop
        pts, flat = camera.backproject(np.where(hit, 0.0, depth), b.K, b.c2w)  # where the plain scene saw nothing
        r = np.linalg.norm(pts, axis=1)
        on_dome, on_ground = np.isclose(r, 5.0, atol=1e-6), np.isclose(pts[:, 2], 0.0, atol=1e-6) & (r <= 5 + 1e-6)
        assert np.all(on_dome | on_ground)
        surroundings.append(b.load_image().reshape(-1, 3)[flat])
    colours = np.concatenate(surroundings)
    assert len(colours) > 0.2 * 4 * SIZE * SIZE and colours.std(axis=0).min() > 0.04  # textured, not one colour
    folder = write_scene(textured, tmp_path / "obj_cone")
    assert not (folder / "masks").exists()
    doc = json.loads((folder / "transforms.json").read_text())
    assert all("mask_path" not in fr for fr in doc["frames"])
    assert doc["perfdata"]["backdrop"] == "textured" and doc["perfdata"]["background"] is None
    loaded = get_reader("synthetic").load_scene(folder, "obj_cone")
    assert not loaded.has_masks and loaded.background is None and loaded.meta["capture"] == "object"
    np.testing.assert_array_equal(loaded.frames[2].load_depth(), textured.frames[2].load_depth())


def test_backdrop_option_is_checked():
    with pytest.raises(ConfigError, match="unknown backdrop 'walls'"):
        make_object_scene(0, 1, 4, config=ObjectSceneConfig(backdrop="walls"))
    with pytest.raises(ConfigError, match="--backdrop textured is for object scenes"):
        plan_scenes(SynthConfig("rooms", Path("x"), backdrop="textured"))
