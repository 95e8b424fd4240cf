"""The dataset manifests shipped as package data, and their schema check."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from perfdata.errors import FormatVersionError, InputError
from perfdata.manifest import co3d_chunk_of_sequence, load_manifest, manifest_names, validate_manifest


def _raw(name: str) -> dict:
    return json.loads((resources.files("perfdata") / "manifests" / f"{name}.json").read_text())


def test_co3d_manifest_has_100_chunks_across_three_repos() -> None:
    m = load_manifest("co3d")
    assert manifest_names() == ("co3d", "scannet", "synthetic")
    assert m.n_chunks == len(m.chunks) == 100
    by_repo = {repo: [c.id for c in m.chunks if c.repo == repo] for repo in m.repos}
    assert by_repo == {
        "YWjimmy/PeRFception-v1-1": list(range(0, 36)),
        "YWjimmy/PeRFception-v1-2": list(range(36, 71)),
        "YWjimmy/PeRFception-v1-3": list(range(71, 100)),
    }
    assert m.chunk(7).folder == "07" and "last.ckpt" in m.scene_files
    assert m.chunk_of_path("77/plenoxel_co3d_106_12648_23177/last.ckpt") == 77
    assert m.chunk_of_path("100/x") is None and m.chunk_of_path("77") is None
    with pytest.raises(InputError, match="out of range 0-99"):
        m.chunk(100)


def test_scannet_manifest_chunks_are_scene_numbers() -> None:
    m = load_manifest("scannet")
    assert m.n_chunks == 707 and m.repos == ("YWjimmy/PeRFception-ScanNet",)
    assert m.chunk_of_path("plenoxel_scannet_scene0123_02/last.ckpt") == 123
    assert m.chunks[5].owns("plenoxel_scannet_scene0005_00/a/b.npz")
    assert not m.chunks[5].owns("plenoxel_scannet_scene0050_00/a.npz")
    assert m.chunk_of_path("plenoxel_scannet_scene0800_00/last.ckpt") is None


def test_co3d_chunk_of_sequence() -> None:
    assert co3d_chunk_of_sequence("106_12648_23157") == 57
    assert co3d_chunk_of_sequence("34_1403_4393") == 93
    with pytest.raises(InputError, match="not a number"):
        co3d_chunk_of_sequence("apple_x")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("chunks"), "missing key 'chunks'"),
        (lambda r: r.update(n_chunks=99), "100 chunks listed"),
        (lambda r: r["chunks"][3].update(id=4), "out of order"),
        (lambda r: r["chunks"][3].update(repo="no-owner"), "owner/name"),
        (lambda r: r["chunks"][3].update(folder="../x"), "plain relative path"),
        (lambda r: r["chunks"][3].update(extra=1), "unknown keys"),
        (lambda r: r.update(dataset="scannet"), "expected 'co3d'"),
        (lambda r: r.update(n_chunks="100"), "has type str"),
    ],
)
def test_schema_rejects_bad_manifests(edit, message: str) -> None:
    raw = copy.deepcopy(_raw("co3d"))
    edit(raw)
    with pytest.raises(InputError, match=message):
        validate_manifest(raw, "co3d.json", "co3d")


def test_unknown_format_version_and_dataset() -> None:
    raw = _raw("co3d")
    raw["format_version"] = 2
    with pytest.raises(FormatVersionError):
        validate_manifest(raw, "co3d.json")
    with pytest.raises(InputError, match="no manifest for dataset 'kitti'"):
        load_manifest("kitti")


def test_synthetic_manifest_is_served_by_mirrors_only() -> None:
    from perfdata.download.remote import TransferConfig
    from perfdata.download.sources import HFSource
    from perfdata.errors import ConfigError

    m = load_manifest("synthetic")
    assert m.n_chunks == 10 and m.repos == ()
    assert m.chunk_of_path("03/obj_0003_cone/transforms.json") == 3
    with pytest.raises(ConfigError, match="mirrors only"):
        HFSource("http://127.0.0.1:9", TransferConfig()).list_chunk(m.chunk(0))
