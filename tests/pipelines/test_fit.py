import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from perfdata.pipelines.fit import fit_scene, fit_scenes
from perfdata.pipelines.fitconfig import FitConfig

from perfdata import camera
from perfdata.errors import ConfigError, FitError
from perfdata.grid import SparseGrid
from perfdata.records.fit import read_fit
from perfdata.runner import RunConfig
from perfdata.scene import Frame, Scene, similarity

RADIUS = 0.5


def _sphere_view(K: np.ndarray, c2w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Analytic render of a sphere at the origin whose colour varies with the normal, on white; z-depth (0 = miss)."""
    o, d = camera.image_rays(K, c2w, size, size)
    a = (d * d).sum(-1)
    b = 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - RADIUS**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
    n = (o + t[:, None] * d) / RADIUS
    rgb = np.where(hit[:, None], 0.5 + 0.4 * n[:, [0, 1, 2]] * np.array([1.0, -1.0, 0.6]), 1.0)
    return rgb.reshape(size, size, 3).astype(np.float32), t.reshape(size, size).astype(np.float32)


def sphere_scene(n_views: int = 24, size: int = 32, scene_id: str = "sphere") -> Scene:
    K = camera.intrinsics_from_fov(0.7, size, size)
    frames = []
    for i in range(n_views):
        theta = 2 * np.pi * i / n_views
        eye = 2.2 * np.array([np.cos(theta), np.sin(theta), 0.5 + 0.3 * np.sin(3 * theta)])
        c2w = camera.look_at(eye, np.zeros(3))
        rgb, depth = _sphere_view(K, c2w, size)
        frames.append(Frame(f"v{i}", K, c2w, size, size, image=rgb, depth=depth))
    return Scene(scene_id, tuple(frames), similarity(0.75, np.zeros(3)), background="white")


def colour_only(scene: Scene) -> Scene:
    """`scene` without its depth maps."""
    return dataclasses.replace(scene, frames=tuple(dataclasses.replace(f, depth=None) for f in scene.frames))


FAST = dict(resolution=(32,), steps=150, batch_rays=2048, device="cpu", holdout_every=6, tv_fraction=0.05)


def test_tiny_sphere_fits() -> None:
    cfg = FitConfig(**FAST)  # type: ignore[arg-type]
    seen = []
    result = fit_scene(sphere_scene(), cfg, callback=seen.append)
    assert result.metrics["psnr"] > 24.0, result.metrics
    assert result.metrics["ssim"] > 0.85
    assert result.metrics["depth_abs_rel"] < 0.05
    assert result.steps == 150 and seen and seen[-1].step == 150
    assert isinstance(result.grid, SparseGrid) and result.grid.reso == (32, 32, 32)
    assert np.allclose(result.grid.background, 1.0)


def test_rgb_only_object_on_its_ground_does_not_fog() -> None:
    """A synthetic object on its ground, white sky, colour only (no depth to start the grid from): RMSProp's
    first density steps without bias correction (4.5 lr_density) filled the cube with fog the fit never
    cleared, a mean-colour image (~10 dB); the automatic FitConfig.density_bias_correction turns the correction
    on here (cameras within 2.5 half-sizes of the cube's centre, a grid that starts full) and it fits."""
    from perfdata.synthetic import make_object_scene

    scene = colour_only(make_object_scene(seed=5000, n_views=16, size=32))
    cfg = FitConfig(resolution=(32,), steps=80, batch_rays=1024, device="cpu")
    fogged = fit_scene(scene, dataclasses.replace(cfg, density_bias_correction=False)).metrics["psnr"]
    result = fit_scene(scene, cfg)
    assert result.config is not None and result.config.density_bias_correction is True
    assert fogged < 13.0 and result.metrics["psnr"] > 17.0, (fogged, result.metrics["psnr"])


def test_auto_density_bias_correction_only_where_the_grid_starts_full_or_from_a_model_near_the_cameras() -> None:
    from perfdata.pipelines.capture import auto_density_bias_correction
    from perfdata.pipelines.plenoxel_fit import prepare_scene

    from perfdata.synthetic import make_object_scene

    cfg = FitConfig()
    near = make_object_scene(seed=5000, n_views=8, size=16)  # cameras ~1.6 half-sizes from the centre
    rgb = colour_only(near)
    assert auto_density_bias_correction(prepare_scene(rgb, cfg), cfg)
    assert not auto_density_bias_correction(prepare_scene(near, cfg), cfg)  # depth starts the grid
    no_depth_init = dataclasses.replace(cfg, init_from_depth=False)
    assert auto_density_bias_correction(prepare_scene(near, no_depth_init), no_depth_init)
    far = colour_only(sphere_scene())  # cameras ~2.5 units out, cube half-size 0.75: over 3 half-sizes
    assert not auto_density_bias_correction(prepare_scene(far, cfg), cfg)
    warm = dataclasses.replace(cfg, init_from="run/")  # a model's prediction, not the depth, starts the grid
    assert auto_density_bias_correction(prepare_scene(rgb, warm), warm)
    assert auto_density_bias_correction(prepare_scene(near, warm), warm)
    assert not auto_density_bias_correction(prepare_scene(far, warm), warm)


def test_coarse_to_fine_and_time_budget() -> None:
    cfg = FitConfig(**{**FAST, "resolution": (16, 32), "upsample_at": (0.3,), "steps": 10_000, "max_seconds": 4.0,
                       "eval_at_seconds": (1.0,), "depth_weight": 0.0})  # type: ignore[arg-type]
    result = fit_scene(sphere_scene(), cfg)
    assert result.grid.reso == (32, 32, 32) and result.steps < 10_000
    assert 3.5 < result.train_seconds < 12.0  # one step past the budget at most, even on a busy machine
    assert len(result.curve) == 1 and result.curve[0][0] == 1.0
    assert result.metrics["psnr"] > 16.0
    # where the budget went, per stage: the steps and seconds add up, the upsample came at 30% of the time
    stats = result.stats
    assert (stats["stage0_resolution"], stats["stage1_resolution"]) == (16, 32) and "stage2_steps" not in stats
    assert stats["stage0_steps"] + stats["stage1_steps"] == result.steps and stats["stage0_steps"] > 0
    assert stats["stage0_seconds"] + stats["stage1_seconds"] == pytest.approx(result.train_seconds, abs=1e-3)
    assert 0.25 < stats["stage0_seconds"] / result.train_seconds < 0.45
    assert 0 < stats["stage0_voxels"] <= 16**3 and stats["stage1_voxels"] == result.grid.n_voxels
    for k in (0, 1):
        assert stats[f"stage{k}_colour_samples_per_ray"] <= stats[f"stage{k}_samples_per_ray"]
        assert stats[f"stage{k}_rays_per_second"] == pytest.approx(
            stats[f"stage{k}_steps"] * cfg.batch_rays / stats[f"stage{k}_seconds"])


def test_fit_scenes_writes_skips_and_records_failures(tmp_path: Path) -> None:
    good = sphere_scene(scene_id="good")
    few = Scene("few", good.frames[:2], good.world_from_grid, background="white")
    nan_frames = tuple(
        Frame(f.name, f.K, f.c2w, f.width, f.height, image=np.full((32, 32, 3), np.nan, np.float32)) for f in good.frames
    )
    nan = Scene("nan", nan_frames, good.world_from_grid, background="white")
    cfg = FitConfig(**{**FAST, "steps": 20})  # type: ignore[arg-type]
    outcomes = fit_scenes("synthetic", tmp_path, None, tmp_path / "fits", cfg, scenes=[few, nan, good])
    assert [o.status for o in outcomes] == ["failed", "failed", "done"]
    assert "training frames" in (outcomes[0].error or "")
    assert "non-finite" in (outcomes[1].error or "")
    for name in ("few", "nan"):  # the one failure record: the runner's FAILED.json, nothing else
        assert sorted(p.name for p in (tmp_path / "fits" / name).iterdir()) == ["FAILED.json"]
        rec = json.loads((tmp_path / "fits" / name / "FAILED.json").read_text())
        assert rec["state"] == "failed" and rec["attempts"] == 1 and rec["stage"] == "fit"
    rec = read_fit(tmp_path / "fits" / "good")
    assert rec.method == "plenoxel" and rec.seed == 0 and rec.format_version == 1
    assert rec.n_voxels > 0 and "psnr" in rec.metrics and "depth_abs_rel" in rec.metrics
    assert {"torch", "perfdata"} <= set(rec.versions) and rec.device == "cpu"
    assert SparseGrid.load(tmp_path / "fits" / "good" / "grid.npz").n_voxels == rec.n_voxels
    done = json.loads((tmp_path / "fits" / "good" / "DONE").read_text())
    assert done["facts"]["metrics"]["psnr"] == rec.metrics["psnr"] and done["device"] == "cpu"
    assert not [p for p in (tmp_path / "fits").iterdir() if p.name.startswith(".") and p.name != ".perfdata"]
    again = fit_scenes("synthetic", tmp_path, None, tmp_path / "fits", cfg, scenes=[few, good])
    assert [o.status for o in again] == ["held", "skipped"]  # a failure is rerun only with --retry-failed
    assert again[1].metrics["psnr"] == rec.metrics["psnr"]
    retried = fit_scenes("synthetic", tmp_path, None, tmp_path / "fits", cfg, RunConfig(retry_failed=True),
                         scenes=[few, good])
    assert [o.status for o in retried] == ["failed", "skipped"] and retried[0].attempts == 2


def test_black_images_and_unknown_method() -> None:
    good = sphere_scene(n_views=8, size=8)
    black = Scene("black", tuple(
        Frame(f.name, f.K, f.c2w, 8, 8, image=np.zeros((8, 8, 3), np.float32)) for f in good.frames
    ), good.world_from_grid)
    with pytest.raises(FitError, match="black"):
        fit_scene(black, FitConfig(**{**FAST, "steps": 2}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not implemented"):
        fit_scene(good, FitConfig(method="generalizable"))
    empty = FitConfig(**{**FAST, "steps": 4, "resolution": (8, 16), "upsample_at": (0.5,),  # type: ignore[arg-type]
                         "density_init": 1e-6, "lr_density": 1e-9, "lr_density_final": 1e-9,
                         "init_from_depth": False})
    with pytest.raises(FitError, match="sphere: no voxel is opaque enough .* upsample to 16"):
        fit_scene(good, empty)
    with pytest.raises(ConfigError, match="unknown FitConfig field"):
        FitConfig.from_dict({"lr": 1.0})


def test_cli_fit_config_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from perfdata.cli import cli
    from perfdata.synthetic import make_object_scene, write_scene

    write_scene(make_object_scene(seed=0, n_views=10, size=16, shape="sphere"), tmp_path / "data" / "sphere")
    (tmp_path / "cfg.json").write_text(json.dumps({"batch_rays": 512, "tv_fraction": 0.05}))
    args = ["fit", "--reader", "synthetic", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "fits"),
            "--steps", "5", "--resolution", "16", "--device", "cpu", "--config", str(tmp_path / "cfg.json"),
            "--holdout-every", "5"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    rec = read_fit(tmp_path / "fits" / "sphere")
    assert rec.config["batch_rays"] == 512 and rec.steps == 5 and rec.resolution == (16, 16, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_sphere_fits_on_cuda() -> None:
    result = fit_scene(sphere_scene(), FitConfig(**{**FAST, "device": "cuda"}))  # type: ignore[arg-type]
    assert result.device.startswith("cuda") and result.metrics["psnr"] > 24.0


def _write_synthetic_root(root: Path, n: int) -> list[str]:
    """n object scenes of 8 views at 16 px; returns their class names."""
    from perfdata.synthetic import make_object_scene, write_scene

    classes = []
    for i in range(n):
        scene = make_object_scene(i, 8, 16, scene_id=f"obj{i}")
        write_scene(scene, root / scene.scene_id)
        classes.append(scene.class_name)
    return classes


def test_fit_scenes_on_a_dask_cluster_with_shards_and_a_broken_scene(tmp_path: Path) -> None:
    """A real LocalCluster fits the scenes of one shard; a scene whose capture is broken fails alone; fit.json
    records what the render stage needs (class, training cameras); the plan lists every scene planned."""
    from perfdata.executor import ExecutorConfig
    from perfdata.status import output_status

    classes = _write_synthetic_root(tmp_path / "data", 3)
    (tmp_path / "data" / "obj2" / "transforms.json").write_text("{ not json")
    cfg = FitConfig(resolution=(16,), steps=5, batch_rays=256, device="cpu", holdout_every=4)
    out = tmp_path / "fits"
    # shard 1/2 of [obj0, obj1, obj2] is [obj1]
    first = fit_scenes("synthetic", tmp_path / "data", None, out, cfg, RunConfig(shard=(1, 2)))
    assert [o.item for o in first] == ["obj1"]
    outcomes = fit_scenes("synthetic", tmp_path / "data", None, out, cfg, RunConfig(ExecutorConfig("dask", 2)))
    assert [(o.item, o.status) for o in outcomes] == [("obj0", "done"), ("obj1", "skipped"), ("obj2", "failed")]
    assert "transforms.json" in (outcomes[2].error or "")
    record = read_fit(out / "obj0")
    assert record.class_name == classes[0]
    assert len(record.cameras) == 6 and np.asarray(record.cameras[0]["c2w"]).shape == (4, 4)  # 8 views, 1/4 held out
    (stage,) = output_status(out)
    assert {r.item: r.state for r in stage.records} == {"obj0": "done", "obj1": "done", "obj2": "failed"}
    assert {r.item: r.device for r in stage.records if r.state == "done"} == {"obj0": "cpu", "obj1": "cpu"}
