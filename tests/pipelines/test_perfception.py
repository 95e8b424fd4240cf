"""Import of PeRFception checkpoints (built here with torch.save in the released layout), safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from perfdata.pipelines.export import ExportConfig
from perfdata.pipelines.perfception import import_perfception, load_checkpoint

from perfdata.errors import InputError
from perfdata.store import open_store
from perfdata.store.validate import validate_store

R = 256


def make_scene(folder: Path, n: int = 5000, seed: int = 0, drop: str | None = None, extra: object = None) -> dict:
    """A scene folder as PeRFception releases it; returns the tensors written."""
    rng = np.random.default_rng(seed)
    links = np.sort(rng.choice(R**3, size=n, replace=False)).astype(np.int64)[rng.permutation(n)]
    bg_links = np.full(16 * 8, -1, np.int32)
    bg_links[rng.choice(16 * 8, 100, replace=False)] = np.arange(100, dtype=np.int32)
    bg_links = bg_links.reshape(16, 8)
    state = {
        "model.links_idx": torch.from_numpy(links),
        "model.density_data": torch.from_numpy(rng.normal(5, 3, (n, 1)).astype(np.float32)),
        "model.sh_data": torch.from_numpy(rng.integers(0, 256, (n, 27), dtype=np.uint8)),
        "model.background_links": torch.from_numpy(bg_links),  # svox2's (2H, H) texel rows, pruned ones -1
        "model.background_data": torch.from_numpy(rng.integers(0, 256, (100, 16, 4), dtype=np.uint8)),
    }
    ckpt = {"epoch": 3, "global_step": 1000, "state_dict": state, "reso_idx": 1,
            "model.sh_data_min": torch.linspace(-1, 0, 27).reshape(1, 27),
            "model.sh_data_scale": torch.full((1, 27), 0.01), "hyper_parameters": {"lr": 1e-3},
            "model.background_data_min": torch.tensor([[-2.0, -1.5, -1.0, 0.0]]),
            "model.background_data_scale": torch.tensor([[0.02, 0.015, 0.01, 0.2]])}
    if extra is not None:
        ckpt["hyper_parameters"]["extra"] = extra
    if drop:
        (state if drop in state else ckpt).pop(drop)
    folder.mkdir(parents=True)
    torch.save(ckpt, folder / "last.ckpt")
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = [1.0, 2.0, 3.0]
    np.savez(folder / "trans_info.npz", pcd_mean=np.array([0.1, 0.2, 0.3]), scene_scale=np.array(2.5), T=T,
             frame_ids=np.arange(0, 100, 10))
    np.savez(folder / "label_info.npz", class_label=np.array(7), sscale=np.array(1.5))
    (folder / "class_info.txt").write_text("teddybear\n")
    (folder / "results.json").write_text(json.dumps({"PSNR": 28.5, "SSIM": 0.87, "LPIPS": 0.2}))
    return {"links": links, "sh": state["model.sh_data"].numpy(), "density": state["model.density_data"].numpy()[:, 0],
            "T": T, "bg_links": bg_links, "bg_data": state["model.background_data"].numpy()}


def test_import_chunk_folders(tmp_path):
    made = make_scene(tmp_path / "rel" / "00" / "plenoxel_co3d_110_13051_23361")
    make_scene(tmp_path / "rel" / "61" / "plenoxel_co3d_406_54761_106461", seed=1, n=3000)
    res = import_perfception(tmp_path / "rel", str(tmp_path / "p.zarr"), ExportConfig())
    assert res.count("written") == 2 and res.root.dataset == "perfception" and res.root.classes == ("teddybear",)
    store = open_store(str(tmp_path / "p.zarr"))
    sid = "co3d_110_13051_23361"
    attrs = store.scene_attrs(sid)
    assert attrs.reso == (R, R, R) and attrs.class_name == "teddybear"
    assert attrs.metrics == {"psnr": 28.5, "ssim": 0.87, "lpips": 0.2}
    assert attrs.extra["class_label"] == 7 and attrs.extra["frame_ids"][:3] == [0, 10, 20] and attrs.extra["reso_idx"] == 1
    order = np.argsort(made["links"])
    grid = store.read_scene(sid)
    np.testing.assert_array_equal(grid.linear_index(), made["links"][order])
    expected_sh = made["sh"][order] * np.float32(0.01) + np.linspace(-1, 0, 27, dtype=np.float32)
    np.testing.assert_allclose(grid.sh, expected_sh, atol=1e-6)
    np.testing.assert_allclose(grid.density, made["density"][order], rtol=2**-11)
    # the background: its own group, bytes as released, decoded by the released min / scale into svox2's texels
    stored = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")[f"scenes/{sid}/background"]
    np.testing.assert_array_equal(stored["data"][:], made["bg_data"])
    assert stored.attrs["perfdata_background"]["format_version"] == 1 and grid.msi is not None
    assert grid.msi.shape == (16, 8, 16, 4)
    ok = made["bg_links"] >= 0
    u, v = np.nonzero(ok)
    expected_bg = made["bg_data"][made["bg_links"][u, v]] * np.float32([0.02, 0.015, 0.01, 0.2]) + np.float32(
        [-2.0, -1.5, -1.0, 0.0])
    np.testing.assert_allclose(grid.msi[u, v], expected_bg, atol=1e-5)
    assert not grid.msi[~ok].any()  # pruned texels: no colour, no density
    # world_from_grid inverts g = (A p + t - pcd_mean) / scene_scale
    p = np.array([0.3, -0.7, 1.1])
    g = (made["T"][:3, :3] @ p + made["T"][:3, 3] - [0.1, 0.2, 0.3]) / 2.5
    np.testing.assert_allclose(grid.world_from_grid[:3, :3] @ g + grid.world_from_grid[:3, 3], p, atol=1e-12)
    again = import_perfception(tmp_path / "rel", str(tmp_path / "p.zarr"), ExportConfig())
    assert again.count("skipped") == 2
    assert validate_store(str(tmp_path / "p.zarr")).ok


def test_missing_key_is_named_and_writes_nothing(tmp_path):
    make_scene(tmp_path / "plenoxel_co3d_1_2_3", drop="model.sh_data_scale")
    res = import_perfception(tmp_path / "plenoxel_co3d_1_2_3", str(tmp_path / "p.zarr"), ExportConfig())
    (scene,) = res.scenes
    assert scene.status == "failed" and "last.ckpt" in scene.error and "model.sh_data_scale" in scene.error
    assert not (tmp_path / "p.zarr").exists()  # every scene failed: no (empty) store is left behind


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    make_scene(tmp_path / "plenoxel_co3d_9_9_9", extra=Payload(marker))
    with pytest.raises(InputError, match=r"last.ckpt.*refused.*system"):
        load_checkpoint(tmp_path / "plenoxel_co3d_9_9_9" / "last.ckpt")
    assert not marker.exists()


def test_fallback_unpickler_accepts_plain_containers(tmp_path):
    made = make_scene(tmp_path / "plenoxel_co3d_5_5_5", extra=[frozenset({1, 2}), slice(1, 5)])
    with pytest.raises(Exception):  # noqa: B017 -- weights_only alone refuses these
        torch.load(tmp_path / "plenoxel_co3d_5_5_5" / "last.ckpt", weights_only=True)
    ckpt = load_checkpoint(tmp_path / "plenoxel_co3d_5_5_5" / "last.ckpt")
    np.testing.assert_array_equal(ckpt["state_dict"]["model.links_idx"].numpy(), made["links"])


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "plenoxel_co3d_1_1_1").mkdir()
    (tmp_path / "plenoxel_co3d_1_1_1" / "last.ckpt").write_bytes(b"<html>error page</html>")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "plenoxel_co3d_1_1_1" / "last.ckpt")
    with pytest.raises(InputError, match="not found"):
        import_perfception(tmp_path / "plenoxel_co3d_1_1_1" / "x", str(tmp_path / "x.zarr"), ExportConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PeRFception scene folder"):
        import_perfception(tmp_path / "empty", str(tmp_path / "x.zarr"), ExportConfig())


def test_world_from_label_info_without_trans_info(tmp_path):
    made = make_scene(tmp_path / "plenoxel_co3d_4_4_4")
    (tmp_path / "plenoxel_co3d_4_4_4" / "trans_info.npz").unlink()
    np.savez(tmp_path / "plenoxel_co3d_4_4_4" / "label_info.npz", class_label=np.array(7), sscale=np.array(1.5),
             T=made["T"])
    import_perfception(tmp_path / "plenoxel_co3d_4_4_4", str(tmp_path / "p.zarr"), ExportConfig())
    attrs = open_store(str(tmp_path / "p.zarr")).scene_attrs("co3d_4_4_4")
    W = np.asarray(attrs.world_from_grid)
    p = np.array([0.3, -0.7, 1.1])
    g = 1.5 * (made["T"][:3, :3] @ p + made["T"][:3, 3])
    np.testing.assert_allclose(W[:3, :3] @ g + W[:3, 3], p, atol=1e-12)
    assert "label_info" in attrs.extra["world_from_grid"]
