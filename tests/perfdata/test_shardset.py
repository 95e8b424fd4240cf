"""Atomic shard sets (perfdata.shards.ShardSet): staging, the index switch, clean-up of dead runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from perfdata.shards import ShardSet, read_index, verify_shards


def _write(out: Path, n: int, fail_at: int | None = None) -> None:
    with ShardSet(out) as shard_set:
        with shard_set.writer("train", maxcount=2) as writer:
            for i in range(n):
                if i == fail_at:
                    raise OSError(28, "No space left on device")
                writer.write(f"s_{i:05d}", {"cls": b"0", "json": b"{}"})
        shard_set.commit(["a"])


def test_a_failed_set_leaves_nothing_and_names_the_shard(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        _write(tmp_path / "new", 5, fail_at=3)
    name = Path(info.value.filename)
    assert name.name == "train-000001.tar" and name.parent.parent == tmp_path / "new"  # in the staging folder
    assert not (tmp_path / "new").exists()
    _write(tmp_path / "kept", 4)
    before = (tmp_path / "kept" / "index.json").read_bytes()
    with pytest.raises(OSError):
        _write(tmp_path / "kept", 5, fail_at=3)
    assert (tmp_path / "kept" / "index.json").read_bytes() == before and verify_shards(tmp_path / "kept")
    assert not [p for p in (tmp_path / "kept").iterdir() if p.name.startswith(".")]


def test_dead_staging_is_removed_live_staging_kept_and_legacy_shards_replaced(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    (out / f".pack-{host}-{int(dead.stdout)}.0123456789abcdef.tmp").mkdir()  # a killed run's
    live = out / f".pack-{host}-{os.getpid()}.fedcba9876543210.tmp"  # a run still going (this process)
    live.mkdir()
    (out / "train-000000.tar").write_bytes(b"x" * 512)  # a flat shard of an older layout
    _write(out, 3)
    index = read_index(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, "index.json", index["shard_set"]])
    assert [s["name"] for s in index["shards"]] == [f"{index['shard_set']}/train-00000{i}.tar" for i in range(2)]
    assert index["n_samples"] == {"train": 3}
