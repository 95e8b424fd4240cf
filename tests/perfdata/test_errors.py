"""OSError -> a named error with the right exit code, once, in the CLI layer (perfdata.errors, perfdata.cli)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from perfdata.cli import main
from perfdata.errors import from_os_error


@pytest.mark.parametrize(("err", "problem", "code"), [
    (errno.EACCES, "permission denied", 2), (errno.EROFS, "read-only file system", 2),
    (errno.ENOTDIR, "a part of this path is a file, not a folder", 2), (errno.ENAMETOOLONG, "file name too long", 2),
    (errno.ENOSPC, "no space left on device", 1), (errno.EDQUOT, "disk quota exceeded", 1),
    (errno.EIO, "input/output error", 1),
])
def test_os_errors_are_named(err: int, problem: str, code: int, tmp_path: Path) -> None:
    named = from_os_error(OSError(err, "whatever", str(tmp_path / "x")))
    assert str(named) == f"{tmp_path / 'x'}: {problem}" and named.exit_code == code


def test_exists_names_a_file_and_a_rename_names_both(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    assert str(from_os_error(FileExistsError(errno.EEXIST, "File exists", str(tmp_path / "f")))).endswith(
        "f: is a file, not a folder")
    named = from_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"))
    assert str(named).startswith("/a -> /b: ") and named.exit_code == 1


def test_the_cli_turns_an_os_error_into_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit) as exc:  # an output folder inside a file: mkdir's NotADirectoryError
        main(["synth", "--kind", "objects", "--scenes", "1", "--views", "1", "--size", "4",
              "--out", str(tmp_path / "f" / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / 'f'}") and "not a folder" in err
