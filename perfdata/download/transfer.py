"""The transfer engine: one file from a URL to `DIR/<path>`, resumable, retried, verified, renamed atomically.

Bytes stream to `DIR/_in_progress/<path>.part` (with `<path>.part.json` recording what they belong to); a
later attempt or run resumes with an HTTP Range request from the part's length (a server that ignores Range
answers 200 and the part restarts from zero). The sha256 runs over the bytes as they are written (the part's
existing bytes are hashed once on resume). Only a verified file is renamed to its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from perfdata.download.paths import IN_PROGRESS, safe_join
from perfdata.download.remote import RemoteFile, RetryableError, TransferConfig, check_status, thread_session
from perfdata.download.remote import with_retries as _with_retries
from perfdata.errors import ChecksumError, DownloadError

ByteHook = Callable[[int], None]


@dataclass(frozen=True)
class FetchOutcome:
    """What fetching one file did."""

    path: Path
    """Final path."""
    bytes_transferred: int
    """Bytes received in this run (a resumed file counts only the missing part)."""
    resumed_from: int
    """Bytes already on disk when this run started on the file."""
    verified: str
    """"sha256" or "size-only" (no sha256 known)."""


class _Part:
    """The in-progress file of one transfer and the running hash of its bytes."""

    def __init__(self, part: Path, remote: RemoteFile, block: int) -> None:
        self.path, self.meta, self.block = part, part.with_name(part.name + ".json"), block
        part.parent.mkdir(parents=True, exist_ok=True)
        meta = {"url": remote.url, "size": remote.size, "sha256": remote.sha256}
        if not self.meta.exists() or json.loads(self.meta.read_text()) != meta:
            part.unlink(missing_ok=True)  # a part of some other version of the file is useless
            self.meta.write_text(json.dumps(meta))
        self.hasher = hashlib.sha256()
        self.offset = 0
        if part.exists():
            with open(part, "rb") as f:
                while block_data := f.read(block):
                    self.hasher.update(block_data)
                    self.offset += len(block_data)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.hasher, self.offset = hashlib.sha256(), 0

    def append(self, readinto: Callable[[memoryview], int], on_bytes: ByteHook | None) -> int:
        """Read blocks with `readinto` until it returns 0, appending them to the part; a second thread hashes
        written blocks meanwhile (hashlib releases the GIL), so socket, disk and sha256 overlap. Whatever
        happens, the hash covers exactly the bytes written."""
        free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(4):
            free.put(bytearray(self.block))
        written: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        hasher = threading.Thread(target=self._hash_blocks, args=(written, free), daemon=True)
        hasher.start()
        n = 0
        try:
            with open(self.path, "ab") as f:
                while True:
                    buf = free.get()
                    k = readinto(memoryview(buf))
                    if not k:
                        break
                    f.write(memoryview(buf)[:k])
                    written.put((buf, k))
                    self.offset += k
                    n += k
                    if on_bytes is not None:
                        on_bytes(k)
        finally:
            written.put(None)
            hasher.join()
        return n

    def _hash_blocks(self, written: queue.Queue[tuple[bytearray, int] | None], free: queue.Queue[bytearray]) -> None:
        while (item := written.get()) is not None:
            buf, k = item
            self.hasher.update(memoryview(buf)[:k])
            free.put(buf)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def part_path(outdir: Path, remote: RemoteFile) -> Path:
    return safe_join(outdir / IN_PROGRESS, remote.path + ".part", remote.url)


def fetch_file(
    remote: RemoteFile, outdir: Path, cfg: TransferConfig, on_bytes: ByteHook | None = None
) -> FetchOutcome:
    """Download `remote` to `outdir/<remote.path>`; DownloadError after the retries, ChecksumError on a
    mismatch (after one fresh attempt when the mismatch could come from a stale resumed part)."""
    final = safe_join(outdir, remote.path, remote.url)
    part = _Part(part_path(outdir, remote), remote, cfg.block_bytes)
    resumed_from, moved = part.offset, 0
    for fresh in (False, True):
        if fresh:
            part.restart()
        moved += _with_retries(remote.url, lambda: _attempt(remote, part, cfg, on_bytes), cfg)
        problem = _problem(remote, part)
        if problem is None:
            break
        if fresh or resumed_from == 0:
            part.discard()
            raise ChecksumError(final, f"{problem} (downloaded from {remote.url}); nothing was kept")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part.path, final)
    part.meta.unlink(missing_ok=True)
    return FetchOutcome(final, moved, resumed_from, "sha256" if remote.sha256 else "size-only")


def _problem(remote: RemoteFile, part: _Part) -> str | None:
    if remote.size is not None and part.offset != remote.size:
        return f"size {part.offset} bytes, expected {remote.size}"
    if remote.sha256 is not None and part.hasher.hexdigest() != remote.sha256:
        return f"sha256 {part.hasher.hexdigest()}, expected {remote.sha256}"
    return None


def _attempt(remote: RemoteFile, part: _Part, cfg: TransferConfig, on_bytes: ByteHook | None) -> int:
    """One attempt from the part's current offset; RetryableError when the body stops short."""
    if remote.size is not None and part.offset > remote.size:
        part.restart()
    if remote.size is not None and part.offset == remote.size:
        return 0
    if remote.url.startswith(("http://", "https://")):
        moved = _attempt_http(remote, part, cfg, on_bytes)
    else:
        moved = _attempt_fsspec(remote, part, cfg, on_bytes)
    if remote.size is not None and part.offset < remote.size:
        raise RetryableError(f"connection ended at byte {part.offset} of {remote.size}")
    return moved


def _attempt_http(remote: RemoteFile, part: _Part, cfg: TransferConfig, on_bytes: ByteHook | None) -> int:
    headers = {"Accept-Encoding": "identity"}
    if part.offset:
        headers["Range"] = f"bytes={part.offset}-"
    timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
    with thread_session().get(remote.url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416:  # our offset is past the file: start over
            part.restart()
            raise RetryableError(f"HTTP 416 from {remote.url}")
        check_status(response, f"fetching {remote.path}")
        if part.offset and response.status_code != 206:
            part.restart()  # the server ignored Range and sends the whole file
        length = response.headers.get("Content-Length")
        expected_end = part.offset + int(length) if length and length.isdigit() else None
        moved = part.append(_socket_reader(response), on_bytes)
        if expected_end is not None and part.offset < expected_end:
            raise RetryableError(f"connection ended at byte {part.offset} of {expected_end}")
        return moved


def _socket_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """`readinto` straight from the http.client response under urllib3 (no extra copy; the body is not
    decoded, we asked for identity); network errors become RetryableError, naming the cause."""
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    errors = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, requests.RequestException)

    def readinto(view: memoryview) -> int:
        try:
            if fp is not None:
                return fp.readinto(view)
            data = raw.read(len(view), decode_content=False)
            view[: len(data)] = data
            return len(data)
        except errors as exc:
            raise RetryableError(f"connection broke ({type(exc).__name__}: {exc})") from exc

    return readinto


def _attempt_fsspec(remote: RemoteFile, part: _Part, cfg: TransferConfig, on_bytes: ByteHook | None) -> int:
    import fsspec

    try:
        with fsspec.open(remote.url, "rb") as f:
            f.seek(part.offset)
            return part.append(f.readinto, on_bytes)
    except FileNotFoundError as exc:
        raise DownloadError(f"{remote.url}: not found at the mirror") from exc
    except OSError as exc:
        raise RetryableError(f"{remote.url}: {exc}") from exc


def hash_file(path: Path, block: int = 1 << 20) -> str:
    """sha256 hex of a file on disk."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            hasher.update(data)
    return hasher.hexdigest()

