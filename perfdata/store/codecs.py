"""Chunking and codec choice for the store's arrays, by measurement.

Each array is written with one of a few candidate pipelines; the writer compresses a sample of the real data
with each candidate that suits its dtype and keeps the smallest (ties: the earlier, simpler one). Layouts:

- "rows": chunks of whole rows (r, k): zstd, blosc-zstd with byte shuffle or bit shuffle, or a transpose
  to channel-major inside the chunk before zstd.
- "columns": chunks (r, 1), one channel of r rows each, optionally delta-coded before zstd. Sorted voxels are
  z-neighbours, so a smooth field's per-channel deltas are small: this is what brings uint8 SH well under
  27 B/voxel. Delta (numcodecs.delta) is applied to integer arrays only, where it is lossless.

Chunks hold about `chunk_bytes` (default 2 MiB) of raw data. The numcodecs delta codec is not in the zarr v3
spec (zarr-python with numcodecs reads it); `portable=True` keeps to spec codecs only. Every pipeline ends in a
crc32c checksum (a zarr v3 spec codec, 4 bytes per chunk) unless `checksum=False` (benchmarks only), so a
damaged chunk is an error on read, never wrong values (see `chunks.py`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec, ZstdCodec

CHECKSUM_BYTES = 4
"""The crc32c codec's bytes per chunk."""


@contextmanager
def quiet_numcodecs() -> Iterator[None]:
    """Silence zarr's notice that numcodecs codecs are outside the v3 spec (documented above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
        yield


@dataclass(frozen=True)
class CodecChoice:
    """One candidate pipeline: a chunk layout, array-to-array filters and a compressor."""

    name: str
    layout: str  # "rows" | "columns"
    filter: str = ""  # "" | "transpose" | "delta"
    compressor: str = "zstd"  # "zstd" | "blosc-shuffle" | "blosc-bitshuffle"
    level: int = 3

    def chunks(self, shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
        """Chunk shape of about `chunk_bytes` raw bytes (rows rounded up to a multiple of 4096)."""
        cols = 1 if self.layout == "columns" else int(np.prod(shape[1:], dtype=np.int64))
        rows = max(1, chunk_bytes // max(1, itemsize * cols))
        rows = min(-(-rows // 4096) * 4096, max(1, shape[0]))
        if self.layout == "columns" and len(shape) > 1:
            return (rows,) + (1,) * (len(shape) - 1)
        return (rows,) + tuple(shape[1:])

    def array_kwargs(
        self, shape: tuple[int, ...], dtype: np.dtype, chunk_bytes: int, checksum: bool = True
    ) -> dict[str, Any]:
        """Keyword arguments for `zarr.create_array` (compressor, then the crc32c checksum of the chunk)."""
        dtype = np.dtype(dtype)
        filters: list[Any] = []
        if self.filter == "transpose":
            filters.append(TransposeCodec(order=tuple(range(len(shape) - 1, -1, -1))))
        elif self.filter == "delta":
            import zarr.codecs.numcodecs as zn

            with quiet_numcodecs():
                filters.append(zn.Delta(dtype=dtype.str))
        if self.compressor == "zstd":
            comp: Any = ZstdCodec(level=self.level)
        else:
            shuffle: Literal["shuffle", "bitshuffle"] = "shuffle" if self.compressor == "blosc-shuffle" else "bitshuffle"
            comp = BloscCodec(cname="zstd", clevel=self.level, shuffle=shuffle, typesize=dtype.itemsize)
        compressors = [comp, Crc32cCodec()] if checksum else [comp]
        return {"chunks": self.chunks(shape, dtype.itemsize, chunk_bytes), "filters": filters,
                "compressors": compressors, "config": {"write_empty_chunks": True}}  # a missing chunk is damage


CANDIDATES: tuple[CodecChoice, ...] = (
    CodecChoice("rows-zstd", "rows"),
    CodecChoice("rows-shuffle-zstd", "rows", compressor="blosc-shuffle"),
    CodecChoice("rows-bitshuffle-zstd", "rows", compressor="blosc-bitshuffle"),
    CodecChoice("rows-transpose-zstd", "rows", filter="transpose"),
    CodecChoice("columns-zstd", "columns"),
    CodecChoice("columns-delta-zstd", "columns", filter="delta"),
    CodecChoice("columns-delta-shuffle-zstd", "columns", filter="delta", compressor="blosc-shuffle"),
)
BY_NAME = {c.name: c for c in CANDIDATES}


def candidates_for(data: np.ndarray, portable: bool = False) -> list[CodecChoice]:
    """The candidates that suit an array: 2D-only layouts need 2D data; delta needs integers."""
    out = []
    for c in CANDIDATES:
        if data.ndim == 1 and (c.layout == "columns" and c.filter != "delta" or c.filter == "transpose"):
            continue
        if data.ndim > 2 and c.layout == "columns":
            continue
        if c.filter == "delta" and (portable or data.dtype.kind not in "iu"):
            continue
        if c.compressor != "zstd" and data.dtype.itemsize == 1 and data.ndim > 1 and c.layout == "rows":
            continue  # shuffling single bytes of rows: same as plain zstd
        out.append(c)
    return out


def measure(data: np.ndarray, choice: CodecChoice, chunk_bytes: int, checksum: bool = True) -> dict[str, float]:
    """Write `data` to an in-memory zarr array with `choice`; stored bytes per row and write / read seconds."""
    kwargs = choice.array_kwargs(data.shape, data.dtype, chunk_bytes, checksum)
    with quiet_numcodecs():
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=data.shape, dtype=data.dtype, **kwargs)
        t0 = time.perf_counter()
        arr[...] = data
        t1 = time.perf_counter()
        back = arr[...]
        t2 = time.perf_counter()
    assert np.array_equal(back, data, equal_nan=data.dtype.kind == "f"), f"codec {choice.name} is not lossless"
    n = max(1, len(data))
    return {"bytes_per_row": arr.nbytes_stored() / n, "write_s": t1 - t0, "read_s": t2 - t1}


def estimate_bytes(data: np.ndarray, choice: CodecChoice, chunk_bytes: int) -> int:
    """Compressed size of `data` under `choice`, computed with numcodecs directly (the same codecs zarr uses,
    without its per-call overhead): chunk by chunk, transposed / split into columns / delta-coded as zarr would."""
    import numcodecs

    if choice.compressor == "zstd":
        comp: Any = numcodecs.Zstd(level=choice.level)
    else:
        shuffle = numcodecs.Blosc.SHUFFLE if choice.compressor == "blosc-shuffle" else numcodecs.Blosc.BITSHUFFLE
        comp = numcodecs.Blosc(cname="zstd", clevel=choice.level, shuffle=shuffle, typesize=data.dtype.itemsize)
    rows = choice.chunks(data.shape, data.dtype.itemsize, chunk_bytes)[0]
    total = 0
    for start in range(0, max(1, len(data)), rows):
        block = data[start : start + rows]
        pieces = [block[:, j] for j in range(block.shape[1])] if choice.layout == "columns" and block.ndim > 1 else [block]
        for piece in pieces:
            piece = np.ascontiguousarray(piece.T if choice.filter == "transpose" else piece)
            if choice.filter == "delta":
                piece = numcodecs.Delta(dtype=piece.dtype).encode(piece)
            total += len(comp.encode(piece)) + CHECKSUM_BYTES
    return total


def choose_codec(
    data: np.ndarray, chunk_bytes: int, level: int = 3, portable: bool = False, sample_rows: int = 1 << 17
) -> CodecChoice:
    """The candidate that stores a sample (the first `sample_rows` rows) of `data` in the fewest bytes."""
    sample = np.ascontiguousarray(data[:sample_rows])
    best: tuple[float, CodecChoice] | None = None
    for cand in candidates_for(data, portable):
        cand = CodecChoice(cand.name, cand.layout, cand.filter, cand.compressor, level)
        size = estimate_bytes(sample, cand, chunk_bytes)
        if best is None or size < best[0] * 0.99:
            best = (size, cand)
    assert best is not None
    return best[1]


def compare_codecs(data: np.ndarray, chunk_bytes: int, level: int = 3) -> list[dict[str, Any]]:
    """The measurement table of every suitable candidate on all of `data` (for benchmarks)."""
    rows = []
    for cand in candidates_for(data):
        cand = CodecChoice(cand.name, cand.layout, cand.filter, cand.compressor, level)
        m = measure(data, cand, chunk_bytes)
        m["estimated_bytes_per_row"] = estimate_bytes(data, cand, chunk_bytes) / max(1, len(data))
        rows.append({"codec": cand.name, "chunk_bytes": chunk_bytes, **{k: round(v, 4) for k, v in m.items()}})
    return rows
