"""Safe extraction: escaping names and links are refused before anything is written; markers stop re-runs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from perfdata.download.extract import extract_archive, marker_path
from perfdata.errors import InputError, UnsafePathError


def _zip(path: Path, members: dict[str, str], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            data = b"abc" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_zip_extracts_once(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "c.zip", {"scene/a.txt": "A", "scene/b/c.txt": "C"}, {"scene/l": "a.txt"})
    first = extract_archive(archive)
    assert (first.n_members, first.skipped) == (3, False)
    assert (tmp_path / "scene" / "b" / "c.txt").read_text() == "C"
    assert (tmp_path / "scene" / "l").is_symlink() and (tmp_path / "scene" / "l").read_text() == "A"
    assert marker_path(archive).exists()
    (tmp_path / "scene" / "a.txt").write_text("changed")
    assert extract_archive(archive).skipped and (tmp_path / "scene" / "a.txt").read_text() == "changed"


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"../../evil.txt": "x"}, None, r"'\.\.'"),
        ({"/etc/evil.txt": "x"}, None, "absolute"),
        ({"ok/../../evil.txt": "x"}, None, r"'\.\.'"),
        ({"C:/evil.txt": "x"}, None, "absolute"),
        ({"ok.txt": "x"}, {"link": "../../outside"}, "leaves the extraction folder"),
        ({"ok.txt": "x"}, {"link": "/etc/passwd"}, "absolute"),
    ],
)
def test_zip_slip_refused_and_nothing_written(tmp_path: Path, members, links, message: str) -> None:
    archive = _zip(tmp_path / "bad.zip", members, links)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafePathError, match=message):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == [] and not marker_path(archive).exists()
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_info("../evil"), r"'\.\.'"),
        (_info("/abs/evil"), "absolute"),
        (_info("a/link", tarfile.SYMTYPE, "../../x"), "leaves"),
        (_info("a/hard", tarfile.LNKTYPE, "../x"), r"'\.\.'"),
        (_info("dev", tarfile.CHRTYPE), "device"),
    ],
)
def test_tar_escapes_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", [_info("fine.txt"), member])
    with pytest.raises(UnsafePathError, match=message):
        extract_archive(archive, tmp_path / "dest")
    assert not any((tmp_path / "dest").iterdir())


def test_tar_with_internal_link_and_a_broken_archive(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tgz", [_info("s/a.txt"), _info("s/l", tarfile.SYMTYPE, "a.txt")])
    assert extract_archive(archive, tmp_path / "out").n_members == 2
    assert (tmp_path / "out" / "s" / "l").read_text() == "abc"
    (tmp_path / "broken.zip").write_bytes(b"<html>error page</html>")
    with pytest.raises(InputError, match="broken.zip: not a valid zip"):
        extract_archive(tmp_path / "broken.zip")
