"""Atomic writes: everything a user or a later stage reads is written under a temporary name and renamed.

Temporary names are hidden siblings (`.<final name>.<16 hex>.tmp[suffix]`), which every reader skips. They are
created the way ordinary files are (`open` with mode 0666, `mkdir` with 0777), so the final file gets the
user's umask (0644 / 0755 by default) and can be shared on a cluster, unlike `tempfile`'s private 0600 / 0700.
An OSError that does not say which file it is about (a full disk reports only errno 28) is given the final
path, so the CLI can name it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def tmp_name(final: Path, suffix: str = "") -> Path:
    """A fresh hidden sibling name of `final` (not created)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(8)}{TMP_SUFFIX}{suffix}")


def _create_file(final: Path, suffix: str) -> Path:
    while True:
        path = tmp_name(final, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def _create_dir(like: Path) -> Path:
    while True:
        path = tmp_name(like)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def name_os_error(exc: OSError, path: str | Path) -> OSError:
    """Give `exc` a file name when it has none (e.g. ENOSPC from a write); returns it for re-raising."""
    if not exc.filename and exc.errno is not None:
        exc.filename = str(path)
    return exc


def remove_path(path: str | Path) -> None:
    """Remove a file, link or folder tree; absent is fine."""
    _remove(Path(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is renamed to `final`, on error removed.

    The temporary name keeps `final`'s suffix so libraries that choose a format by extension still work.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_file(final, final.suffix)
    except OSError as exc:
        raise name_os_error(exc, final) from None
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            name_os_error(exc, final)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | Path, tmp_like: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` whole, on error it is removed.

    An existing `final` is first renamed to a hidden name and removed after the switch, so `final` is never
    half old, half new. `tmp_like` (default `final`) names the temporary folders after itself, in its own parent
    folder (on the same file system as `final`): a zarr store keeps them out of its hierarchy that way."""
    final = Path(final)
    like = final if tmp_like is None else Path(tmp_like)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_dir(like)
    except OSError as exc:
        raise name_os_error(exc, final) from None
    try:
        yield tmp
        old = None
        if final.exists() or final.is_symlink():
            old = tmp_name(like, ".old")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            _remove(old)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            name_os_error(exc, final)
        raise


@contextlib.contextmanager
def removed_on_error(path: str | Path | None) -> Iterator[None]:
    """Remove `path` (a file or folder) when the block raises and `path` did not exist before it: a run that
    crashes (a full disk) leaves no partial output behind. None: do nothing (e.g. a remote store)."""
    existed = path is None or os.path.lexists(path)
    try:
        yield
    except BaseException:
        if not existed:
            _remove(Path(path))  # type: ignore[arg-type]
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON (atomically). NaN and infinities, which JSON cannot hold, are written as null."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float (also inside lists, tuples, dicts, numpy values) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if type(obj).__module__ == "numpy":
        return finite_json(_json_default(obj))
    return obj


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def remove_stale(parent: str | Path, name: str) -> list[Path]:
    """Remove the temporaries (`.<name>.*.tmp*`) that a killed writer of `parent/name` left behind. Call it only
    while holding the item's lock (`perfdata.markers.Markers.lock`), so no live writer owns them."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]+\.tmp(\..*)?")  # mkstemp/mkdtemp names have no dots
    for stale in Path(parent).glob(f".{glob.escape(name)}.*.tmp*"):
        if not pattern.fullmatch(stale.name):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed

