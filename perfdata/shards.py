"""WebDataset shards written deterministically, and their `index.json`.

A shard is a plain tar of samples; a sample is a dot-free key plus members `<key>.<ext>` that sit together.
Every tar header is fixed (mtime `FIXED_MTIME`, uid/gid 0, empty user/group names, mode 0444, GNU format), so
the same samples in the same order give byte-identical shards. A shard is written under a hidden temporary name,
hashed (sha256) while it is written, and renamed to `<split>-NNNNNN.tar` when it is full or the writer closes.

index.json (format_version 1)::

    {"format_version": 1, "classes": [...], "n_samples": {"train": 40, "val": 10},
     "shards": [{"name": "train-000000.tar", "split": "train", "samples": 40, "bytes": 1234, "sha256": "..."}],
     ...extra keys the caller adds (seed, val_fraction, scenes per split)}
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from perfdata.atomic import write_json
from perfdata.errors import ChecksumError, ConfigError, FormatVersionError, InputError

INDEX_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
SHARD_PATTERN = re.compile(r"^(?P<split>[A-Za-z0-9_-]+)-(?P<n>\d{6})\.tar$")
_BLOCK = 512


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard: file name (relative to the shard folder), split, sample count, size and sha256."""

    name: str
    split: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PackConfig:
    """How rendered views are packed into shards (`perfdata pack`, and `perfdata render --shards`)."""

    maxcount: int = 1000
    """At most this many samples per shard."""
    maxsize: int = 1 << 30
    """Roll to a new shard before one would exceed this many bytes."""
    val_fraction: float = 0.1
    """Fraction of scenes (not views) that go to the val split."""
    seed: int = 0
    """Seed of the scene split."""
    split_by: str = "scene"
    """Only "scene": views of one scene never straddle splits."""
    min_psnr: float | None = None
    """Leave out (and list) scenes whose fit psnr is below this, or unknown."""
    dry_run: bool = False
    """Plan only: count scenes and samples, write nothing."""


def sample_key(*parts: str) -> str:
    """A WebDataset key from parts joined by '_': dots (which split key from extension) and slashes become '_'."""
    return "_".join(parts).replace(".", "_").replace("/", "_")


def member_size(n_bytes: int) -> int:
    """Bytes a member of `n_bytes` occupies in a tar: header block plus data padded to 512."""
    return _BLOCK + -(-n_bytes // _BLOCK) * _BLOCK


class _HashingFile:
    """A write-only file wrapper that feeds every byte through sha256 and counts them."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.n_bytes = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.n_bytes += len(data)
        return self.fh.write(data)


class ShardWriter:
    """Writes samples of one split into shards rolled by sample count and by size.

    Use as a context manager. On an exception, the open temporary shard and every shard this writer finished
    are removed, so a failed run leaves no partial output.

    Args:
        out_dir: folder of the shards.
        split: split name, the shard file prefix ("train", "val").
        maxcount: at most this many samples per shard.
        maxsize: a shard is closed before a sample that would take it over this many bytes (a single sample
            larger than maxsize gets a shard of its own).
    """

    def __init__(self, out_dir: str | Path, split: str, maxcount: int = 1000, maxsize: int = 1 << 30) -> None:
        if maxcount < 1 or maxsize < 1:
            raise ConfigError(f"maxcount and maxsize must be positive (got {maxcount}, {maxsize})")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
            raise ConfigError(f"split name {split!r} may only hold letters, digits, '_' and '-'")
        self.out_dir, self.split = Path(out_dir), split
        self.maxcount, self.maxsize = maxcount, maxsize
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._raw: BinaryIO | None = None
        self._hash: _HashingFile | None = None
        self._tmp: Path | None = None
        self._count = 0
        self._size = 0
        self._keys: set[str] = set()

    def __enter__(self) -> ShardWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: `members` maps extension (e.g. "rgb.png", "cls", "json") to bytes, written in the
        order given."""
        if not key or "." in key or "/" in key:
            raise ConfigError(f"sample key {key!r} must be non-empty and contain no '.' or '/'")
        if key in self._keys:
            raise ConfigError(f"sample key {key!r} written twice to split {self.split!r}")
        size = sum(member_size(len(v)) for v in members.values())
        if self._tar is not None and (self._count >= self.maxcount or self._size + size > self.maxsize):
            self._finish()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.add(key)
        self._count += 1
        self._size += size

    def close(self) -> list[ShardInfo]:
        """Finish the open shard; returns every shard written."""
        if self._tar is not None:
            self._finish()
        return list(self.shards)

    def abort(self) -> None:
        """Remove the open temporary shard and the shards already finished."""
        if self._tar is not None:
            with contextlib.suppress(Exception):
                self._tar.close()
            assert self._raw is not None and self._tmp is not None
            self._raw.close()
            self._tmp.unlink(missing_ok=True)
            self._tar = None
        for shard in self.shards:
            (self.out_dir / shard.name).unlink(missing_ok=True)
        self.shards = []

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):06d}.tar"
        self._tmp = self.out_dir / f".{name}.{os.getpid()}.tmp"
        self._raw = open(self._tmp, "wb")  # noqa: SIM115 - closed in _finish / abort
        self._hash = _HashingFile(self._raw)
        self._tar = tarfile.open(fileobj=self._hash, mode="w|", format=tarfile.GNU_FORMAT)  # type: ignore[call-overload]
        self._count = self._size = 0

    def _finish(self) -> None:
        assert self._tar is not None and self._raw is not None and self._hash is not None and self._tmp is not None
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        name = f"{self.split}-{len(self.shards):06d}.tar"
        os.replace(self._tmp, self.out_dir / name)
        self.shards.append(ShardInfo(name, self.split, self._count, self._hash.n_bytes, self._hash.sha.hexdigest()))
        self._tar = self._raw = self._hash = self._tmp = None


def write_index(out_dir: str | Path, shards: list[ShardInfo], classes: list[str], **extra: Any) -> Path:
    """Write `index.json` (atomic) for `shards` and remove shard files of earlier runs that it does not list."""
    out_dir = Path(out_dir)
    n_samples: dict[str, int] = {}
    for s in shards:
        n_samples[s.split] = n_samples.get(s.split, 0) + s.samples
    index = {
        "format_version": INDEX_FORMAT_VERSION,
        "classes": list(classes),
        "n_samples": n_samples,
        "shards": [asdict(s) for s in shards],
        **extra,
    }
    path = out_dir / INDEX_NAME
    write_json(path, index)
    listed = {s.name for s in shards}
    for stale in out_dir.glob("*.tar"):
        if SHARD_PATTERN.match(stale.name) and stale.name not in listed:
            stale.unlink()
    return path


def read_index(out_dir: str | Path) -> dict[str, Any]:
    """Read and check `index.json` of a shard folder (format_version, required keys)."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        raise InputError(path, "no shard index here (expected index.json written by `perfdata pack`)")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read shard index ({exc})") from None
    if not isinstance(index, dict) or index.get("format_version") != INDEX_FORMAT_VERSION:
        found = index.get("format_version") if isinstance(index, dict) else None
        raise FormatVersionError(path, found, INDEX_FORMAT_VERSION)
    for key in ("classes", "n_samples", "shards"):
        if key not in index:
            raise InputError(path, f"shard index lacks {key!r}")
    return index


def verify_shards(out_dir: str | Path) -> dict[str, Any]:
    """Check every shard listed in index.json exists with the recorded size and sha256; returns the index."""
    index = read_index(out_dir)
    for shard in index["shards"]:
        path = Path(out_dir) / shard["name"]
        if not path.is_file():
            raise InputError(path, "shard listed in index.json is missing")
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        if path.stat().st_size != shard["bytes"] or sha.hexdigest() != shard["sha256"]:
            raise ChecksumError(path, "size or sha256 differs from index.json")
    return index
