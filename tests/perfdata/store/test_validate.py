"""`validate_store` and `perfdata validate`: a good store passes; each kind of damage is named."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from perfdata.cli import main
from perfdata.store import WriteConfig, grid_arrays, refresh_root, write_scene
from perfdata.store.location import Location
from perfdata.store.validate import validate_store


@pytest.fixture
def store(tmp_path, make_grid):
    loc = Location(str(tmp_path / "s.zarr"))
    for i, sid in enumerate(("a", "b")):
        write_scene(loc, sid, grid_arrays(make_grid(32, seed=i, labels=True), WriteConfig()), WriteConfig())
    refresh_root(loc, "test")
    return tmp_path / "s.zarr"


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().out


def test_good_store_passes(store, capsys):
    report = validate_store(str(store))
    assert report.ok and report.n_scenes == 2 and report.n_voxels > 1000
    code, out = run_cli(["validate", str(store)], capsys)
    assert code == 0 and "2 scenes" in out and "ok" in out


def test_truncated_chunk_is_named(store, capsys):
    chunk = store / "scenes" / "b" / "density" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-20])
    problems = validate_store(str(store)).problems
    assert [p.where for p in problems] == ["scenes/b/density/c/0"]
    assert "corrupt" in problems[0].message
    code, out = run_cli(["validate", str(store)], capsys)
    assert code == 2 and "scenes/b/density/c/0" in out


def test_missing_chunk_and_unlisted_scene(store):
    (store / "scenes" / "a" / "sh" / "c" / "0" / "4").unlink()
    (store / "scenes" / "stray").mkdir()
    where = {p.where for p in validate_store(str(store)).problems}
    assert where == {"scenes/a/sh/c/0/4", "scenes/stray"}


def test_bad_values_and_newer_version(store, make_grid):
    loc = Location(str(store))
    scene = grid_arrays(make_grid(16, labels=True), WriteConfig(density_dtype="float32"))
    arrays = dict(scene.arrays)
    arrays["density"] = arrays["density"].copy()
    arrays["density"][3] = np.nan
    arrays["labels"] = arrays["labels"].copy()
    arrays["labels"][0] = -5
    arrays["coords"] = arrays["coords"].copy()
    arrays["coords"][-1] = 16
    write_scene(loc, "c", dataclasses.replace(scene, arrays=arrays), WriteConfig())
    refresh_root(loc)
    messages = " | ".join(str(p) for p in validate_store(str(store)).problems)
    assert "scenes/c/density: 1 non-finite" in messages
    assert "scenes/c/labels: labels below -1" in messages
    assert "scenes/c/coords: 1 coords outside reso" in messages
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["perfdata"]["format_version"] = 7
    (store / "zarr.json").write_text(json.dumps(meta))
    (problem,) = validate_store(str(store)).problems
    assert "format_version 7" in problem.message


def test_validate_refuses_unknown_paths(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(tmp_path)])
    assert exc.value.code == 2 and "not something perfdata validates" in capsys.readouterr().err
