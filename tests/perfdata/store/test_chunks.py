"""Chunk integrity (perfdata.store.chunks): crc32c on every array, failures named by chunk on read and validate."""

from __future__ import annotations

import pytest
import zarr

from perfdata.errors import InputError
from perfdata.store import WriteConfig, grid_arrays, open_store, refresh_root, write_scene
from perfdata.store.chunks import has_checksum
from perfdata.store.codecs import quiet_numcodecs
from perfdata.store.location import Location
from perfdata.store.validate import validate_store


def _store(tmp_path, make_grid, checksum=True):
    loc = Location(str(tmp_path / "s.zarr"))
    cfg = WriteConfig(checksum=checksum, chunk_bytes=1 << 14)  # small chunks: several per array
    write_scene(loc, "a", grid_arrays(make_grid(32, labels=True), cfg), cfg)
    refresh_root(loc, "t")
    return tmp_path / "s.zarr"


def test_every_array_ends_in_crc32c_and_any_flipped_byte_is_named(tmp_path, make_grid):
    store = _store(tmp_path, make_grid)
    with quiet_numcodecs():
        group = zarr.open_group(str(store / "scenes" / "a"), mode="r")
        assert sorted(group.array_keys()) == ["coords", "density", "labels", "sh"]
        assert all(has_checksum(group[name]) for name in group.array_keys())
    chunk = max((p for p in (store / "scenes" / "a" / "sh").rglob("*") if p.parent.name != "sh"),
                key=lambda p: (p.is_file(), p.stat().st_size))
    key = chunk.relative_to(store).as_posix()
    assert key.startswith("scenes/a/sh/c/")
    data = bytearray(chunk.read_bytes())
    for offset in (0, len(data) // 2, len(data) - 5):  # header, body, and the checksum itself
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        chunk.write_bytes(bytes(damaged))
        with pytest.raises(InputError, match=rf"{key}: chunk is corrupt \(checksum mismatch\)"):
            open_store(str(store)).read_scene("a")
        assert [p.where for p in validate_store(str(store)).problems] == [key]
    chunk.unlink()  # zarr would read a missing chunk as fill values: perfdata does not
    with pytest.raises(InputError, match=rf"{key}: chunk is missing"):
        open_store(str(store)).read_scene("a")


def test_validate_flags_arrays_without_a_checksum(tmp_path, make_grid):
    problems = validate_store(str(_store(tmp_path, make_grid, checksum=False))).problems
    assert {p.where for p in problems} == {f"scenes/a/{a}" for a in ("coords", "density", "labels", "sh")}
    assert all("no crc32c checksum" in p.message for p in problems)
