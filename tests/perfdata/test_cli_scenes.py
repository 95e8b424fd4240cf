"""`perfdata scenes inspect` through the console entry point (perfdata.cli.main)."""

from __future__ import annotations

import re

import pytest

from perfdata.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_lego(shared_data, capsys):
    code, out, _ = _run(capsys, "scenes", "inspect", "--reader", "blender", "--data", str(shared_data / "lego"))
    assert code == 0
    assert re.search(r"frames\s*│\s*100 \(100 train, 0 held out\)", out)
    assert re.search(r"resolution\s*│\s*800x800", out)
    assert "fx 1111.11  fy 1111.11  cx 400.00  cy 400.00" in out
    assert re.search(r"masks\s*│\s*yes", out) and re.search(r"depth\s*│\s*no", out)


def test_inspect_hololens(shared_data, capsys):
    code, out, _ = _run(capsys, "scenes", "inspect", "--reader", "rgbd", "--data", str(shared_data / "hololens-000"))
    assert code == 0
    assert re.search(r"frames\s*│\s*94 \(94 train", out) and re.search(r"resolution\s*│\s*540x360", out)
    assert "fx 495.57  fy 495.48  cx 269.50  cy 169.19" in out
    assert re.search(r"depth\s*│\s*yes", out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reader", "nerfstudio", "--data", "."], "error: unknown reader 'nerfstudio'; known readers: blender, co3d"),
        (["--reader", "rgbd", "--data", "/no/such/folder"], "error: /no/such/folder: no such file or folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = _run(capsys, "scenes", "inspect", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_scene_file_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "cap/images").mkdir(parents=True)
    (tmp_path / "cap/images/0.png").write_bytes(b"garbage")
    (tmp_path / "cap/K.txt").write_text("10 0 8\n0 10 6\n0 0 1\n")
    (tmp_path / "cap/poses.txt").write_text(" ".join(["1", "0", "0", "0"] * 4) + "\n")
    code, _, err = _run(capsys, "scenes", "inspect", "--reader", "rgbd", "--data", str(tmp_path / "cap"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'cap/images/0.png'}: cannot read image")
    assert err.count("\n") == 1
