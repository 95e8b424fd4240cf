"""Atomic writes (perfdata.atomic): hidden temporary names, modes from the umask, whole-folder replacement,
named OSErrors, JSON that stays JSON, and no partial output after a crash."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from perfdata import atomic


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_and_folders_take_the_umask(tmp_path: Path, umask027: None) -> None:
    atomic.write_text(tmp_path / "a.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as tmp:
        assert tmp.name.startswith(".d.") and tmp.name.endswith(".tmp")
        (tmp / "f").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    os.umask(0o022)
    atomic.write_json(tmp_path / "b.json", {})
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644


def test_a_folder_is_replaced_whole_and_a_failure_leaves_the_old_one(tmp_path: Path) -> None:
    with atomic.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "old").write_text("1")
    with pytest.raises(RuntimeError), atomic.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("2")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and os.listdir(tmp_path / "d") == ["old"]
    with atomic.atomic_dir(tmp_path / "d", tmp_like=tmp_path / "elsewhere") as tmp:
        assert tmp.name.startswith(".elsewhere.")
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and os.listdir(tmp_path / "d") == ["new"]


def test_an_os_error_without_a_path_gets_the_final_path(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info, atomic.atomic_path(tmp_path / "f.bin"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "f.bin") and not list(tmp_path.iterdir())


def test_json_has_no_nan(tmp_path: Path) -> None:
    import numpy as np

    atomic.write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32("nan"),
                                            "d": np.array([1.0, np.nan])})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": None, "d": [1.0, None]}
    assert "NaN" not in (tmp_path / "m.json").read_text()


def test_removed_on_error_only_removes_what_it_created(tmp_path: Path) -> None:
    with pytest.raises(OSError), atomic.removed_on_error(tmp_path / "new"):
        (tmp_path / "new" / "x").mkdir(parents=True)
        raise OSError(errno.ENOSPC, "full")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(OSError), atomic.removed_on_error(tmp_path / "old"):
        raise OSError(errno.ENOSPC, "full")
    assert (tmp_path / "old").is_dir()


def test_remove_stale_removes_only_the_items_own_leftovers(tmp_path: Path) -> None:
    for name in (".s0.0123456789abcdef.tmp", ".s0.0123456789abcdef.tmp.old", ".s01.0123456789abcdef.tmp", "s0"):
        (tmp_path / name).mkdir()
    removed = atomic.remove_stale(tmp_path, "s0")
    assert sorted(p.name for p in removed) == [".s0.0123456789abcdef.tmp", ".s0.0123456789abcdef.tmp.old"]
    assert sorted(os.listdir(tmp_path)) == [".s01.0123456789abcdef.tmp", "s0"]
