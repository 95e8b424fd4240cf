"""Typed errors. Every error a user can cause is a `PerfdataError`; the CLI prints its message on one line
and exits non-zero (a traceback only with --debug)."""

from __future__ import annotations

from pathlib import Path


class PerfdataError(Exception):
    """Base class of the errors perfdata raises on purpose."""

    exit_code = 2


class InputError(PerfdataError):
    """Bad input data: names the offending file (or folder) and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ConfigError(PerfdataError):
    """A bad option, config file or argument combination."""


class FormatVersionError(InputError):
    """A file written by an unknown (usually newer) format version."""

    def __init__(self, path: str | Path | None, found: object, supported: object) -> None:
        super().__init__(
            path, f"format_version {found!r} is not supported (this perfdata reads {supported!r}); upgrade perfdata"
        )


class ChecksumError(InputError):
    """A file whose sha256 (or size) disagrees with what its manifest or index says."""


class DownloadError(PerfdataError):
    """A source that cannot be reached or a transfer that failed after its retries."""


class FitError(PerfdataError):
    """A fit that cannot go on (too few frames, NaN in training, ...)."""


class UnsafePathError(InputError):
    """A path from a listing or archive that would escape its target folder."""
