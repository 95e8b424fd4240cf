"""cameras.json of a render folder: typed, versioned, checked; samples built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfdata.errors import FormatVersionError, InputError
from perfdata.records.render import SceneRender, build_sample, members_for, read_render, write_render

VIEW = {"name": "00000", "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "c2w": [[1, 0, 0, 0]] * 4, "width": 4, "height": 3}


def test_round_trip_and_sample(tmp_path: Path) -> None:
    meta = SceneRender("obj.1", members_for(("rgb", "depth", "label"), "both"), (VIEW,), "cup", 2,
                       psnr=28.0, extra={"background": "msi"})
    assert meta.members == ("rgb.png", "depth.png", "depth.npy", "label.png")
    write_render(tmp_path, meta)
    back = read_render(tmp_path)
    assert back == meta
    key, members = build_sample(back, VIEW, {"rgb.png": b"x", "label.png": b"y", "bg.png": b"z"}, 2)
    assert key == "obj_1_00000" and list(members) == ["rgb.png", "bg.png", "label.png", "cls", "json"]
    assert json.loads(members["json"])["class_id"] == 2 and members["cls"] == b"2"


@pytest.mark.parametrize("change, error, match", [
    ({"format_version": 7}, FormatVersionError, "format_version 7"),
    ({"members": ["rgb.png", "rgb.exr"]}, InputError, "unknown members"),
    ({"views": [{"name": "0"}]}, InputError, "view 0 lacks"),
])
def test_bad_cameras_json(tmp_path: Path, change: dict, error: type, match: str) -> None:
    doc = {**SceneRender("s", ("rgb.png",), (VIEW,)).to_json(), **change}
    (tmp_path / "cameras.json").write_text(json.dumps(doc))
    with pytest.raises(error, match=match):
        read_render(tmp_path)
