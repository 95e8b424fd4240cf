"""WebDataset shards written deterministically as atomic shard sets, their `index.json`, and the checks readers
make against it.

A shard is a plain tar of samples; a sample is a dot-free key plus members `<key>.<ext>` that sit together.
Every tar header is fixed (mtime `FIXED_MTIME`, uid/gid 0, empty user/group names, mode 0444, GNU format), so
the same samples in the same order give byte-identical shards. A shard is hashed (sha256) while it is written.

A shard set (`ShardSet`) is written whole into a hidden staging folder of the shard folder, renamed to
`set-<digest>/` (the digest of its shards' names and sha256s, so a rerun giving the same shards gives the same
name), and only then does index.json switch to it, atomically; shards of earlier sets are removed after that.
A reader therefore never sees an index whose shards are not all its own, whatever is killed when::

    OUT/index.json
    OUT/set-3f2a9c0d1e4b5a6c/train-000000.tar ...

index.json (format_version 1)::

    {"format_version": 1, "shard_set": "set-3f2a...", "classes": [...], "n_samples": {"train": 40, "val": 10},
     "shards": [{"name": "set-3f2a.../train-000000.tar", "split": "train", "samples": 40, "bytes": 1234,
                 "sha256": "..."}],
     ...extra keys the caller adds (seed, val_fraction, scenes per split)}

Readers (`open_shard_set`, `shard_samples`) check, always: every listed shard belongs to the index's set, exists
and has the listed size (a stat: free); while streaming, each shard's sample count, size and sha256 (hashed as
it is read) once the shard is read through. `verify=True` also hashes every shard before the first sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from perfdata.atomic import name_os_error, tmp_name, write_json
from perfdata.errors import ConfigError, FormatVersionError, InputError
from perfdata.names import check_scene_id

INDEX_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
SHARD_PATTERN = re.compile(r"^(?P<split>[A-Za-z0-9_-]+)-(?P<n>\d{6})\.tar$")
SET_PATTERN = re.compile(r"^set-[0-9a-f]{16}$")
STAGING_PREFIX = ".pack-"
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
    """Seed of the scene split and of the sample order (`mix_bytes`)."""
    mix_bytes: int = 1 << 30
    """Samples of a split pass a seeded shuffle buffer of this many bytes on their way into the shards
    (ShardWriter), so each shard mixes many scenes and classes instead of holding a few scenes in sorted order
    (a loader's shuffle buffer then sees a mix; with class-sorted shards, batches hold two or three classes).
    0: scene order."""
    split_by: str = "scene"
    """Only "scene": views of one scene never straddle splits."""
    min_psnr: float | None = None
    """Leave out (and list) scenes whose fit psnr is below this, or unknown."""
    dry_run: bool = False
    """Plan only: count scenes and samples, write nothing."""


def sample_key(scene_id: str, *parts: str) -> str:
    """A WebDataset key `<scene_id>_<part>...`: dots (which split key from extension) and slashes become '_'.
    The scene id must pass the safe-name rule (perfdata.names)."""
    check_scene_id(scene_id)
    return "_".join((scene_id, *parts)).replace(".", "_").replace("/", "_")


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
        mix_bytes: samples wait in a seeded shuffle buffer of up to this many bytes before they are written
            (each time the buffer is over, a sample drawn from it at random goes out; `close` writes the rest in
            random order), so a shard mixes the scenes (and classes) that arrive in order; with a buffer larger
            than the split, the written order is a uniform permutation. 0: samples go out in the order given.
        seed: seed of the buffer's draws (with the split name); the same samples in the same order, with the
            same seed and mix_bytes, give the same shards.
    """

    def __init__(self, out_dir: str | Path, split: str, maxcount: int = 1000, maxsize: int = 1 << 30,
                 mix_bytes: int = 0, seed: int = 0) -> None:
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
        self.mix_bytes = mix_bytes
        self._buffer: list[tuple[str, Mapping[str, bytes], int]] = []
        self._buffered = 0
        self._rng = random.Random(f"{seed}/{split}")

    def __enter__(self) -> ShardWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            if isinstance(ev, OSError):  # a full disk reports no path: name the shard being written
                name_os_error(ev, self.out_dir / f"{self.split}-{len(self.shards):06d}.tar")
            self.abort()

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: `members` maps extension (e.g. "rgb.png", "cls", "json") to bytes, written in the
        order given (through the shuffle buffer when mix_bytes > 0)."""
        if not key or "." in key or "/" in key:
            raise ConfigError(f"sample key {key!r} must be non-empty and contain no '.' or '/'")
        if key in self._keys:
            raise ConfigError(f"sample key {key!r} written twice to split {self.split!r}")
        self._keys.add(key)
        size = sum(member_size(len(v)) for v in members.values())
        if self.mix_bytes <= 0:
            self._emit(key, members, size)
            return
        self._buffer.append((key, members, size))
        self._buffered += size
        while self._buffered > self.mix_bytes and self._buffer:
            self._emit_random()

    def _emit_random(self) -> None:
        """Write a sample drawn at random from the buffer (the last one moves into its place)."""
        i = self._rng.randrange(len(self._buffer))
        self._buffer[i], self._buffer[-1] = self._buffer[-1], self._buffer[i]
        key, members, size = self._buffer.pop()
        self._buffered -= size
        self._emit(key, members, size)

    def _emit(self, key: str, members: Mapping[str, bytes], size: int) -> None:
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
        self._count += 1
        self._size += size

    def close(self) -> list[ShardInfo]:
        """Write what the shuffle buffer holds, finish the open shard; returns every shard written."""
        while self._buffer:
            self._emit_random()
        if self._tar is not None:
            self._finish()
        return list(self.shards)

    def abort(self) -> None:
        """Remove the open temporary shard and the shards already finished (and drop the buffer)."""
        self._buffer, self._buffered = [], 0
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
    """Write `index.json` (atomic) for `shards` (names relative to `out_dir`), then remove the shard sets and
    flat shard files of earlier runs that it does not list. Prefer `ShardSet`, which calls this last."""
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
    sets = {name.split("/", 1)[0] for name in listed if "/" in name}
    for stale in out_dir.iterdir():
        if SHARD_PATTERN.match(stale.name) and stale.name not in listed and stale.is_file():
            stale.unlink()
        elif SET_PATTERN.match(stale.name) and stale.name not in sets and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return path


class ShardSet:
    """Writes one shard set atomically into `out_dir` (module doc). Use as a context manager::

        with ShardSet(out_dir) as shard_set:
            with shard_set.writer("train", maxcount) as w:
                w.write(key, members)
            index_path, shards = shard_set.commit(classes, seed=0)

    Leaving the block without `commit` (an exception, a kill) removes the staging folder, and `out_dir` too when
    this set created it and it is still empty; staging folders of dead processes are removed on the next run.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.staging: Path | None = None
        self.writers: list[ShardWriter] = []
        self._created = False
        self._committed = False

    def __enter__(self) -> ShardSet:
        self._created = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_dead_staging(self.out_dir)
            self.staging = tmp_name(self.out_dir / f"{STAGING_PREFIX[1:]}{socket.gethostname()}-{os.getpid()}")
            self.staging.mkdir()
        except OSError as exc:
            raise name_os_error(exc, self.out_dir) from None
        return self

    def writer(self, split: str, maxcount: int = 1000, maxsize: int = 1 << 30, mix_bytes: int = 0,
               seed: int = 0) -> ShardWriter:
        """A writer of one split's shards into the staging folder (arguments: ShardWriter's)."""
        assert self.staging is not None, "use ShardSet as a context manager"
        writer = ShardWriter(self.staging, split, maxcount, maxsize, mix_bytes, seed)
        self.writers.append(writer)
        return writer

    def adopt(self, shard: ShardInfo) -> ShardInfo:
        """Bring a shard of the current set (`set-.../<name>`, as index.json lists it) into this one, by a hard
        link (a copy where links are not possible): a split kept from an earlier run. Returns it as staged."""
        assert self.staging is not None, "use ShardSet as a context manager"
        source, target = self.out_dir / shard.name, self.staging / Path(shard.name).name
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return dataclasses.replace(shard, name=target.name)

    def commit(self, classes: list[str], shards: list[ShardInfo] | None = None,
               **extra: Any) -> tuple[Path, list[ShardInfo]]:
        """Finish every writer, rename the staging folder to `set-<digest>/` and switch index.json to it.
        `shards` (names relative to the staging folder) replaces the writers' own list where other processes
        wrote into `staging` (the per-split runner items of `perfdata pack`)."""
        assert self.staging is not None, "use ShardSet as a context manager"
        written = [s for w in self.writers for s in w.close()]
        shards = written if shards is None else shards
        digest = hashlib.sha256(json.dumps([[s.name, s.sha256] for s in shards]).encode()).hexdigest()
        name = f"set-{digest[:16]}"
        final = self.out_dir / name
        with _locked(self.out_dir):
            if final.exists():  # the same shards again (a rerun): replace them whole
                old = tmp_name(final, ".old")
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(self.staging, final)
            self.staging = None
            listed = [dataclasses.replace(s, name=f"{name}/{s.name}") for s in shards]
            path = write_index(self.out_dir, listed, classes, shard_set=name, **extra)
        self._committed = True
        return path, listed

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(ev, OSError):
            name_os_error(ev, self.out_dir)  # a full disk reports no path: name the shard folder
        if self._committed:
            return
        for writer in self.writers:
            writer.abort()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._created:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only when empty


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` itself (no lock file is left behind): one index switch at a time."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_dead_staging(out_dir: Path) -> list[Path]:
    """Remove staging folders `.pack-<host>-<pid>-*` of this host whose process is gone (killed runs)."""
    removed = []
    host = socket.gethostname()
    for path in out_dir.glob(f"{STAGING_PREFIX}*"):
        match = re.match(rf"^{re.escape(STAGING_PREFIX)}(?P<host>.+)-(?P<pid>\d+)\.", path.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """Check every shard listed in index.json: of the index's set, present, with the recorded size and sha256;
    returns the index (see perfdata.shardcheck)."""
    from perfdata.shardcheck import open_shard_set

    return open_shard_set(out_dir, verify=True)[0]
