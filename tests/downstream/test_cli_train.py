"""`perfdata train ...`: parses, trains, prints the table, and turns bad input into a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfdata.cli import main


def test_train_seg3d_cli(room_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "seg3d", "--store", str(room_store), "--out", str(tmp_path / "out"), "--epochs", "2",
          "--reso", "8", "--batch-size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "train seg3d" in out and "val miou" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["reso"] == 8 and metrics["config"]["device"] == "cpu"
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "curve.png").is_file()


def test_train_cli_missing_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "cls2d", "--shards", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "index.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
