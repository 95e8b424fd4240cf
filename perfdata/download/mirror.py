"""Mirrors: `index_directory` writes `index.json` for a folder laid out like a dataset repo, and
`serve_directory` serves a folder over HTTP/1.1 with Range support (for labs, the demo and the tests).

`index.json`: {"format_version": 1, "dataset": "co3d", "chunks": {"77": [{"path", "size", "sha256"}, ...]}}
with paths relative to the mirror root. A downloaded folder is itself a valid mirror once indexed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from perfdata.atomic import write_json
from perfdata.download.paths import IN_PROGRESS, STATUS_NAME
from perfdata.download.sources import INDEX_FORMAT_VERSION, INDEX_NAME
from perfdata.download.transfer import hash_file
from perfdata.errors import InputError
from perfdata.manifest import DATASETS, Manifest, load_manifest

log = logging.getLogger(__name__)
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _data_files(root: Path) -> list[str]:
    """Repo-relative paths of the files to index: no dot-files, bookkeeping or the index itself."""
    found = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (rel == Path(".") and d == IN_PROGRESS))
        for name in sorted(files):
            if name.startswith(".") or (rel == Path(".") and name in (INDEX_NAME, STATUS_NAME)):
                continue
            found.append((rel / name).as_posix())
    return found


def _guess_dataset(root: Path, paths: list[str]) -> Manifest:
    for name in DATASETS:
        manifest = load_manifest(name)
        if paths and all(manifest.chunk_of_path(p) is not None for p in paths[:50]):
            return manifest
    raise InputError(root, "cannot tell the dataset from the layout (CO3D: NN/..., ScanNet: "
                     "plenoxel_scannet_sceneNNNN_YY/...); pass --dataset")


def index_directory(root: Path, dataset: str | None = None, on_file: Callable[[str], None] | None = None) -> Path:
    """Hash every data file under `root` and write `root/index.json` (atomically); return its path.

    A file that belongs to no chunk of the dataset is an InputError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    paths = _data_files(root)
    manifest = load_manifest(dataset) if dataset else _guess_dataset(root, paths)
    chunks: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        chunk = manifest.chunk_of_path(path)
        if chunk is None:
            raise InputError(root / path, f"belongs to no chunk of {manifest.dataset}")
        entry = {"path": path, "size": (root / path).stat().st_size, "sha256": hash_file(root / path)}
        chunks.setdefault(str(chunk), []).append(entry)
        if on_file is not None:
            on_file(path)
    index = {"format_version": INDEX_FORMAT_VERSION, "dataset": manifest.dataset,
             "chunks": dict(sorted(chunks.items(), key=lambda kv: int(kv[0])))}
    write_json(root / INDEX_NAME, index)
    return root / INDEX_NAME


class MirrorHTTPServer(ThreadingHTTPServer):
    """Serves `root`; counts the body bytes it sends (`bytes_sent`, per path in `sent_by_path`).
    As a context manager its exit stops the serving thread and closes the socket."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], root: Path) -> None:
        super().__init__(address, handler)
        self.root = Path(root).resolve()
        self.lock = threading.Lock()
        self.sent_by_path: Counter[str] = Counter()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header) per GET
        self.thread: threading.Thread | None = None

    @property
    def bytes_sent(self) -> int:
        with self.lock:
            return sum(self.sent_by_path.values())

    def count(self, path: str, n: int) -> None:
        with self.lock:
            self.sent_by_path[path] += n

    def __exit__(self, *args: object) -> None:
        self.shutdown()
        self.server_close()


class RangeRequestHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under the server's root, with single `Range: bytes=a-b` requests (206/416)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK would stall ~40 ms each
    server: MirrorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        target = self.resolve(rel)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such file")
            return
        with self.server.lock:
            self.server.requests.append((rel, self.headers.get("Range")))
        size = target.stat().st_size
        span = self.parse_range(size)
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span
        partial = (start, end) != (0, size)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/json" if rel.endswith(".json") else "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if not head:
            self.send_body(target, rel, start, end)

    def resolve(self, rel: str) -> Path | None:
        """The file under the server's root that `rel` names, or None: outside the root, not a file, or a name the
        file system refuses (a NUL byte, too long)."""
        if "\x00" in rel:
            return None
        try:
            target = (self.server.root / rel).resolve()
            return target if target.is_relative_to(self.server.root) and target.is_file() else None
        except (OSError, ValueError):
            return None

    def parse_range(self, size: int) -> tuple[int, int] | None:
        """(start, end) of the body to send, end exclusive; None when the Range cannot be satisfied."""
        header = self.headers.get("Range")
        match = _RANGE_RE.match(header.strip()) if header else None
        if match is None or match.groups() == ("", ""):
            return 0, size  # no Range (or one we do not understand): the whole file
        first, last = match.groups()
        if first == "":
            return max(0, size - int(last)), size
        start, end = int(first), min(size, int(last) + 1) if last else size
        return (start, end) if start < end else None

    def send_body(self, target: Path, rel: str, start: int, end: int) -> None:
        with open(target, "rb") as f:
            try:
                sent = self.connection.sendfile(f, start, end - start)
            except (BrokenPipeError, ConnectionResetError):
                return
            self.server.count(rel, sent)


def serve_directory(
    root: Path | str, host: str = "127.0.0.1", port: int = 0,
    handler: type[BaseHTTPRequestHandler] = RangeRequestHandler,
) -> tuple[MirrorHTTPServer, str]:
    """Start serving `root` in a daemon thread; return (server, base URL). Stop it with `with server:` or
    `server.shutdown(); server.server_close()`. Port 0 picks a free port."""
    server = MirrorHTTPServer((host, port), handler, Path(root))
    thread = threading.Thread(target=server.serve_forever, name=f"mirror-{server.server_port}", daemon=True)
    server.thread = thread
    thread.start()
    return server, f"http://{host}:{server.server_port}"
