"""Where files come from: the Hugging Face dataset layout, or a mirror holding an `index.json`.

Hugging Face Hub tree API (the shape the Hub documents and serves, which `HFSource` reads):

    GET {endpoint}/api/datasets/{repo}/tree/main/{path}[?recursive=1]
    -> 200, a JSON list of entries
       {"type": "file" | "directory", "oid": git oid, "size": int, "path": repo-relative path,
        "lfs": {"oid": sha256 hex, "size": int, "pointerSize": int}}   # "lfs" only on LFS files
    Large folders are paginated: the response carries `Link: <next-url>; rel="next"` until the last page.
    File bytes: GET {endpoint}/datasets/{repo}/resolve/main/{path} (may redirect to a CDN; honours Range).

LFS files are verified by sha256 (`lfs.oid`); a non-LFS file has only its git blob oid, so it is checked by
size only and the status manifest says so.

Mirror: any fsspec URL (http(s), s3, file, a plain local path) whose `index.json` is written by
`perfdata mirror index` (see `perfdata.download.mirror`); file URLs are `{mirror}/{path}`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urljoin

import requests

from perfdata.download.paths import check_relative
from perfdata.download.remote import RemoteFile, TransferConfig, check_status, thread_session, with_retries
from perfdata.errors import ConfigError, DownloadError, FormatVersionError
from perfdata.manifest import ChunkEntry

HF_ENDPOINT = "https://huggingface.co"
INDEX_NAME = "index.json"
INDEX_FORMAT_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Source(Protocol):
    """Lists the files of a chunk."""

    @property
    def description(self) -> str: ...

    def list_chunk(self, chunk: ChunkEntry) -> list[RemoteFile]: ...


def open_source(source: str, dataset: str, cfg: TransferConfig, hf_endpoint: str = HF_ENDPOINT) -> Source:
    """`hf` -> HFSource at `hf_endpoint`; anything else is a mirror URL or path."""
    if source == "hf":
        return HFSource(hf_endpoint.rstrip("/"), cfg)
    return MirrorSource.open(source, dataset, cfg)


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face Hub (or anything serving the same tree API, e.g. a loopback test server)."""

    endpoint: str
    cfg: TransferConfig

    @property
    def description(self) -> str:
        return f"hf {self.endpoint}"

    def list_chunk(self, chunk: ChunkEntry) -> list[RemoteFile]:
        if chunk.repo is None:
            raise ConfigError(f"chunk {chunk.id} of this dataset has no Hugging Face repo; it is served by mirrors "
                              "only: pass --source URL")
        if chunk.select is None:
            entries = self.list_tree(chunk.repo, chunk.folder, recursive=True)
        else:
            children = self.list_tree(chunk.repo, chunk.folder, recursive=False)
            entries = []
            for child in children:
                if child["type"] == "directory" and chunk.owns(child["path"] + "/x"):
                    entries += self.list_tree(chunk.repo, child["path"], recursive=True)
        files = [self._remote(chunk, e) for e in entries if e["type"] == "file"]
        return [f for f in files if chunk.owns(f.path)]

    def list_tree(self, repo: str, folder: str, recursive: bool) -> list[dict[str, Any]]:
        """All entries under `folder`, following `rel="next"` pages."""
        url: str | None = f"{self.endpoint}/api/datasets/{repo}/tree/main/{quote(folder)}"
        params = {"recursive": "1"} if recursive else {}
        entries: list[dict[str, Any]] = []
        while url is not None:
            page, url = with_retries(f"listing {url}", functools.partial(self._get_page, url, params), self.cfg)
            params = {}  # the next-page URL carries its own query
            entries += page
        return entries

    def _get_page(self, url: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        timeout = (self.cfg.connect_timeout_s, self.cfg.read_timeout_s)
        response = thread_session().get(url, params=params, timeout=timeout)
        check_status(response, "tree listing")
        try:
            page = response.json()
        except ValueError as exc:
            raise DownloadError(f"{response.url}: tree listing is not JSON: {exc}") from exc
        if not isinstance(page, list):
            raise DownloadError(f"{response.url}: tree listing is not a JSON list")
        entries = [_check_entry(e, response.url) for e in page]
        nxt = response.links.get("next", {}).get("url")
        return entries, None if nxt is None else urljoin(response.url, nxt)

    def _remote(self, chunk: ChunkEntry, entry: dict[str, Any]) -> RemoteFile:
        lfs = entry.get("lfs") or {}
        url = f"{self.endpoint}/datasets/{chunk.repo}/resolve/main/{quote(entry['path'])}"
        return RemoteFile(entry["path"], url, entry["size"], lfs.get("oid"), chunk.id)


def _check_entry(entry: Any, url: str) -> dict[str, Any]:
    ok = (
        isinstance(entry, dict)
        and entry.get("type") in ("file", "directory")
        and isinstance(entry.get("path"), str)
        and (entry["type"] == "directory" or isinstance(entry.get("size"), int))
    )
    if not ok:
        raise DownloadError(f"{url}: malformed tree entry {str(entry)[:200]}")
    check_relative(entry["path"], url)
    lfs = entry.get("lfs")
    if lfs is not None and not (isinstance(lfs, dict) and _SHA256_RE.match(str(lfs.get("oid", "")))):
        raise DownloadError(f"{url}: entry {entry['path']!r} has a malformed lfs.oid (expected sha256 hex)")
    return entry


@dataclass(frozen=True)
class MirrorSource:
    """A mirror: `{url}/index.json` lists, per chunk, path, size and sha256 of every file."""

    url: str
    dataset: str
    chunks: dict[str, list[dict[str, Any]]]

    @property
    def description(self) -> str:
        return f"mirror {self.url}"

    @classmethod
    def open(cls, url: str, dataset: str, cfg: TransferConfig | None = None) -> MirrorSource:
        """Read and check `{url}/index.json`: over http(s) with requests (retried), else through fsspec."""
        base = url.rstrip("/")
        index_url = f"{base}/{INDEX_NAME}"
        try:
            if base.startswith(("http://", "https://")):
                raw = with_retries(index_url, lambda: _get_json(index_url, cfg or TransferConfig()), cfg or TransferConfig())
            else:
                raw = _read_json_fsspec(index_url)
        except (OSError, ValueError, requests.RequestException) as exc:
            raise DownloadError(f"{index_url}: cannot read the mirror index: {exc}") from exc
        except DownloadError as exc:
            raise DownloadError(f"{index_url}: cannot read the mirror index: {exc}") from exc
        return cls(base, dataset, validate_index(raw, index_url, dataset))

    def list_chunk(self, chunk: ChunkEntry) -> list[RemoteFile]:
        entries = self.chunks.get(str(chunk.id))
        if entries is None:
            raise DownloadError(f"{self.url}/{INDEX_NAME}: the mirror has no chunk {chunk.id} of {self.dataset}")
        web = self.url.startswith(("http://", "https://"))
        return [
            RemoteFile(e["path"], f"{self.url}/{quote(e['path']) if web else e['path']}", e["size"], e["sha256"], chunk.id)
            for e in entries
        ]


def _get_json(url: str, cfg: TransferConfig) -> Any:
    response = thread_session().get(url, timeout=(cfg.connect_timeout_s, cfg.read_timeout_s))
    check_status(response, "mirror index")
    return response.json()


def _read_json_fsspec(url: str) -> Any:
    import fsspec

    try:
        with fsspec.open(url, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        raise
    except Exception as exc:  # s3fs & co. raise their own types; report them as I/O errors
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def validate_index(raw: Any, where: str, dataset: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Check a mirror index: {format_version, dataset, chunks: {"<id>": [{path, size, sha256}]}}."""
    if not isinstance(raw, dict) or not isinstance(raw.get("chunks"), dict):
        raise DownloadError(f"{where}: not a perfdata mirror index (no 'chunks' object)")
    if raw.get("format_version") != INDEX_FORMAT_VERSION:
        raise FormatVersionError(where, raw.get("format_version"), INDEX_FORMAT_VERSION)
    if dataset is not None and raw.get("dataset") != dataset:
        raise DownloadError(f"{where}: the mirror holds dataset {raw.get('dataset')!r}, not {dataset!r}")
    for key, files in raw["chunks"].items():
        if not key.isdigit() or not isinstance(files, list):
            raise DownloadError(f"{where}: chunk {key!r} is not a number with a list of files")
        for entry in files:
            ok = isinstance(entry, dict) and isinstance(entry.get("path"), str)
            ok = ok and isinstance(entry.get("size"), int) and _SHA256_RE.match(str(entry.get("sha256", ""))) is not None
            if not ok:
                raise DownloadError(f"{where}: malformed entry in chunk {key}: {str(entry)[:200]}")
            check_relative(entry["path"], where)
    return raw["chunks"]
