"""fit.json: one typed record, format_version checked, unknown keys kept, no NaN written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from perfdata.errors import FormatVersionError, InputError
from perfdata.records.fit import FitRecord, read_fit, write_fit


def test_round_trip_keeps_unknown_keys_and_writes_no_nan(tmp_path: Path) -> None:
    rec = FitRecord(scene_id="s", method="plenoxel", metrics={"psnr": 25.5, "depth_abs_rel": math.nan},
                    cameras=({"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "c2w": [[1, 0, 0, 0]] * 4, "width": 4,
                              "height": 3},), resolution=(16, 16, 16), label_names=("bg", "chair"),
                    extra={"background_model": {"kind": "msi"}})
    write_fit(tmp_path, rec)
    text = (tmp_path / "fit.json").read_text()
    assert "NaN" not in text and json.loads(text)["background_model"] == {"kind": "msi"}
    back = read_fit(tmp_path)
    assert back.psnr == 25.5 and back.resolution == (16, 16, 16) and back.label_names == ("bg", "chair")
    assert "depth_abs_rel" not in back.metrics  # null: not a number
    assert back.extra == {"background_model": {"kind": "msi"}} and back.cameras[0]["width"] == 4


@pytest.mark.parametrize("doc, error, match", [
    ({"scene_id": "s", "method": "plenoxel"}, FormatVersionError, "format_version None"),
    ({"format_version": 2, "scene_id": "s", "method": "plenoxel"}, FormatVersionError, "format_version 2"),
    ({"format_version": 1, "method": "plenoxel"}, InputError, "lacks scene_id"),
    ({"format_version": 1, "scene_id": "s", "method": "plenoxel", "status": "failed"}, InputError, "failed fit"),
    ({"format_version": 1, "scene_id": "s", "method": "plenoxel", "steps": [1, 2, 3]}, InputError, "steps="),
    ([1, 2], InputError, "not a JSON object"),
])
def test_bad_records_name_the_file(tmp_path: Path, doc: object, error: type, match: str) -> None:
    (tmp_path / "fit.json").write_text(json.dumps(doc))
    with pytest.raises(error, match=match) as exc:
        read_fit(tmp_path)
    assert str(tmp_path / "fit.json") in str(exc.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_fit(tmp_path)
    (tmp_path / "fit.json").write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_fit(tmp_path)
