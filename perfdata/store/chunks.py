"""Chunk-level integrity of the store's arrays.

Every array is written with a crc32c codec after its compressor (zarr v3's `Crc32cCodec`: 4 bytes per chunk),
so zarr checks each chunk it decodes and a flipped byte anywhere in a chunk is an error, never wrong values.
Reads go through `read_rows`, which turns such a failure (or a chunk file that is missing from a local store,
which zarr would silently read as fill values) into an InputError naming the chunk, e.g.
`store.zarr/scenes/chair_1/sh/c/0/3: chunk is corrupt (checksum mismatch)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import product
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from perfdata.errors import InputError
from perfdata.store.codecs import quiet_numcodecs


def has_checksum(arr: zarr.Array) -> bool:
    """Whether the array's codec pipeline ends in a crc32c checksum."""
    return any(isinstance(c, Crc32cCodec) for c in arr.metadata.codecs)  # type: ignore[union-attr]


def chunk_key(idx: tuple[int, ...]) -> str:
    """The v3 default chunk key of a chunk index: `c/0/3`."""
    return "c/" + "/".join(str(i) for i in idx)


def iter_chunks(arr: zarr.Array, rows: slice = slice(None)) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """(chunk index, selection of the whole chunk) of every chunk holding a row of `rows` (step 1)."""
    if arr.size == 0:
        return
    start, stop, _ = rows.indices(arr.shape[0])
    if stop <= start:
        return
    first, last = start // arr.chunks[0], (stop - 1) // arr.chunks[0]
    grid = [range(first, last + 1)] + [range(-(-s // c)) for s, c in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    for idx in product(*grid):
        yield idx, tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, arr.chunks, arr.shape, strict=True))


def read_chunk(
    arr: zarr.Array, idx: tuple[int, ...], sel: tuple[slice, ...], local_dir: str | None
) -> tuple[np.ndarray | None, str | None]:
    """(data, None) of one chunk, or (None, why it cannot be read: missing file, checksum mismatch, undecodable)."""
    if local_dir is not None and not os.path.isfile(os.path.join(local_dir, *chunk_key(idx).split("/"))):
        return None, "chunk is missing"
    try:
        with quiet_numcodecs():
            return np.asarray(arr[sel]), None
    except Exception as exc:  # noqa: BLE001 -- zarr and the codecs raise many types for bad bytes
        return None, f"chunk is corrupt ({describe(exc)})"


def describe(exc: Exception) -> str:
    text = str(exc)
    if "checksum" in text.lower():
        return "checksum mismatch"
    return f"{type(exc).__name__}: {text}"


def read_rows(arr: zarr.Array, rows: slice, where: str, local_dir: str | None = None) -> np.ndarray:
    """`arr[rows]`; a corrupt chunk (or, with `local_dir`, the array's folder on disk, a missing chunk file) is
    an InputError naming `where/<chunk key>`."""
    if local_dir is not None:
        for idx, _ in iter_chunks(arr, rows):
            if not os.path.isfile(os.path.join(local_dir, *chunk_key(idx).split("/"))):
                raise InputError(f"{where}/{chunk_key(idx)}", "chunk is missing")
    try:
        with quiet_numcodecs():
            return np.asarray(arr[rows])
    except Exception as exc:  # noqa: BLE001 -- find and name the chunk at fault
        for idx, sel in iter_chunks(arr, rows):
            _, problem = read_chunk(arr, idx, sel, None)
            if problem is not None:
                raise InputError(f"{where}/{chunk_key(idx)}", problem) from None
        raise InputError(where, f"cannot read array ({describe(exc)})") from None


def local_array_dir(loc: Any, key: str) -> str | None:
    """The folder of array `key` under a local store root, or None for remote stores."""
    return os.path.join(str(loc.local_path), *key.split("/")) if loc.is_local else None


def write_chunks(arr: zarr.Array, data: np.ndarray) -> None:
    """`arr[...] = data`, one chunk per call: when a write fails (a full disk), no other chunk write of zarr's is
    still in flight to recreate files after the caller has removed its temporary folder."""
    with quiet_numcodecs():
        for _, sel in iter_chunks(arr):
            arr[sel] = data[sel]
