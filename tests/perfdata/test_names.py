"""The one safe-name rule for scene ids (perfdata.names) and where readers apply it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from perfdata.errors import UnsafePathError
from perfdata.names import MAX_ID_BYTES, check_scene_id, scene_id_problem, scene_path
from perfdata.readers import list_scenes

SAFE = ["scene0000_00", "106_12662_23043", "obj_0000_sphere", "scene.01", "a b", "séquence", "x" * MAX_ID_BYTES]
UNSAFE = ["", "..", ".", ".hidden", "../x", "a/b", "a\\b", "/abs", "C:x", "x\x00", "x\ny", "a#b", "a?b", "a%2e",
          "x" * (MAX_ID_BYTES + 1), "é" * (MAX_ID_BYTES // 2 + 1)]


@pytest.mark.parametrize("name", SAFE)
def test_safe_ids_pass(name: str, tmp_path: Path) -> None:
    assert scene_id_problem(name) is None and check_scene_id(name) == name
    assert scene_path(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_ids_are_refused_naming_their_origin(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="listing.json.*refusing to use it as a name"):
        check_scene_id(name, tmp_path / "listing.json")
    with pytest.raises(UnsafePathError):
        scene_path(tmp_path, name)
    assert scene_id_problem(name)


def test_readers_refuse_a_bad_id_and_skip_dot_folders(tmp_path: Path) -> None:
    category = tmp_path / "teddybear"
    (category / "ok_1").mkdir(parents=True)
    (category / ".evil").mkdir()
    rows = [{"sequence_name": n} for n in ("ok_1", ".evil")]
    with gzip.open(category / "frame_annotations.jgz", "wt") as fh:
        json.dump(rows, fh)
    with pytest.raises(UnsafePathError, match="'.evil'"):
        list_scenes("co3d", tmp_path)
    synth = tmp_path / "synth"
    for name in ("a", ".a.0123.tmp"):  # a temporary folder left by a killed writer
        (synth / name).mkdir(parents=True)
        (synth / name / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": []}')
    assert list_scenes("blender", synth) == ["a"]
