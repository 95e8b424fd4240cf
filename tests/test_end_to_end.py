"""End to end on synthetic scenes: mirror -> download -> fit -> export -> label -> render -> pack -> train,
through `perfdata.pipelines.demo` (the same steps `perfdata demo` runs), each output read back by its own library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from perfdata.pipelines.demo import DemoConfig, run_demo

from perfdata.status import output_status
from perfdata.store import open_store
from perfdata.store.validate import validate_store


def test_pipeline_end_to_end(tmp_path: Path) -> None:
    cfg = DemoConfig(tmp_path, n_scenes=1, size=32, n_views=9, fit_seconds=120.0, fit_steps=80, render_views=3,
                     train_epochs=2)
    result = run_demo(cfg)
    assert [r["scene"] for r in result.scenes] == ["obj_0000_sphere", "room_0000"]

    status = json.loads((tmp_path / "downloads" / "download_status.json").read_text())
    assert status["files"] and all(f["state"] == "done" for f in status["files"].values())

    for output, stage in [("fits", "fit"), ("dataset.zarr", "export"), ("renders", "render"), ("shards", "pack")]:
        states = {s.stage: {r.item: r.state for r in s.records} for s in output_status(tmp_path / output)}
        assert stage in states and set(states[stage].values()) == {"done"}, (output, states)
    assert set(states["pack"]) == {"train", "val"}
    assert {r.item: r.psnr for r in output_status(tmp_path / "renders")[0].records} == {
        r["scene"]: pytest.approx(r["psnr"], abs=1e-3) for r in result.scenes}
    for row in result.scenes:
        assert row["psnr"] > 14.0, row  # 80-step fits of 32 px scenes; a constant grey image scores ~8 dB
        assert row["depth_abs_rel"] < 0.2, row

    report = validate_store(str(tmp_path / "dataset.zarr"))
    assert not report.problems, report.problems
    store = open_store(str(tmp_path / "dataset.zarr"))
    assert sorted(store.scene_ids) == ["obj_0000_sphere", "room_0000"]
    assert (store.read_scene("room_0000").labels >= 0).mean() > 0.2

    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    urls = [str(tmp_path / "shards" / s["name"]) for s in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == sum(s["samples"] for s in index["shards"]) == 2 * 3
    assert {"rgb.png", "depth.png", "mask.png", "label.png", "cls", "json"} <= set(samples[0])

    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and np.isfinite(metrics["epochs"][-1]["train_loss"])
    assert (tmp_path / "report" / "report.md").read_text().count("| done |") == 2
