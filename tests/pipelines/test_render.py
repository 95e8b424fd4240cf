"""render: an analytically built grid (a labelled sphere on a slab) rendered from its training cameras and
compared with ray-traced truth; layout, rerun, shards, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from perfdata.pipelines.pack import PackConfig, pack_renders
from perfdata.pipelines.poses import Camera
from perfdata.pipelines.render import RenderConfig, render_store
from perfdata.pipelines.render_source import MemorySource

from perfdata import camera, images
from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.records.fit import FitRecord, write_fit
from perfdata.scene import similarity
from perfdata.shards import verify_shards

WFG = similarity(2.0, np.array([1.0, 2.0, 3.0]))  # cube half-size 2 m, centred at (1, 2, 3)
SPHERE_C, SPHERE_R = np.array([0.0, 0.0, 0.1]), 0.45
SLAB_LO, SLAB_HI = np.array([-0.85, -0.85, -0.7]), np.array([0.85, 0.85, -0.5])
COLOURS = {"sphere": np.array([0.9, 0.2, 0.1]), "slab": np.array([0.2, 0.5, 0.8]), "bg": np.ones(3)}
LABEL_NAMES = ["background", "sphere"]
Y0 = 0.28209479177387814


def make_grid(reso: int = 64) -> SparseGrid:
    """Dense voxels (density 400 per cube unit) inside the primitives, plus a 1.5-voxel shell of empty voxels
    carrying the nearest primitive's colour and label, as a fit would leave them."""
    idx = np.stack(np.meshgrid(*[np.arange(reso)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ctr = (2 * idx + 1) / reso - 1
    d_sph = np.linalg.norm(ctr - SPHERE_C, axis=1) - SPHERE_R
    d_slab = np.linalg.norm(np.maximum(np.maximum(SLAB_LO - ctr, ctr - SLAB_HI), 0), axis=1)
    keep = np.minimum(d_sph, d_slab) <= 1.5 * 2 / reso
    sphere = (d_sph <= d_slab)[keep]
    sh = np.zeros((keep.sum(), 27), np.float32)
    colour = np.where(sphere[:, None], COLOURS["sphere"], COLOURS["slab"])
    sh[:, [0, 9, 18]] = (colour - 0.5) / Y0
    solid = ((d_sph <= 0) | np.all((ctr >= SLAB_LO) & (ctr <= SLAB_HI), axis=1))[keep]
    return SparseGrid(
        coords=idx[keep].astype(np.int32), density=np.where(solid, 400.0, 0.0).astype(np.float32), sh=sh,
        reso=(reso,) * 3, world_from_grid=WFG, labels=sphere.astype(np.int16),
        background=COLOURS["bg"].astype(np.float32),
    )


def training_cameras(n: int = 48, w: int = 40, h: int = 32) -> list[Camera]:
    K = camera.intrinsics_from_fov(0.75, w, h)
    centre = WFG[:3, 3]
    cams = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = centre + 6.0 * np.array([math.cos(a) * 0.8, math.sin(a) * 0.8, 0.6])
        cams.append(Camera(K, camera.look_at(eye, centre), w, h))
    return cams


def trace_truth(K: np.ndarray, c2w: np.ndarray, w: int, h: int, with_sphere: bool = True) -> dict[str, np.ndarray]:
    """Exact rgb, z-depth, label (-1 = nothing) of the sphere + slab, and the sphere mask."""
    o, d = camera.image_rays(K, c2w, w, h)
    og, dg = (o - WFG[:3, 3]) / 2.0, d / 2.0  # grid frame; ray parameter t unchanged
    oc = og - SPHERE_C
    a, b, c = (dg * dg).sum(1), 2 * (oc * dg).sum(1), (oc * oc).sum(1) - SPHERE_R**2
    disc = b * b - 4 * a * c
    t_sph = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t_sph = t_sph if with_sphere else np.full_like(t_sph, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (SLAB_LO - og) / dg, (SLAB_HI - og) / dg
    tn, tf = np.minimum(t0, t1).max(1), np.maximum(t0, t1).min(1)
    t_slab = np.where((tf > tn) & (tn > 0), tn, np.inf)
    t = np.minimum(t_sph, t_slab)
    hit_sph, hit_slab = (t_sph <= t_slab) & np.isfinite(t_sph), (t_slab < t_sph) & np.isfinite(t_slab)
    rgb = np.where(hit_sph[:, None], COLOURS["sphere"], np.where(hit_slab[:, None], COLOURS["slab"], COLOURS["bg"]))
    label = np.where(hit_sph, 1, np.where(hit_slab, 0, -1))
    return {"rgb": rgb.reshape(h, w, 3), "depth": np.where(np.isfinite(t), t, 0).reshape(h, w),
            "label": label.reshape(h, w), "mask": hit_sph.reshape(h, w)}


def make_source(n_scenes: int = 1, psnrs: tuple[float, ...] = (30.0,)) -> MemorySource:
    grid = make_grid(32)
    cams = [c.to_json("x") for c in training_cameras()]
    attrs = {f"s{i}": {"class_name": ["ball", "orb"][i % 2], "metrics": {"psnr": psnrs[i % len(psnrs)]},
                       "extra": {"cameras": cams, "label_names": LABEL_NAMES}} for i in range(n_scenes)}
    return MemorySource({sid: grid for sid in attrs}, attrs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


def miou(pred: np.ndarray, truth: np.ndarray, n: int) -> float:
    ious = [((pred == c) & (truth == c)).sum() / max(((pred == c) | (truth == c)).sum(), 1) for c in range(n)]
    return float(np.mean(ious))


def test_training_views_match_truth(tmp_path: Path) -> None:
    fits = tmp_path / "fits"
    make_grid().save(fits / "s0" / "grid.npz")
    cams = [c.to_json("x") for c in training_cameras()]
    write_fit(fits / "s0", FitRecord(scene_id="s0", method="plenoxel", class_name="ball", metrics={"psnr": 31.0},
                                      cameras=tuple(cams), label_names=tuple(LABEL_NAMES)))
    (fits / "s0" / "DONE").write_text("")
    cfg = RenderConfig(poses="train", n_views=4, size=40, device="cpu", depth_format="both")
    res = render_store(fits, tmp_path / "r", cfg)
    assert res.rendered == ("s0",) and res.n_views == 4
    d = tmp_path / "r" / "s0"
    meta = json.loads((d / "cameras.json").read_text())
    assert meta["class_name"] == "ball" and meta["psnr"] == 31.0 and np.allclose(meta["world_from_grid"], WFG)
    assert meta["members"] == ["rgb.png", "depth.png", "depth.npy", "mask.png", "bg.png", "label.png"]
    scores = []
    for v in meta["views"]:
        K, c2w, w, h = np.array(v["K"]), np.array(v["c2w"]), v["width"], v["height"]
        truth, bg_truth = trace_truth(K, c2w, w, h), trace_truth(K, c2w, w, h, with_sphere=False)
        rgb = images.read_rgba(d / f"{v['name']}.rgb.png")[0]
        depth = images.read_depth(d / f"{v['name']}.depth.npy")
        depth_png = images.read_depth(d / f"{v['name']}.depth.png")
        both = (depth > 0) & (truth["depth"] > 0)
        scores.append((
            psnr(rgb, truth["rgb"]),
            float(np.mean(np.abs(depth[both] - truth["depth"][both]) / truth["depth"][both])),
            miou(images.read_labels(d / f"{v['name']}.label.png"), truth["label"], 2),
            float(np.mean(images.read_mask(d / f"{v['name']}.mask.png") == truth["mask"])),
            psnr(images.read_rgba(d / f"{v['name']}.bg.png")[0], bg_truth["rgb"]),
        ))
        assert np.abs(depth_png - depth).max() <= 0.0005 + 1e-6  # millimetre rounding
        assert np.mean((depth > 0) == (truth["depth"] > 0)) > 0.95
    p, rel, iou, mask_acc, bg_p = np.mean(scores, axis=0)
    print(f"psnr {p:.2f} depth abs-rel {rel:.4f} miou {iou:.3f} mask acc {mask_acc:.3f} bg psnr {bg_p:.2f}")
    assert p > 19.0 and bg_p > 19.0
    assert rel < 0.02
    assert iou > 0.85 and mask_acc > 0.95
    assert (d / "DONE").is_file() and images.read_array(d / "contact.png").shape[1] > 5 * 40


def test_rerun_keeps_done_redoes_others_and_shards_match_pack(tmp_path: Path) -> None:
    source = make_source(n_scenes=3)
    cfg = RenderConfig(n_views=3, size=16, device="cpu", seed=4)
    out = tmp_path / "r"
    first = render_store(source, out, cfg)
    assert first.rendered == ("s0", "s1", "s2") and first.n_views == 9
    meta = json.loads((out / "s1" / "cameras.json").read_text())
    assert meta["poses"] == "interpolate" and len(meta["views"]) == 3
    for v in meta["views"]:
        assert camera.is_valid_pose(np.array(v["c2w"])) and max(v["width"], v["height"]) == 16
    s0_mtime = (out / "s0" / "00001.rgb.png").stat().st_mtime_ns
    s1_bytes = {p.name: p.read_bytes() for p in (out / "s1").iterdir() if p.name != "DONE"}
    (out / "s1" / "DONE").unlink()  # as if a run died there
    (out / ".s1.killed.tmp").mkdir()  # the temporary folder of a killed run
    second = render_store(source, out, cfg)
    assert second.kept == ("s0", "s2") and second.rendered == ("s1",)
    assert not (out / ".s1.killed.tmp").exists()
    assert (out / "s0" / "00001.rgb.png").stat().st_mtime_ns == s0_mtime  # kept, not rewritten
    assert {p.name: p.read_bytes() for p in (out / "s1").iterdir() if p.name != "DONE"} == s1_bytes  # same bytes
    pack_cfg = PackConfig(maxcount=4, val_fraction=0.34, seed=1)
    pack_renders(out, tmp_path / "packed", pack_cfg)
    direct = render_store(source, tmp_path / "direct", RenderConfig(
        n_views=3, size=16, device="cpu", seed=4, shards=True, pack=pack_cfg))
    assert direct.n_views == 9 and direct.index_path is not None
    packed, straight = verify_shards(tmp_path / "packed"), verify_shards(tmp_path / "direct")
    assert packed["shards"] == straight["shards"]  # same names, counts, bytes and sha256
    assert (tmp_path / "direct" / "contact" / "s0.png").is_file()


def write_store(url: Path, source: MemorySource) -> None:
    from perfdata.store.location import Location
    from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene

    loc = Location(str(url), {})
    for sid in source.scene_ids:
        attrs = dict(source.attrs[sid])
        write_scene(loc, sid, grid_arrays(source.grids[sid], WriteConfig(), **attrs), WriteConfig())
    refresh_root(loc, "test")


def test_zarr_store_and_min_psnr(tmp_path: Path) -> None:
    write_store(tmp_path / "ds.zarr", make_source(n_scenes=3, psnrs=(30.0, 18.0, 25.0)))
    cfg = RenderConfig(n_views=1, size=16, device="cpu", min_psnr=24.0)
    res = render_store(str(tmp_path / "ds.zarr"), tmp_path / "r", cfg)
    assert res.rendered == ("s0", "s2") and not res.failed
    assert [s for s, _ in res.skipped] == ["s1"] and "18.00" in res.skipped[0][1]
    assert not (tmp_path / "r" / "s1").exists()
    meta = json.loads((tmp_path / "r" / "s2" / "cameras.json").read_text())
    assert (meta["class_name"], meta["class_id"], meta["poses"]) == ("ball", 0, "interpolate")
    assert images.read_labels(tmp_path / "r" / "s2" / "00000.label.png").max() == 1


def test_bad_input(tmp_path: Path) -> None:
    source = make_source()
    with pytest.raises(ConfigError, match="--views"):
        render_store(source, tmp_path / "r", RenderConfig(n_views=0))
    with pytest.raises(ConfigError, match="memory budget"):
        render_store(source, tmp_path / "r", RenderConfig(size=100_000))
    with pytest.raises(InputError, match="nope"):
        render_store(source, tmp_path / "r", RenderConfig(scenes=("nope",)))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="junk"):
        render_store(tmp_path / "junk", tmp_path / "r", RenderConfig())
    with pytest.raises(InputError, match="not found"):
        render_store(tmp_path / "missing.zarr", tmp_path / "r", RenderConfig())
    assert not (tmp_path / "r").exists()


def test_cli_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.cli import main

    write_store(tmp_path / "ds.zarr", make_source(n_scenes=1))
    main(["render", "--store", str(tmp_path / "ds.zarr"), "--out", str(tmp_path / "r"), "--views", "2",
          "--size", "12", "--poses", "orbit", "--what", "rgb,depth", "--device", "cpu"])
    assert "2 views" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r" / "s0").iterdir()) == [
        "00000.depth.png", "00000.rgb.png", "00001.depth.png", "00001.rgb.png", "DONE", "cameras.json",
        "contact.png"]
    with pytest.raises(SystemExit) as exc:
        main(["render", "--store", str(tmp_path / "ds.zarr"), "--out", str(tmp_path / "r"), "--views", "0"])
    assert exc.value.code == 2 and "--views must be at least 1" in capsys.readouterr().err


def test_failed_scene_does_not_stop_others(tmp_path: Path) -> None:
    class Broken(MemorySource):
        def read_scene(self, scene_id: str) -> SparseGrid:
            if scene_id == "s1":
                raise InputError(f"store/{scene_id}", "array 'sh' is missing")
            return super().read_scene(scene_id)

    good = make_source(n_scenes=3)
    res = render_store(Broken(good.grids, good.attrs), tmp_path / "r",
                       RenderConfig(n_views=1, size=8, poses="orbit", device="cpu"))
    assert res.rendered == ("s0", "s2") and res.failed == (("s1", "store/s1: array 'sh' is missing"),)
    assert sorted(p.name for p in (tmp_path / "r" / "s1").iterdir()) == ["FAILED.json"]  # no partial views
    assert not list((tmp_path / "r").glob(".s1*"))
    failure = json.loads((tmp_path / "r" / "s1" / "FAILED.json").read_text())
    assert failure["error"] == "store/s1: array 'sh' is missing" and failure["attempts"] == 1
