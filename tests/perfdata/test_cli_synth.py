"""`perfdata synth` and `perfdata demo` end to end on tiny scenes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from perfdata.cli import main
from perfdata.synthetic import SHAPE_CLASSES


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_objects_writes_one_complete_folder_per_scene_and_skips_on_rerun(tmp_path, capsys):
    out = tmp_path / "objs"
    args = ["synth", "--kind", "objects", "--scenes", "3", "--views", "2", "--size", "16", "--seed", "5", "--out", str(out)]
    assert _run(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"obj_{i:04d}_{s}" for i, s in enumerate(SHAPE_CLASSES[:3])]
    for name in names:
        folder = out / name
        for sub, ext in [("images", "png"), ("depth", "npy"), ("masks", "png"), ("labels", "png")]:
            assert sorted(p.name for p in (folder / sub).iterdir()) == [f"0000.{ext}", f"0001.{ext}"]
        doc = json.loads((folder / "transforms.json").read_text())
        assert len(doc["frames"]) == 2 and doc["perfdata"]["class_name"] == name.split("_")[-1]
        assert iio.imread(folder / "images" / "0000.png").shape == (16, 16, 3)
        assert np.load(folder / "depth" / "0001.npy").shape == (16, 16)
    assert "written" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert _run(args) == 0
    assert capsys.readouterr().out.count("skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    again = tmp_path / "again"
    assert _run([*args[:-1], str(again)]) == 0
    assert _digests(again) == _digests(out)  # same command, same bytes


def test_synth_objects_on_a_textured_backdrop(tmp_path):
    out = tmp_path / "objs"
    args = ["synth", "--kind", "objects", "--scenes", "1", "--views", "2", "--size", "16", "--backdrop", "textured"]
    assert _run([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "obj_0000_sphere").iterdir()) == ["depth", "images", "labels", "transforms.json"]
    doc = json.loads((out / "obj_0000_sphere" / "transforms.json").read_text())
    assert doc["perfdata"]["capture"] == "object" and doc["perfdata"]["background"] is None
    assert all("mask_path" not in fr for fr in doc["frames"])


def test_synth_rooms_and_bad_options(tmp_path, capsys):
    out = tmp_path / "rooms"
    assert _run(["synth", "--kind", "rooms", "--scenes", "1", "--views", "2", "--size", "16", "--out", str(out)]) == 0
    doc = json.loads((out / "room_0000" / "transforms.json").read_text())
    assert doc["perfdata"]["kind"] == "room" and doc["perfdata"]["background"] is None
    assert _run(["synth", "--kind", "castles", "--out", str(tmp_path / "x")]) != 0
    assert _run(["synth", "--kind", "rooms", "--views", "0", "--out", str(tmp_path / "x")]) != 0
    assert not (tmp_path / "x").exists()
    assert _run(["synth", "--kind", "rooms", "--backdrop", "textured", "--out", str(tmp_path / "x")]) == 2
    assert "--backdrop textured is for object scenes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("not a folder")
    assert _run(["synth", "--kind", "rooms", "--scenes", "1", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_demo_cli_runs_the_pipeline_and_a_rerun_skips_finished_work(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--scenes", "1", "--size", "16", "--views", "6", "--fit-seconds", "1"]
    assert _run(args) == 0
    assert sorted(p.name for p in (out / "downloads" / "00").iterdir()) == ["obj_0000_sphere", "room_0000"]
    sheet = iio.imread(out / "report" / "contact_sheet.png")
    rows, cols, pad = 2, 2 * 4, 2  # two scenes; two views of rgb, depth, mask, labels each
    assert sheet.shape == (rows * 16 + (rows + 1) * pad, cols * 16 + (cols + 1) * pad, 3)
    report = (out / "report" / "report.md").read_text()
    assert "| obj_0000_sphere | objects | sphere |" in report and "| room_0000 | rooms | room |" in report
    assert "contact_sheet.png" in report and "shards/index.json" in report
    fit_json = (out / "fits" / "room_0000" / "fit.json").read_bytes()
    capsys.readouterr()
    assert _run(args) == 0
    assert "0 files fetched" in capsys.readouterr().out
    assert (out / "fits" / "room_0000" / "fit.json").read_bytes() == fit_json


def test_run_demo_takes_a_custom_step_list(tmp_path):
    from perfdata.pipelines.demo import DemoConfig, default_steps, run_demo

    steps = ["synth objects", "contact sheet", "report"]
    chosen = [(name, step) for name, step in default_steps() if name in steps]
    result = run_demo(DemoConfig(tmp_path, n_scenes=2, size=12, n_views=1), chosen)
    assert list(result.timings) == steps
    assert [s["scene"] for s in result.scenes] == ["obj_0000_sphere", "obj_0001_box"]
    assert set(result.artefacts) == {"contact_sheet", "report", "html report"}
    page = result.artefacts["html report"].read_text()
    assert 'src="contact_sheet.png"' in page and "obj_0001_box" in page and "fit_psnr.png" not in page  # no fits
    assert iio.imread(result.artefacts["contact_sheet"]).shape == (2 * 12 + 3 * 2, 4 * 12 + 5 * 2, 3)
