"""Mirror index and the Range-capable HTTP server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from perfdata.cli import main
from perfdata.download.mirror import index_directory, serve_directory
from perfdata.errors import InputError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    (root / "12" / "plenoxel_co3d_1_2_312").mkdir(parents=True)
    (root / "12" / "plenoxel_co3d_1_2_312" / "last.ckpt").write_bytes(bytes(range(256)) * 40)
    (root / "40" / "plenoxel_co3d_9_9_140").mkdir(parents=True)
    (root / "40" / "plenoxel_co3d_9_9_140" / "results.json").write_text("{}")
    (root / "_in_progress").mkdir()
    (root / "_in_progress" / "x.part").write_text("partial")
    (root / ".hidden").write_text("no")
    return root


def test_index_groups_by_chunk_and_skips_bookkeeping(tree: Path) -> None:
    index = json.loads(index_directory(tree).read_text())
    assert index["dataset"] == "co3d" and index["format_version"] == 1
    assert sorted(index["chunks"]) == ["12", "40"]
    entry = index["chunks"]["12"][0]
    data = (tree / entry["path"]).read_bytes()
    assert entry["size"] == 10240 and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_index_refuses_stray_files(tree: Path) -> None:
    (tree / "README.txt").write_text("?")
    with pytest.raises(InputError, match="cannot tell the dataset"):
        index_directory(tree)
    with pytest.raises(InputError, match="README.txt: belongs to no chunk of co3d"):
        index_directory(tree, "co3d")


def test_server_ranges(tree: Path) -> None:
    server, url = serve_directory(tree)
    data = (tree / "12/plenoxel_co3d_1_2_312/last.ckpt").read_bytes()
    file_url = f"{url}/12/plenoxel_co3d_1_2_312/last.ckpt"
    with server:
        whole = requests.get(file_url, timeout=5)
        assert whole.status_code == 200 and whole.content == data and whole.headers["Accept-Ranges"] == "bytes"
        part = requests.get(file_url, headers={"Range": "bytes=100-199"}, timeout=5)
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert requests.get(file_url, headers={"Range": "bytes=10000-"}, timeout=5).content == data[10000:]
        assert requests.get(file_url, headers={"Range": "bytes=-5"}, timeout=5).content == data[-5:]
        assert requests.get(file_url, headers={"Range": "bytes=99999-"}, timeout=5).status_code == 416
        assert requests.head(file_url, timeout=5).headers["Content-Length"] == str(len(data))
        assert requests.get(f"{url}/../../etc/passwd", timeout=5).status_code == 404
        assert requests.get(f"{url}/%2e%2e/%2e%2e/etc/passwd", timeout=5).status_code == 404
        assert requests.get(f"{url}/12", timeout=5).status_code == 404
        assert server.bytes_sent == len(data) + 100 + (len(data) - 10000) + 5


def test_cli_mirror_index(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["mirror", "index", str(tree), "--dataset", "co3d"])
        raise SystemExit(0)
    assert info.value.code == 0 and "files" in capsys.readouterr().out
    assert (tree / "index.json").exists()
    with pytest.raises(SystemExit) as info:
        main(["mirror", "index", str(tree / "nope")])
    assert info.value.code == 2
