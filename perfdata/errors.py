"""Typed errors. Every error a user can cause is a `PerfdataError`; the CLI prints its message on one line
and exits non-zero (a traceback only with --debug): 2 when the input is at fault (a file, a folder, an option),
1 when the run failed (a transfer, a fit, a full disk). An OSError becomes a `FileSystemError` naming its path
(`from_os_error`, applied once, in `perfdata.cli.main`)."""

from __future__ import annotations

import errno
import os
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

    exit_code = 1


class FitError(PerfdataError):
    """A fit that cannot go on (too few frames, NaN in training, ...)."""

    exit_code = 1


class UnsafePathError(InputError):
    """A path from a listing or archive that would escape its target folder."""


class FileSystemError(PerfdataError):
    """An OSError, named: the path and the problem. `exit_code` 2 when the path given is at fault (permission,
    not a folder, exists, name too long), 1 when the run failed (disk full, I/O error, network)."""

    def __init__(self, path: str | None, problem: str, exit_code: int) -> None:
        self.path, self.problem, self.exit_code = path, problem, exit_code
        super().__init__(problem if path is None else f"{path}: {problem}")


# errno -> (problem, exit code); errors of the input path exit 2, errors of the run exit 1
_OS_PROBLEMS: dict[int, tuple[str, int]] = {
    errno.EACCES: ("permission denied", 2),
    errno.EPERM: ("operation not permitted", 2),
    errno.EROFS: ("read-only file system", 2),
    errno.ENOENT: ("no such file or folder", 2),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", 2),
    errno.EISDIR: ("is a folder, not a file", 2),
    errno.EEXIST: ("already exists", 2),
    errno.ENOTEMPTY: ("folder is not empty", 2),
    errno.ENAMETOOLONG: ("file name too long", 2),
    errno.ELOOP: ("too many levels of symbolic links", 2),
    errno.ENOSPC: ("no space left on device", 1),
    errno.EDQUOT: ("disk quota exceeded", 1),
    errno.EIO: ("input/output error", 1),
    errno.EMFILE: ("too many open files", 1),
}


def from_os_error(exc: OSError) -> FileSystemError:
    """The named error for an OSError (see FileSystemError); the path is the one the OS reported (both of a
    rename), else none."""
    path = None if exc.filename is None else os.fsdecode(exc.filename)
    if path is not None and exc.filename2 is not None:
        path = f"{path} -> {os.fsdecode(exc.filename2)}"
    problem, code = _OS_PROBLEMS.get(exc.errno or -1, (exc.strerror or str(exc) or type(exc).__name__, 1))
    if exc.errno == errno.EEXIST and path is not None and Path(path).is_file():
        problem = "is a file, not a folder"
    if exc.errno not in _OS_PROBLEMS and exc.errno is not None:
        problem = f"{problem} (errno {exc.errno})"
    return FileSystemError(path, problem, code)
