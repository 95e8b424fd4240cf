"""Checks on paths that come from remote listings and archives: none may escape its target folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from perfdata.errors import UnsafePathError

IN_PROGRESS = "_in_progress"
STATUS_NAME = "download_status.json"


def check_relative(path: str, origin: str) -> str:
    """Return `path` if it is a clean relative POSIX path; else UnsafePathError naming `origin`.

    Refused: empty, absolute (`/x`, `C:x`, `\\\\x`), backslashes, NUL, `.`/`..` components, empty components.
    """
    problem = None
    if not path or "\x00" in path:
        problem = "is empty or holds a NUL byte"
    elif path.startswith("/") or "\\" in path or (len(path) > 1 and path[1] == ":"):
        problem = "is absolute or uses backslashes"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    elif path.split("/", 1)[0] == IN_PROGRESS or path == STATUS_NAME:
        problem = "collides with perfdata's own bookkeeping files"
    if problem:
        raise UnsafePathError(origin, f"refusing path {path!r}: it {problem}")
    return path


def safe_join(root: Path, path: str, origin: str) -> Path:
    """`root / path` after `check_relative`, also refusing a result that resolves outside `root`."""
    check_relative(path, origin)
    target = root.joinpath(*PurePosixPath(path).parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePathError(origin, f"refusing path {path!r}: it resolves outside {root}")
    return target


def prune_in_progress(outdir: Path) -> None:
    """Remove the empty folders under `outdir/_in_progress` (bottom up), and it too when empty: a finished
    download leaves no bookkeeping folder behind; parts of unfinished files (resumable) stay."""
    top = Path(outdir) / IN_PROGRESS
    if not top.is_dir():
        return
    for folder, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(folder)  # only succeeds when empty
        except OSError:
            pass
