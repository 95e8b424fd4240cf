"""The export stage: fit folders -> zarr store (parallel, idempotent), PLY and HDF5, via the CLI too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from perfdata.pipelines.export import ExportConfig, export_fits
from plyfile import PlyData

from perfdata.cli import main
from perfdata.records.fit import FitRecord, write_fit
from perfdata.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perfdata" / "store"))
from store_grids import shell_grid  # noqa: E402


@pytest.fixture
def fits(tmp_path):
    root = tmp_path / "fits"
    for i, (sid, cls) in enumerate([("chair_1", "chair"), ("cup_2", "cup"), ("cup_3", "cup")]):
        folder = root / sid
        folder.mkdir(parents=True)
        shell_grid(24 + 4 * i, seed=i, labels=(i == 0)).save(folder / "grid.npz")
        write_fit(folder, FitRecord(scene_id=sid, method="plenoxel", class_name=cls, source=f"synthetic:{sid}",
                                    metrics={"psnr": 30.0 + i, "ssim": 0.9}))
        if sid == "chair_1":
            cams = [{"K": np.eye(3).tolist(), "c2w": np.eye(4).tolist(), "width": 8, "height": 6}]
            (folder / "cameras.json").write_text(json.dumps(cams))
        if sid != "cup_3":
            (folder / "DONE").write_text("done\n")
    return root


def test_export_is_parallel_idempotent_and_skips_unfinished(fits, tmp_path):
    out = str(tmp_path / "d.zarr")
    res = export_fits(fits, out, ExportConfig(dataset="toy"))
    assert [(s.scene_id, s.status) for s in res.scenes] == [
        ("cup_3", "not-done"), ("chair_1", "written"), ("cup_2", "written")]
    assert res.root.scenes == ("chair_1", "cup_2") and res.root.classes == ("chair", "cup")
    store = open_store(out)
    grid = store.read_scene("chair_1")
    ref = shell_grid(24, seed=0, labels=True).sorted()
    np.testing.assert_array_equal(grid.coords, ref.coords)
    np.testing.assert_array_equal(grid.labels, ref.labels)
    assert store.scene_attrs("cup_2").metrics == {"psnr": 31.0, "ssim": 0.9}
    assert store.scene_attrs("chair_1").extra["cameras"][0]["width"] == 8
    mtime = (tmp_path / "d.zarr" / "scenes" / "cup_2" / "zarr.json").stat().st_mtime_ns
    again = export_fits(fits, out, ExportConfig())
    assert again.count("skipped") == 2 and again.count("written") == 0
    assert (tmp_path / "d.zarr" / "scenes" / "cup_2" / "zarr.json").stat().st_mtime_ns == mtime
    forced = export_fits(fits, out, ExportConfig(force=True, scenes=("cup_2",)))
    assert forced.count("written") == 1 and open_store(out).scene_ids == ("chair_1", "cup_2")


def test_export_cli(fits, tmp_path, capsys):
    out = tmp_path / "c.zarr"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--fits", str(fits), "--out", str(out), "--sh-bits", "6", "--scenes", "cup_2"])
        raise SystemExit(0)
    assert exc.value.code == 0 and "1 written" in capsys.readouterr().out
    store = open_store(str(out))
    assert store.scene_ids == ("cup_2",) and store.scene_attrs("cup_2").quantisation["sh_bits"] == 6
    assert int(store.array("cup_2", "sh")[:].max()) <= 63


def test_ply_export_reads_back_with_plyfile(fits, tmp_path):
    res = export_fits(fits, str(tmp_path / "ply"), ExportConfig(format="ply"))
    assert res.count("written") == 2
    ply = PlyData.read(str(tmp_path / "ply" / "chair_1.ply"))
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    assert names[:7] == ["x", "y", "z", "density", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[7:31] == [f"f_rest_{i}" for i in range(24)] and names[31] == "label"
    grid = shell_grid(24, seed=0, labels=True)
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    np.testing.assert_allclose(xyz, grid.world_centers(), atol=1e-6)
    np.testing.assert_array_equal(v["f_dc_1"], grid.sh[:, 9])  # G0
    np.testing.assert_array_equal(v["f_rest_8"], grid.sh[:, 10])  # G1: rest grouped per channel
    np.testing.assert_array_equal(v["f_rest_23"], grid.sh[:, 26])  # B8
    np.testing.assert_array_equal(v["density"], grid.density)


def test_h5_export_per_scene_and_combined(fits, tmp_path):
    out = tmp_path / "h5"
    export_fits(fits, str(out), ExportConfig(format="h5", h5_points=256, seed=3))
    grid = shell_grid(28, seed=1)
    with h5py.File(out / "cup_2.h5") as f:
        np.testing.assert_allclose(f["points"][:], grid.world_centers(), atol=1e-6)
        np.testing.assert_array_equal(f["features"][:, 0], grid.density)
        assert f.attrs["class_name"] == "cup"
    with h5py.File(out / "all.h5") as f:
        assert f["points"].shape == (2, 256, 3) and f["features"].shape == (2, 256, 28)
        assert list(f["label"][:]) == [0, 1] and list(f.attrs["classes"]) == ["chair", "cup"]
        assert [s.decode() for s in f["scene_ids"][:]] == ["chair_1", "cup_2"]
        assert (f["features"][1, :, 0] > 0).all()  # sampled among voxels with positive density


def test_missing_fits_folder_is_an_input_error(tmp_path):
    from perfdata.errors import InputError

    with pytest.raises(InputError, match="fits folder not found"):
        export_fits(tmp_path / "nope", str(tmp_path / "x.zarr"), ExportConfig())
