"""What a reader of a shard folder checks against its index.json (see `perfdata.shards` for the format).

    entries = open_shard_set(root)                # every shard of the index's set, present, of the listed size
    stage = shard_samples(entries.values())       # a webdataset stage: {"url": ...} -> samples
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), stage, ...)

`open_shard_set` stats each shard (free) and refuses an index whose shards are not all of its own set, a name
that leaves the folder, a missing shard, a size that differs, or sample counts that do not add up; with
`verify=True` it also hashes every shard. `shard_samples` counts each shard's samples and hashes its bytes as
they stream by, and when a shard has been read through, a count, size or sha256 that differs from index.json is a
ChecksumError naming the shard (after its samples went by: that shard's data is suspect, the run stops).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from perfdata.errors import ChecksumError, InputError
from perfdata.shards import INDEX_NAME, read_index


@dataclass(frozen=True)
class ShardEntry:
    """One shard as index.json lists it, with its path on disk."""

    path: Path
    name: str
    split: str
    samples: int
    bytes: int
    sha256: str


def open_shard_set(root: str | Path, verify: bool = False) -> tuple[dict[str, Any], list[ShardEntry]]:
    """(index, entries) of a shard folder after the checks of the module doc; errors name the file."""
    root = Path(root)
    index = read_index(root)
    where = root / INDEX_NAME
    entries = [_entry(root, shard, index.get("shard_set")) for shard in index["shards"]]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.split] = counts.get(e.split, 0) + e.samples
    listed = {str(k): int(v) for k, v in dict(index["n_samples"]).items()}
    if {k: v for k, v in counts.items() if v} != {k: v for k, v in listed.items() if v}:
        raise InputError(where, f"n_samples {listed} disagrees with the shards' sample counts {counts}")
    for e in entries:
        size = e.path.stat().st_size
        if size != e.bytes:
            raise ChecksumError(e.path, f"is {size} bytes, index.json says {e.bytes} (truncated or replaced)")
        if verify and hash_path(e.path) != e.sha256:
            raise ChecksumError(e.path, "sha256 differs from index.json")
    return index, entries


def _entry(root: Path, shard: Any, shard_set: str | None) -> ShardEntry:
    where = root / INDEX_NAME
    try:
        name, split = str(shard["name"]), str(shard["split"])
        entry = (int(shard["samples"]), int(shard["bytes"]), str(shard["sha256"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"malformed shard entry {shard!r} ({exc})") from None
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise InputError(where, f"shard name {name!r} is not a plain relative path inside the folder")
    if shard_set is not None and (len(parts) != 2 or parts[0] != shard_set):
        raise InputError(where, f"shard {name!r} is not part of the index's shard set {shard_set!r}")
    path = root.joinpath(*parts)
    if not path.is_file():
        raise InputError(path, "shard listed in index.json is missing")
    return ShardEntry(path, name, split, *entry)


def hash_path(path: Path, block: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for data in iter(lambda: fh.read(block), b""):
            sha.update(data)
    return sha.hexdigest()


class _Tally:
    """A read-only file wrapper that hashes and counts every byte read."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.n_bytes = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.n_bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


_BLOCK = 512
_SKIP_META = re.compile(r"__[^/]*__($|/)")
_REGULAR = (b"0", b"\0", b"7")


def _octal(field: bytes) -> int:
    """A tar header number: octal text, or GNU's base-256 (high bit set) for large values."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    """`len key=value\n` records of a pax extended header."""
    out, i = {}, 0
    while i < len(data):
        space = data.index(b" ", i)
        n = int(data[i:space])
        key, _, value = data[space + 1 : i + n - 1].partition(b"=")
        out[key.decode()] = value.decode()
        i += n
    return out


def tar_members(fh: Any) -> Iterator[dict[str, Any]]:
    """{"fname", "data"} of the regular files of an uncompressed tar stream, in order, read straight from its
    512-byte headers: ustar / GNU (perfdata's shards, and most writers'), GNU long names and pax `path` / `size`
    records; other members (directories, links) are skipped, as are webdataset's `__...__` meta names. Reads the
    stream only forward, so `_Tally` sees every byte. About 5x cheaper per member than `tarfile`."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = fh.read(_BLOCK)
        if len(header) < _BLOCK or header == bytes(_BLOCK):
            return
        kind = header[156:157]
        size = int(pax["size"]) if "size" in pax else _octal(header[124:136])
        data = fh.read(size)
        fh.read(-size % _BLOCK)
        if kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode()
            continue
        if kind == b"x":
            pax = _pax_records(data)
            continue
        if kind == b"g":
            continue
        name = header[:100].split(b"\0", 1)[0].decode()
        if header[257:262] == b"ustar" and header[345:346] != b"\0" and header[263:265] == b"00":
            name = header[345:500].split(b"\0", 1)[0].decode() + "/" + name  # POSIX ustar prefix
        name = pax.get("path", long_name or name)
        long_name, pax = None, {}
        if kind in _REGULAR and not _SKIP_META.match(name):
            yield {"fname": name, "data": data}


class _Buffered:
    """A forward-only read(n) over a stream, in large reads (a pipe read 512 bytes at a time costs a system call
    per tar header)."""

    def __init__(self, fh: Any, chunk: int = 1 << 20) -> None:
        self.fh, self.chunk, self.buf, self.pos = fh, chunk, b"", 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            out, self.buf, self.pos = self.buf[self.pos :] + self.fh.read(), b"", 0
            return out
        while len(self.buf) - self.pos < n:
            more = self.fh.read(max(self.chunk, n))
            if not more:
                break
            self.buf, self.pos = self.buf[self.pos :] + more, 0
        out = self.buf[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def peek(self, n: int) -> bytes:
        """The next n bytes (fewer at the end) without consuming them."""
        out = self.read(n)
        self.pos -= len(out)
        return out


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def open_url(url: str) -> Any:
    """A binary read stream of `url`: http(s) streamed in this process (urllib; webdataset's gopen would start a
    curl process per shard, ~10 ms each), any other scheme by webdataset's gopen. An HTTP error is an OSError
    naming the URL."""
    from webdataset.gopen import gopen

    if is_http(url):
        import urllib.error
        import urllib.request

        try:
            return urllib.request.urlopen(url, timeout=60)
        except urllib.error.URLError as exc:
            raise OSError(f"{url}: {exc}") from None
    return gopen(url, "rb")


def http_size(url: str) -> int | None:
    """Content-Length of an http(s) URL from a HEAD request (None when the server sends none); an HTTP error is
    an OSError naming the URL."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.URLError as exc:
        raise OSError(f"{url}: {exc}") from None
    return None if length is None else int(length)


def url_samples(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A webdataset pipeline stage ({"url"} items -> samples grouped by key) for shards behind URLs (http(s)
    and any scheme webdataset's gopen opens): plain ustar / GNU shards read by `tar_members`, others by tarfile;
    used in place of `wds.tarfile_to_samples()` (which parses every header with tarfile)."""
    from webdataset.tariterators import group_by_keys

    def members() -> Iterator[dict[str, Any]]:
        for item in src:
            url = str(item["url"])
            stream = open_url(url)
            try:
                fh = _Buffered(stream)
                for member in _members(fh, fh.peek(_BLOCK)):
                    member["__url__"] = url
                    yield member
            finally:
                stream.close()

    return group_by_keys(members())


def _members(fh: Any, head: bytes) -> Iterator[dict[str, Any]]:
    """The tar members of stream `fh`, whose first bytes are `head`: by `tar_members` when it starts with a
    ustar / GNU header, else (compressed, v7) by webdataset's tarfile-based iterator."""
    from webdataset.tariterators import tar_file_iterator

    plain = len(head) == _BLOCK and head[257:262] == b"ustar"
    return tar_members(fh) if plain else tar_file_iterator(fh)


def checked_files(src: Iterable[dict[str, Any]], entries: dict[str, ShardEntry]) -> Iterator[dict[str, Any]]:
    """{"url"} items -> tar members {"fname", "data", "__url__"}; after each shard, its sample count, size and
    sha256 are compared with index.json (module doc). Plain ustar / GNU shards are read by `tar_members`, any
    other tar (compressed, v7) by webdataset's tarfile-based iterator."""
    from webdataset.tariterators import base_plus_ext

    for item in src:
        url = str(item["url"])
        entry = entries[url]
        n_samples, last = 0, None
        with open(entry.path, "rb") as fh:
            tally = _Tally(fh)
            for member in _members(tally, os.pread(fh.fileno(), _BLOCK, 0)):
                key = base_plus_ext(member["fname"])[0]
                if key != last:
                    n_samples, last = n_samples + 1, key
                member["__url__"] = url
                yield member
            tally.drain()
        problem = _stream_problem(entry, n_samples, tally)
        if problem is not None:
            raise ChecksumError(entry.path, problem)


def _stream_problem(entry: ShardEntry, n_samples: int, tally: _Tally) -> str | None:
    if n_samples != entry.samples:
        return f"holds {n_samples} samples, index.json says {entry.samples}"
    if tally.n_bytes != entry.bytes:
        return f"read {tally.n_bytes} bytes, index.json says {entry.bytes}"
    if tally.sha.hexdigest() != entry.sha256:
        return "sha256 of the bytes read differs from index.json"
    return None


def shard_samples(entries: Iterable[ShardEntry]) -> Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]:
    """A webdataset pipeline stage ({"url": str(entry.path)} items -> samples grouped by key) that checks each
    shard as it streams (module doc); use it in place of `wds.tarfile_to_samples()`."""
    from webdataset.tariterators import group_by_keys

    by_url = {str(e.path): e for e in entries}

    def stage(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return group_by_keys(checked_files(src, by_url))

    return stage


def validate_shards(root: str | Path) -> tuple[str, list[str]]:
    """(summary, problems) for `perfdata validate` on a shard folder: the index checks with sha256, then every
    shard streamed through and its sample count checked. Problems name the file."""
    root = Path(root)
    try:
        index, entries = open_shard_set(root, verify=True)
        by_url = {str(e.path): e for e in entries}
        for _ in checked_files(({"url": url} for url in by_url), by_url):
            pass
    except InputError as exc:
        return f"shards {root}", [str(exc)]
    n = sum(e.samples for e in entries)
    return f"shards {root}: {len(entries)} shards, {n} samples, set {index.get('shard_set', '-')}", []
