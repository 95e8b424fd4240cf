"""The download stage: `download(cfg) -> DownloadResult`.

Plan (list the chosen chunks at the source, check every path), skip files the status manifest records as
verified (or re-hash them with `verify`), fetch the rest in a thread pool through the resumable transfer
engine, record done / failed (with the reason) in `DIR/download_status.json`, optionally extract archives
safely. A failed file never stops the others; at the end any failure raises (ChecksumError when a checksum
was the problem, else DownloadError) after the status is written. Nothing unverified gets a final name.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from perfdata.download.extract import extract_archive, is_archive
from perfdata.download.paths import prune_in_progress, safe_join
from perfdata.download.remote import RemoteFile, TransferConfig
from perfdata.download.sources import HF_ENDPOINT, open_source
from perfdata.download.spec import parse_chunk_spec
from perfdata.download.status import StatusBook
from perfdata.download.transfer import fetch_file, hash_file
from perfdata.errors import ChecksumError, ConfigError, DownloadError, PerfdataError
from perfdata.manifest import load_manifest

MIRROR_ENV = "PERFDATA_MIRROR"
HF_ENDPOINT_ENV = "HF_ENDPOINT"


def default_source() -> str:
    """`$PERFDATA_MIRROR` when set, else `hf`."""
    return os.environ.get(MIRROR_ENV) or "hf"


def default_hf_endpoint() -> str:
    """`$HF_ENDPOINT` when set, else https://huggingface.co."""
    return os.environ.get(HF_ENDPOINT_ENV) or HF_ENDPOINT


@dataclass(frozen=True)
class DownloadConfig:
    """What to download, from where, to where."""

    dataset: str
    """`co3d` or `scannet` (a manifest in perfdata/manifests/)."""
    chunks: str
    """Chunk SPEC: `77`, `[11,22,33]`, `11,22,33`, `10-20`, `all` (ScanNet: chunk N = scans of scene N)."""
    outdir: Path
    """Download folder; files land at `outdir/<repo path>`."""
    source: str = "hf"
    """`hf` (Hugging Face layout at `hf_endpoint`) or a mirror: any fsspec URL or path holding index.json."""
    hf_endpoint: str = HF_ENDPOINT
    """Base URL of the Hub (tests point it at a loopback server)."""
    workers: int = 4
    """Files fetched in parallel."""
    verify: bool = False
    """Re-hash files already on disk instead of trusting the status manifest; re-fetch mismatches."""
    extract: bool = False
    """Extract downloaded archives (zip/tar) safely next to them, once."""
    dry_run: bool = False
    """List and plan only; write nothing."""
    transfer: TransferConfig = field(default_factory=TransferConfig)
    """Retries, timeouts, block size."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download did."""

    chunks: tuple[int, ...]
    n_files: int
    n_fetched: int
    n_skipped: int
    n_failed: int
    bytes_total: int
    """Bytes of all listed files."""
    bytes_transferred: int
    """Bytes received in this run."""
    seconds: float
    status_path: Path
    failures: tuple[tuple[str, str], ...] = ()
    """(path, reason) per failed file."""
    n_extracted: int = 0
    source: str = ""


class Progress(Protocol):
    """Receives the plan and then every received block's size."""

    def start(self, n_files: int, n_bytes: int) -> None: ...

    def advance(self, n_bytes: int) -> None: ...


class DownloadFailed(DownloadError):
    """Some files failed; `result` holds the counts (the status manifest the reasons)."""

    def __init__(self, message: str, result: DownloadResult) -> None:
        super().__init__(message)
        self.result = result


class ChecksumFailed(ChecksumError):
    """Some files failed their checksum; `result` holds the counts."""

    def __init__(self, message: str, result: DownloadResult) -> None:
        super().__init__(result.status_path, message)
        self.result = result


def plan_download(cfg: DownloadConfig) -> tuple[tuple[int, ...], str, list[RemoteFile]]:
    """(chunk ids, source description, files) after listing the chunks and checking every path."""
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {cfg.workers}")
    manifest = load_manifest(cfg.dataset)
    chunk_ids = parse_chunk_spec(cfg.chunks, manifest.n_chunks, cfg.dataset)
    source = open_source(cfg.source, cfg.dataset, cfg.transfer, cfg.hf_endpoint)
    files: dict[str, RemoteFile] = {}
    for chunk_id in chunk_ids:
        listed = source.list_chunk(manifest.chunk(chunk_id))
        if not listed:
            raise DownloadError(f"{source.description}: chunk {chunk_id} of {cfg.dataset} lists no files")
        for remote in listed:
            safe_join(cfg.outdir, remote.path, remote.url)
            files[remote.path] = remote
    return chunk_ids, source.description, sorted(files.values(), key=lambda f: f.path)


def _already_done(remote: RemoteFile, outdir: Path, book: StatusBook, verify: bool) -> bool:
    final = outdir / remote.path
    if not final.is_file() or (remote.size is not None and final.stat().st_size != remote.size):
        return False
    if book.is_done(remote) and not verify:
        return True
    ok = remote.sha256 is None or hash_file(final) == remote.sha256
    if ok:
        book.mark_done(remote, final.stat().st_size)
    return ok


def download(cfg: DownloadConfig, progress: Progress | None = None) -> DownloadResult:
    """Run the download stage (module docstring); return counts or raise after recording failures."""
    t0 = time.perf_counter()
    outdir = Path(cfg.outdir)
    chunk_ids, source, files = plan_download(cfg)
    book = StatusBook.load(outdir)
    todo = [f for f in files if not _already_done(f, outdir, book, cfg.verify)]
    total = sum(f.size or 0 for f in files)
    if cfg.dry_run:
        return DownloadResult(chunk_ids, len(files), 0, len(files) - len(todo), 0, total, 0,
                              time.perf_counter() - t0, book.path, source=source)
    if progress is not None:
        progress.start(len(todo), sum(f.size or 0 for f in todo))
    moved, failures = _fetch_all(todo, outdir, cfg, book, source, progress)
    n_extracted = _extract_all(files, outdir, book, failures) if cfg.extract else 0
    book.save(cfg.dataset, source)
    prune_in_progress(outdir)
    result = DownloadResult(chunk_ids, len(files), len(todo) - len(failures), len(files) - len(todo), len(failures),
                            total, moved, time.perf_counter() - t0, book.path, tuple(failures), n_extracted, source)
    _raise_on_failures(result, failures)
    return result


def _fetch_all(
    todo: list[RemoteFile], outdir: Path, cfg: DownloadConfig, book: StatusBook, source: str,
    progress: Progress | None,
) -> tuple[int, list[tuple[str, str]]]:
    """Fetch in a thread pool; update the status as files finish (saved at most every 2 s, and at the end)."""
    failures: list[tuple[str, str]] = []
    moved = 0
    lock = threading.Lock()
    hook: Callable[[int], None] | None = None
    if progress is not None:
        def hook(n: int) -> None:
            with lock:
                progress.advance(n)

    last_save = time.monotonic()
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="download") as pool:
        futures: dict[Future, RemoteFile] = {pool.submit(fetch_file, f, outdir, cfg.transfer, hook): f for f in todo}
        for future in as_completed(futures):
            remote = futures[future]
            try:
                outcome = future.result()
            except (PerfdataError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                failures.append((remote.path, reason))
                book.mark_failed(remote, reason)
            else:
                moved += outcome.bytes_transferred
                book.mark_done(remote, outcome.path.stat().st_size)
            if time.monotonic() - last_save > 2.0:
                book.save(cfg.dataset, source)
                last_save = time.monotonic()
    return moved, failures


def _extract_all(files: list[RemoteFile], outdir: Path, book: StatusBook, failures: list[tuple[str, str]]) -> int:
    failed = {path for path, _ in failures}
    n = 0
    for remote in files:
        if remote.path in failed or not is_archive(remote.path):
            continue
        try:
            n += not extract_archive(outdir / remote.path, sha256=remote.sha256).skipped
        except PerfdataError as exc:
            reason = f"extraction refused: {type(exc).__name__}: {exc}"
            failures.append((remote.path, reason))
            book.mark_failed(remote, reason)
    return n


def _raise_on_failures(result: DownloadResult, failures: list[tuple[str, str]]) -> None:
    if not failures:
        return
    first_path, first_reason = failures[0]
    message = (f"{len(failures)} of {result.n_files} files failed (see {result.status_path}); "
               f"first: {first_path}: {first_reason}")
    if any(reason.startswith("ChecksumError") for _, reason in failures):
        raise ChecksumFailed(message, result)
    raise DownloadFailed(message, result)
