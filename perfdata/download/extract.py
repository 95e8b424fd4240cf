"""Safe archive extraction (zip, tar, tar.gz/bz2/xz).

Every member is checked before anything is written: no absolute paths, no `..`, no device or FIFO members,
no symbolic or hard link whose target leaves the destination. Members are extracted into a temporary folder
beside the destination and moved into place, then `.<archive name>.extracted` (holding the archive's sha256)
is written; while it matches, the archive is not extracted again.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from perfdata.atomic import write_json
from perfdata.download.paths import check_relative
from perfdata.download.transfer import hash_file
from perfdata.errors import InputError, UnsafePathError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class ExtractResult:
    archive: Path
    n_members: int
    skipped: bool
    """True when the marker showed the archive already extracted."""


def is_archive(path: Path | str) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def marker_path(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}.extracted")


def extract_archive(archive: Path, dest: Path | None = None, sha256: str | None = None) -> ExtractResult:
    """Extract `archive` into `dest` (default: its folder) unless its marker says it already was."""
    dest = archive.parent if dest is None else dest
    marker = marker_path(archive)
    digest = sha256 or hash_file(archive)
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == digest:
        return ExtractResult(archive, 0, True)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=dest))
    try:
        n = _extract_zip(archive, tmp) if archive.name.lower().endswith(".zip") else _extract_tar(archive, tmp)
        for entry in sorted(os.listdir(tmp)):
            target = dest / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(tmp / entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(marker, {"archive": archive.name, "sha256": digest, "members": n})
    return ExtractResult(archive, n, False)


def _check_member(archive: Path, name: str, link: str | None = None) -> None:
    """Refuse a member name that escapes, and a link whose target (relative to the member) escapes."""
    clean = name.rstrip("/")
    origin = f"{archive} member {name!r}"
    if not clean:
        raise UnsafePathError(origin, "empty member name")
    check_relative(clean if not clean.startswith("./") else clean[2:], origin)
    if link is not None:
        if link.startswith("/") or "\\" in link:
            raise UnsafePathError(origin, f"link target {link!r} is absolute")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(clean), link))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafePathError(origin, f"link target {link!r} leaves the extraction folder")


def _extract_zip(archive: Path, dest: Path) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            links = {}
            for info in members:
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                link = zf.read(info).decode("utf-8", "replace") if is_link else None
                _check_member(archive, info.filename, link)
                if link is not None:
                    links[info.filename] = link
            for info in members:
                if info.filename in links:
                    target = dest.joinpath(*info.filename.split("/"))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(links[info.filename], target)
                else:
                    zf.extract(info, dest)
            return len(members)
    except zipfile.BadZipFile as exc:
        raise InputError(archive, f"not a valid zip archive: {exc}") from exc


def _extract_tar(archive: Path, dest: Path) -> int:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise UnsafePathError(f"{archive} member {m.name!r}", "device, FIFO or other special member")
                link = None
                if m.issym():
                    link = m.linkname
                elif m.islnk():  # a hard link's target is relative to the archive root
                    _check_member(archive, m.linkname)
                _check_member(archive, m.name, link)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; every member was checked above
                tf.extractall(dest, members=members)
            return len(members)
    except tarfile.TarError as exc:
        raise InputError(archive, f"not a valid tar archive: {exc}") from exc
