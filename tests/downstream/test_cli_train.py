"""`perfdata train ...`: parses, trains, prints the table, and turns bad input into a one-line error (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from downstream_data import ROOM_NAMES, make_shards, object_grid, room_grid, write_store

from perfdata.cli import main


def run_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_train_seg3d_cli_chooses_rooms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(f"room_{i}", room_grid(i), None, {"label_names": ROOM_NAMES}) for i in range(4)]
    obj = object_grid("box", 0)
    obj = type(obj)(obj.coords, obj.density, obj.sh, obj.reso, obj.world_from_grid,
                    labels=(obj.density > 0).astype("int16"))
    rows += [(f"obj_{i}", obj, "box", {"label_names": ["background", "box"]}) for i in range(2)]
    store = write_store(tmp_path / "mixed.zarr", rows)
    args = ["train", "seg3d", "--store", str(store), "--epochs", "2", "--reso", "8", "--batch-size", "4",
            "--device", "cpu"]
    err = run_error([*args, "--out", str(tmp_path / "bad")], capsys)
    assert "label_names" in err and "differ" in err and not (tmp_path / "bad").exists()
    main([*args, "--out", str(tmp_path / "out"), "--scenes", "room_*"])
    out = capsys.readouterr().out
    assert "train seg3d" in out and "val miou" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["reso"] == 8 and metrics["config"]["scenes"] == ["room_*"]
    assert sorted(sum(metrics["splits"]["scenes"].values(), [])) == [f"room_{i}" for i in range(4)]
    assert {"model.safetensors", "curve.png", "confusion.png", "checkpoint.pt"} <= {
        p.name for p in (tmp_path / "out").iterdir()}


def test_features_sh_without_sh_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_store(tmp_path / "nosh.zarr", [(f"s{i}", object_grid("box", i), "box", {}) for i in range(3)])
    for i in range(3):
        shutil.rmtree(store / "scenes" / f"s{i}" / "sh")
    err = run_error(["train", "cls3d", "--store", str(store), "--out", str(tmp_path / "o"), "--features", "sh",
                     "--reso", "8", "--device", "cpu"], capsys)
    assert "nosh.zarr/scenes/s" in err and "array 'sh' is missing" in err and not (tmp_path / "o").exists()


def test_cls2d_cli_eval_images_and_bad_shards(shard_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.synthetic import make_object_scene, write_scene

    index = json.loads((shard_dir / "index.json").read_text())
    sources = tmp_path / "sources"
    for sid in index["scenes"]["val"]:  # the held-out scenes' source captures, as `perfdata synth` writes them
        _, shape, seed = sid.split("_")
        write_scene(make_object_scene(int(seed), n_views=6, size=32, shape=shape, scene_id=sid), sources / sid)
    base = ["train", "cls2d", "--shards", str(shard_dir), "--epochs", "1", "--batch-size", "8", "--size", "16",
            "--device", "cpu"]
    main([*base, "--out", str(tmp_path / "out"), "--eval-images", f"synthetic:{sources}", "--bg-aug", "0.5",
          "--workers", "2"])
    assert "source-image top-1" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and 0.0 <= metrics["final"]["source_top1"] <= 1.0
    assert sum(map(sum, metrics["final"]["source_confusion"])) == 18  # 3 held-out scenes x 6 source views
    assert run_error([*base, "--out", str(tmp_path / "o"), "--eval-images", "nosuch:x"], capsys).startswith(
        "error: --eval-images takes READER:PATH")

    bad = tmp_path / "bad"
    shutil.copytree(shard_dir, bad)
    train = [s for s in index["shards"] if s["split"] == "train"]  # names sit in the index's shard-set folder
    first, second = bad / train[0]["name"], bad / train[1]["name"]
    shutil.copy(second, first)
    train[0]["bytes"] = first.stat().st_size  # sizes agree, sha256 does not
    (bad / "index.json").write_text(json.dumps(index))
    err = run_error([*base.__getitem__(slice(0, 3)), str(bad), *base[4:], "--out", str(tmp_path / "o"), "--verify"],
                    capsys)
    assert first.name in err and "sha256" in err and not (tmp_path / "o").exists()

    other = make_shards(tmp_path / "other", ("sphere", "cone"), per_class=2, n_views=2, size=16)
    err = run_error([*base, "--out", str(tmp_path / "o"), "--val-shards", str(other)], capsys)
    assert "other/shards/index.json: classes ['cone', 'sphere'] differ from the train shards'" in err


def test_train_cli_missing_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(["train", "cls2d", "--shards", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert "index.json" in err and not (tmp_path / "out").exists()
