"""What a source lists (`RemoteFile`), how transfers are tuned (`TransferConfig`), and the retry loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from perfdata.errors import DownloadError

log = logging.getLogger(__name__)
T = TypeVar("T")
_USER_AGENT = "perfdata-download/1"


@dataclass(frozen=True)
class RemoteFile:
    """One file a source offers."""

    path: str
    """Repo-relative POSIX path; also its path under the download folder."""
    url: str
    """Where to fetch it (http(s) or any fsspec URL)."""
    size: int | None
    """Bytes, when the listing says."""
    sha256: str | None
    """Hex sha256 (Hugging Face LFS oid, mirror index); None for non-LFS files, which are checked by size only."""
    chunk: int
    """The chunk it belongs to."""


@dataclass(frozen=True)
class TransferConfig:
    """Retries, timeouts and buffer sizes of the transfer engine."""

    retries: int = 5
    """Extra attempts after the first, for connection errors, timeouts, 429 and 5xx answers."""
    backoff_s: float = 0.5
    """First wait between attempts; doubles each time."""
    backoff_max_s: float = 30.0
    """Longest wait between attempts."""
    connect_timeout_s: float = 10.0
    """Seconds to open a connection."""
    read_timeout_s: float = 60.0
    """Seconds without a byte before an attempt is abandoned."""
    block_bytes: int = 1 << 20
    """Read/write block size."""


class RetryableError(Exception):
    """A failure worth another attempt (the connection, a timeout, a 5xx or 429 answer, a short body)."""


def backoff_delay(cfg: TransferConfig, attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1` (exponential, capped)."""
    return min(cfg.backoff_max_s, cfg.backoff_s * (2.0**attempt))


def with_retries(what: str, fn: Callable[[], T], cfg: TransferConfig) -> T:
    """Call `fn` until it succeeds; RetryableError (and requests' connection errors) trigger a back-off and a
    new attempt, up to `cfg.retries` extra ones; then DownloadError naming `what` and the last reason."""
    last: Exception | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            delay = backoff_delay(cfg, attempt - 1)
            log.info("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, last, delay)
            time.sleep(delay)
        try:
            return fn()
        except (RetryableError, requests.ConnectionError, requests.Timeout) as exc:
            last = exc
    raise DownloadError(f"{what}: failed after {cfg.retries + 1} attempts: {last}")


_sessions = threading.local()


def thread_session() -> requests.Session:
    """One requests.Session per thread (sessions are not thread-safe), so connections are reused."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = _USER_AGENT
        _sessions.session = session
    return session


def check_status(response: requests.Response, what: str) -> None:
    """429/5xx -> RetryableError; other 4xx -> DownloadError (a retry would not help)."""
    code = response.status_code
    if code == 429 or code >= 500:
        raise RetryableError(f"HTTP {code} from {response.url}")
    if code >= 400:
        raise DownloadError(f"{what}: HTTP {code} {response.reason} from {response.url}")
