"""A forward-facing capture fitted in NDC, on real fern: auto picks ndc, the grid lies in the reference camera's
NDC box and fits as well as one learned colour in a bounded cube on the same steps, the NDC space survives
grid.npz and the store, the exported field renders the held-out views as the fit did, and the CLI path
fit -> export -> render gives depth in the scene's units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from perfdata.models import plenoxel
from perfdata.pipelines.fit import fit_scene
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.grid import SparseGrid
from perfdata.readers import llff
from perfdata.store import open_store
from perfdata.store.location import Location
from perfdata.store.validate import validate_store
from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene

SMALL = dict(resolution=(64,), steps=80, batch_rays=2048, device="cpu", downscale=16.0, step_size=1.0)


@pytest.fixture(scope="module")
def fern_fits(shared_data) -> dict:
    scene = llff.load_scene(shared_data / "fern", "fern")
    return {"scene": scene, "ndc": fit_scene(scene, FitConfig(**SMALL)),
            # the cube with NDC's (automatic) optimiser: its cameras are near enough to turn the density
            # correction on, which alone moves this short fit by ~0.6 dB (README "Density's first steps")
            "learned": fit_scene(scene, FitConfig(background="learned", density_bias_correction=False, **SMALL))}


def test_auto_fits_fern_in_ndc(fern_fits: dict) -> None:
    ndc, learned = fern_fits["ndc"], fern_fits["learned"]
    assert ndc.config.background == "ndc" and ndc.grid.ndc is not None
    # the NDC box reaches past the reference camera's view by the automatic margin, which fit.json records
    from perfdata.pipelines.capture import auto_ndc_margin, ndc_space

    margin = auto_ndc_margin(fern_fits["scene"].with_holdout(8))
    assert ndc.config.ndc_margin == margin > 0.1
    assert ndc.config.density_bias_correction is False  # automatic: never for NDC (README "Density's first steps")
    assert np.allclose(ndc.grid.ndc, ndc_space(fern_fits["scene"].with_holdout(8), margin).to_array())
    assert ndc.grid.reso == (64, 48, 32)  # x: the image width, y: its aspect ratio, depth: ndc_depth_ratio
    assert np.allclose(ndc.grid.world_from_grid, np.eye(4))
    # a short coarse fit: NDC is as good as a bounded cube (its gain shows at 300 s: benchmarks/real.py)
    assert ndc.metrics["psnr"] > 18.0 and ndc.metrics["psnr"] > learned.metrics["psnr"] - 1.0, (ndc.metrics,
                                                                                               learned.metrics)


def test_the_ndc_space_survives_grid_npz_and_the_store(fern_fits: dict, tmp_path: Path) -> None:
    grid = fern_fits["ndc"].grid
    grid.save(tmp_path / "grid.npz")
    assert np.array_equal(SparseGrid.load(tmp_path / "grid.npz").ndc, grid.ndc)
    loc = Location(str(tmp_path / "s.zarr"))
    write_scene(loc, "fern", grid_arrays(grid, WriteConfig()), WriteConfig())
    refresh_root(loc)
    assert validate_store(str(tmp_path / "s.zarr")).ok
    back = open_store(str(tmp_path / "s.zarr")).read_scene("fern")
    assert np.allclose(back.ndc, grid.ndc)
    # voxel centres map back into the world in front of the cameras, between the capture's bounds
    near, far = fern_fits["scene"].meta["bounds"]
    reference = np.asarray(fern_fits["scene"].meta["reference_c2w"])
    z = (back.world_centers() - reference[:3, 3]) @ reference[:3, 2]
    assert z.min() > 0.7 * near and np.median(z) < far
    scene = fern_fits["scene"].with_holdout(8)
    f = scene.heldout_frames[0].downscaled(16.0)
    a = plenoxel.render_camera(plenoxel.PlenoxelGrid.from_sparse(grid), f.K, f.c2w, f.width, f.height)
    b = plenoxel.render_camera(plenoxel.PlenoxelGrid.from_sparse(back), f.K, f.c2w, f.width, f.height)
    assert float((a["rgb"] - b["rgb"]).abs().max()) < 0.06  # SH bytes: quantisation only
    depth = a["depth"] / a["opacity"].clamp_min(1e-6)
    assert float(depth.median()) == pytest.approx(float(np.median(z)), rel=0.5)  # world z-depth, not NDC


def test_cli_fit_export_render_on_fern(shared_data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's path: `fit` picks ndc and records it, `export` keeps the NDC space, `render` interpolates
    between fern's cameras (distances measured from the near plane, not in NDC units) and draws depth in metres."""
    from perfdata.cli import main

    fits, store, renders = tmp_path / "fits", tmp_path / "s.zarr", tmp_path / "renders"
    for args in (["fit", "--reader", "llff", "--data", str(shared_data / "fern"), "--out", str(fits),
                  "--resolution", "32", "--steps", "20", "--downscale", "16"],
                 ["export", "--fits", str(fits), "--out", str(store)],
                 ["render", "--store", str(store), "--out", str(renders), "--views", "2", "--size", "48",
                  "--depth-format", "npy"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
            raise SystemExit(0)  # main returns normally on success
        assert not exc.value.code, capsys.readouterr().err
    record = json.loads((fits / "fern" / "fit.json").read_text())
    assert record["config"]["background"] == "ndc"
    assert open_store(str(store)).read_scene("fern").ndc is not None
    cams = json.loads(next(renders.rglob("cameras.json")).read_text())
    near, far = llff.load_scene(shared_data / "fern", "fern").meta["bounds"]
    depths = [np.load(p) for p in sorted(renders.rglob("*.depth.npy"))]
    assert len(cams) >= 2 and len(depths) == 2
    seen = np.concatenate([d[d > 0] for d in depths])
    assert seen.size > 0.5 * sum(d.size for d in depths)  # fern fills the frame
    assert 0.7 * near < float(np.median(seen)) < far  # metres (COLMAP units) of the scene, not NDC's [0, 1)


def test_ndc_schedule_fills_only_what_the_user_left_unset() -> None:
    from perfdata.pipelines.fit import ndc_schedule

    auto = ndc_schedule(FitConfig(resolution=(256,)))
    assert auto.resolution == (64, 128, 256) and auto.upsample_at == (0.1, 0.45)
    assert auto.step_size == 2.0 and (auto.lr_sh, auto.lr_sh_final) == (3e-2, 3e-3) and auto.distortion == 3e-3
    mine = ndc_schedule(FitConfig(resolution=(256,), step_size=0.75, lr_sh=5e-3, upsample_at=(0.3, 0.5),
                                  distortion=1e-2))
    assert mine.step_size == 0.75 and (mine.lr_sh, mine.lr_sh_final) == (5e-3, 1e-3) and mine.upsample_at == (0.3, 0.5)
    assert mine.distortion == 1e-2
