"""shardcheck.tar_members, the fast tar reader of the shard loaders, against Python's tarfile (through
webdataset's own iterator) on the tar dialects writers produce."""

from __future__ import annotations

import io
import tarfile

import pytest
from webdataset.tariterators import tar_file_iterator

from perfdata.shardcheck import tar_members
from perfdata.shards import ShardWriter


def members(it: object) -> list[tuple[str, bytes]]:
    return [(m["fname"], m["data"]) for m in it]  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_same_members_as_tarfile(fmt: int) -> None:
    files = [("k0.rgb.png", bytes(range(256)) * 3), ("k0.cls", b"3"), ("d" * 90 + "/" + "e" * 40 + ".json", b"{}"),
             ("__meta__", b"skipped"), ("k1.depth.png", b""), ("k1.cls", b"12345")]
    if fmt != tarfile.USTAR_FORMAT:
        files += [("a/" * 70 + "long.rgb.png", b"x" * 1000), ("\u00e9t\u00e9.json", b"[]")]  # long and non-ASCII names
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "k0.rgb.png"
        tar.addfile(link)
    buf.seek(0)
    want = members(tar_file_iterator(buf))
    buf.seek(0)
    got = members(tar_members(buf))
    assert got == want and len(got) == len(files) - 1  # the meta name, the folder and the link left out


def test_reads_perfdata_shards_byte_for_byte(tmp_path) -> None:  # noqa: ANN001
    with ShardWriter(tmp_path, "train", maxcount=100) as w:
        for i in range(7):
            w.write(f"scene_{i:03d}", {"rgb.png": bytes([i]) * (300 + 97 * i), "cls": str(i).encode(), "json": b"{}"})
    with open(tmp_path / w.shards[0].name, "rb") as fh:
        got = members(tar_members(fh))
    assert got == [(f"scene_{i:03d}.{ext}", data) for i in range(7)
                   for ext, data in (("rgb.png", bytes([i]) * (300 + 97 * i)), ("cls", str(i).encode()), ("json", b"{}"))]
