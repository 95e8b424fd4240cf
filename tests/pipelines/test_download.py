"""The download stage against real loopback HTTP servers: a Hugging Face-style tree API, mirrors over http and
file://, and servers that drop connections, fail, corrupt or ignore Range. Bytes are counted on the server."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from perfdata.pipelines.download import DownloadConfig, DownloadFailed, download

from perfdata.cli import main
from perfdata.download.mirror import MirrorHTTPServer, RangeRequestHandler, index_directory, serve_directory
from perfdata.download.remote import TransferConfig
from perfdata.errors import ChecksumError, ConfigError, DownloadError, UnsafePathError

FAST = TransferConfig(retries=3, backoff_s=0.01, connect_timeout_s=2, read_timeout_s=5, block_bytes=64 * 1024)
REPO = "YWjimmy/PeRFception-v1-3"  # holds chunks 71-99


class FaultyHandler(RangeRequestHandler):
    """The mirror handler plus switches in `server.faults`: fail_first (n answers of 500), drop_at (one
    connection closes after that absolute byte), corrupt (flip a byte), ignore_range (answer 200 always)."""

    def do_GET(self, head: bool = False) -> None:
        faults = {} if self.path.endswith("index.json") else self.server.faults  # type: ignore[attr-defined]
        if faults.get("fail_first", 0) > 0:
            faults["fail_first"] -= 1
            self.server.requests.append((self.path, "500"))
            self.send_error(500, "injected failure")
            return
        if faults.get("ignore_range"):
            del self.headers["Range"]
        super().do_GET(head)

    def send_body(self, target: Path, rel: str, start: int, end: int) -> None:
        faults = {} if rel.endswith("index.json") else self.server.faults  # type: ignore[attr-defined]
        data = target.read_bytes()[start:end]
        if faults.get("corrupt"):
            data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
        drop = faults.get("drop_at")
        if drop is not None and start < drop < end:
            faults["drop_at"] = None
            data = data[: drop - start]
            self.close_connection = True
        self.wfile.write(data)
        self.server.count(rel, len(data))
        if self.close_connection:
            self.connection.shutdown(socket.SHUT_RDWR)


class HubHandler(FaultyHandler):
    """The Hub's tree API (`/api/datasets/{repo}/tree/main/{path}[?recursive=1]`, JSON list, Link rel="next"
    pagination by `cursor`) and `/datasets/{repo}/resolve/main/{path}`, over folders `root/{owner}/{name}/`.
    Files ending .ckpt/.npz/.zip are LFS files (lfs.oid = sha256); others carry only a git blob oid."""

    def do_GET(self, head: bool = False) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/api/datasets/"):
            self.send_tree(parts.path[len("/api/datasets/") :], parse_qs(parts.query))
            return
        prefix = "/datasets/"
        if parts.path.startswith(prefix) and "/resolve/main/" in parts.path:
            repo, _, rel = parts.path[len(prefix) :].partition("/resolve/main/")
            self.path = f"/{repo}/{rel}"
        super().do_GET(head)

    def send_tree(self, rest: str, query: dict[str, list[str]]) -> None:
        repo, _, folder = rest.partition("/tree/main")
        base = self.server.root / repo
        target = base / folder.strip("/")
        self.server.requests.append((self.path, "tree"))
        if not target.is_dir():
            self.send_error(404, "no such folder")
            return
        recursive = query.get("recursive") == ["1"]
        found = sorted(target.rglob("*") if recursive else target.iterdir())
        entries = [_tree_entry(p, base) for p in found] + self.server.inject  # type: ignore[attr-defined]
        cursor = int(query.get("cursor", ["0"])[0])
        size = self.server.page_size  # type: ignore[attr-defined]
        body = json.dumps(entries[cursor : cursor + size]).encode()
        self.send_response(200)
        if cursor + size < len(entries):
            rec = "recursive=1&" if recursive else ""
            self.send_header("Link", f'<{self.path.split("?")[0]}?{rec}cursor={cursor + size}>; rel="next"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _tree_entry(path: Path, base: Path) -> dict[str, Any]:
    rel = path.relative_to(base).as_posix()
    if path.is_dir():
        return {"type": "directory", "oid": "0" * 40, "size": 0, "path": rel}
    data = path.read_bytes()
    entry: dict[str, Any] = {"type": "file", "size": len(data), "path": rel,
                             "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    if path.suffix in (".ckpt", ".npz", ".zip"):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _start(root: Path, handler: type, **faults: Any) -> tuple[MirrorHTTPServer, str]:
    server, url = serve_directory(root, handler=handler)
    server.faults = faults  # type: ignore[attr-defined]
    server.inject = []  # type: ignore[attr-defined]
    server.page_size = 2  # type: ignore[attr-defined]
    return server, url


def _payload(n: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A Hub repo with chunk 77: two scenes, LFS .ckpt/.npz files and non-LFS json/txt files."""
    root = tmp_path / "hub" / REPO / "77"
    for seq in ("106_12648_23177", "110_13051_23377"):
        scene = root / f"plenoxel_co3d_{seq}"
        (scene / "render_model").mkdir(parents=True)
        (scene / "last.ckpt").write_bytes(_payload(300_000, hash(seq) % 1000))
        (scene / "label_info.npz").write_bytes(_payload(5_000, 7))
        (scene / "results.json").write_text('{"psnr": 28.1}')
        (scene / "render_model" / "model.ckpt").write_bytes(_payload(2_000, 8))
    return tmp_path / "hub"


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A CO3D mirror folder with chunk 5: one 2 MB file and six small ones, indexed."""
    root = tmp_path / "mirror"
    scene = root / "05" / "plenoxel_co3d_1_2_305"
    scene.mkdir(parents=True)
    (scene / "last.ckpt").write_bytes(_payload(2_000_000, 1))
    for i in range(6):
        (scene / f"part{i}.bin").write_bytes(_payload(10_000 + i, i))
    index_directory(root)
    return root


def _cfg(tmp_path: Path, source: str, **kw: Any) -> DownloadConfig:
    kw.setdefault("transfer", FAST)
    return DownloadConfig(kw.pop("dataset", "co3d"), kw.pop("chunks", "5"), tmp_path / "out", source, **kw)


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "index.json")
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_hub_tree_listing_with_pages_and_rerun_skips(hub: Path, tmp_path: Path) -> None:
    server, url = _start(hub, HubHandler)
    with server:
        cfg = _cfg(tmp_path, "hf", chunks="[77]", hf_endpoint=url, workers=3)
        result = download(cfg)
        trees = [p for p, kind in server.requests if kind == "tree"]
        assert len(trees) >= 5 and any("cursor=" in p for p in trees)  # 10 entries, pages of 2
        assert (result.n_files, result.n_fetched, result.n_failed) == (8, 8, 0)
        assert _same_tree(hub / REPO, tmp_path / "out")
        status = json.loads(result.status_path.read_text())["files"]
        scene = "77/plenoxel_co3d_106_12648_23177"
        assert status[f"{scene}/last.ckpt"]["verified"] == "sha256"
        assert status[f"{scene}/results.json"]["verified"].startswith("size-only")
        sent = server.bytes_sent
        assert sent == result.bytes_transferred == result.bytes_total
        again = download(cfg)
        assert (again.n_skipped, again.n_fetched, again.bytes_transferred) == (8, 0, 0)
        assert server.bytes_sent == sent
    assert not list((tmp_path / "out" / "_in_progress").rglob("*.part"))


def test_drop_mid_file_resumes_only_the_missing_bytes(mirror: Path, tmp_path: Path) -> None:
    big = "05/plenoxel_co3d_1_2_305/last.ckpt"
    server, url = _start(mirror, FaultyHandler, drop_at=1_000_000)
    with server:
        download(_cfg(tmp_path, url, workers=2))
        assert server.sent_by_path[big] == 2_000_000  # 1 MB, then the rest through Range
        assert (big, "bytes=1000000-") in server.requests
    assert (tmp_path / "out" / big).read_bytes() == (mirror / big).read_bytes()


def test_killed_run_resumes_in_the_next_run(mirror: Path, tmp_path: Path) -> None:
    big = "05/plenoxel_co3d_1_2_305/last.ckpt"
    server, url = _start(mirror, FaultyHandler, drop_at=1_200_000)
    with server:
        no_retry = TransferConfig(retries=0, backoff_s=0.01, block_bytes=64 * 1024)
        with pytest.raises(DownloadFailed) as info:
            download(_cfg(tmp_path, url, transfer=no_retry))
        assert info.value.result.n_failed == 1 and not (tmp_path / "out" / big).exists()
        status = json.loads((tmp_path / "out" / "download_status.json").read_text())["files"][big]
        assert status["state"] == "failed" and "at byte 1200000 of 2000000" in status["reason"]
        before = server.sent_by_path[big]
        result = download(_cfg(tmp_path, url))
        assert server.sent_by_path[big] - before == 800_000
        assert (result.n_fetched, result.n_skipped) == (1, 6)
    assert (tmp_path / "out" / big).read_bytes() == (mirror / big).read_bytes()


def test_500_twice_then_success_and_too_many_failures(mirror: Path, tmp_path: Path) -> None:
    server, url = _start(mirror, FaultyHandler, fail_first=2)
    with server:
        result = download(_cfg(tmp_path, url, workers=1))
        assert result.n_fetched == 7 and [k for _, k in server.requests].count("500") == 2
        server.faults["fail_first"] = 10  # type: ignore[attr-defined]
        with pytest.raises(DownloadFailed, match="HTTP 500"):
            download(_cfg(tmp_path / "b", url, workers=1, transfer=TransferConfig(retries=1, backoff_s=0.01)))


def test_corrupted_file_is_a_checksum_error_and_leaves_nothing(mirror: Path, tmp_path: Path) -> None:
    server, url = _start(mirror, FaultyHandler, corrupt=True)
    with server:
        with pytest.raises(ChecksumError, match="sha256"):
            download(_cfg(tmp_path, url))
    out = tmp_path / "out"
    assert not (out / "05").exists()  # nothing under a final name
    assert not [p for p in (out / "_in_progress").rglob("*") if p.is_file()]
    status = json.loads((out / "download_status.json").read_text())["files"]
    assert all(e["state"] == "failed" and "sha256" in e["reason"] for e in status.values())


def test_server_ignoring_range_restarts_from_zero(mirror: Path, tmp_path: Path) -> None:
    big = "05/plenoxel_co3d_1_2_305/last.ckpt"
    server, url = _start(mirror, FaultyHandler, drop_at=500_000, ignore_range=True)
    with server:
        download(_cfg(tmp_path, url))
        assert server.sent_by_path[big] == 2_500_000  # half a try, then the whole file again
    assert (tmp_path / "out" / big).read_bytes() == (mirror / big).read_bytes()


def test_listing_escaping_the_folder_is_refused(hub: Path, tmp_path: Path) -> None:
    server, url = _start(hub, HubHandler)
    evil = {"type": "file", "oid": "0" * 40, "size": 4, "path": "77/../../../escape.txt"}
    server.inject.append(evil)  # type: ignore[attr-defined]
    with server, pytest.raises(UnsafePathError, match=r"\.\./"):
        download(_cfg(tmp_path, "hf", chunks="77", hf_endpoint=url))
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_mirror_index_with_dotdot_is_refused(mirror: Path, tmp_path: Path) -> None:
    index = json.loads((mirror / "index.json").read_text())
    index["chunks"]["5"][0]["path"] = "../outside.bin"
    (mirror / "index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafePathError):
        download(_cfg(tmp_path, str(mirror)))


def test_mirror_over_file_url_and_plain_path(mirror: Path, tmp_path: Path) -> None:
    result = download(_cfg(tmp_path, mirror.as_uri()))
    assert result.n_fetched == 7 and _same_tree(mirror, tmp_path / "out")
    assert download(_cfg(tmp_path, str(mirror), verify=True)).n_skipped == 7


def test_verify_rechecks_files_on_disk(mirror: Path, tmp_path: Path) -> None:
    server, url = _start(mirror, RangeRequestHandler)
    with server:
        download(_cfg(tmp_path, url))
        victim = tmp_path / "out" / "05" / "plenoxel_co3d_1_2_305" / "part3.bin"
        victim.write_bytes(b"\0" * victim.stat().st_size)  # same size, wrong bytes
        assert download(_cfg(tmp_path, url)).n_skipped == 7  # the status manifest is trusted...
        result = download(_cfg(tmp_path, url, verify=True))  # ...until --verify
        assert (result.n_fetched, result.n_skipped) == (1, 6)
    assert victim.read_bytes() == (mirror / victim.relative_to(tmp_path / "out")).read_bytes()


def test_archives_extract_once_and_zip_slip_fails(tmp_path: Path) -> None:
    root = tmp_path / "mirror" / "05"
    root.mkdir(parents=True)
    for name, member in (("good.zip", "scene/a.txt"), ("evil.zip", "../../evil.txt")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(member, "hello")
        (root / name).write_bytes(buf.getvalue())
    index_directory(tmp_path / "mirror")
    with pytest.raises(DownloadFailed, match="evil.zip") as info:
        download(_cfg(tmp_path, str(tmp_path / "mirror"), extract=True))
    out = tmp_path / "out" / "05"
    assert (out / "scene" / "a.txt").read_text() == "hello" and (out / ".good.zip.extracted").exists()
    assert info.value.result.n_extracted == 1 and not list(tmp_path.rglob("evil.txt"))


def test_unreachable_source_and_missing_chunk(mirror: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DownloadError, match="index.json"):
        download(_cfg(tmp_path, f"http://127.0.0.1:{port}"))
    with pytest.raises(DownloadError, match="no chunk 6"):
        download(_cfg(tmp_path, str(mirror), chunks="5-6"))
    with pytest.raises(ConfigError, match="out of range"):
        download(_cfg(tmp_path, str(mirror), chunks="100"))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize("spec", ["100", "abc", "1-", "[1,,2]"])
def test_cli_bad_chunk_spec_exits_2(spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _cli(["download", "--dataset", "co3d", "--chunks", spec, "--outdir", str(tmp_path)], capsys)
    assert code == 2 and "error: chunk" in text and not any(tmp_path.iterdir())


def test_cli_download_env_mirror_and_checksum_exit(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFDATA_MIRROR", str(mirror))
    out = tmp_path / "cli-out"
    args = ["download", "--dataset", "co3d", "--chunks", '"[5]"', "--outdir", str(out), "--retries", "1"]
    code, text = _cli(args + ["--dry-run"], capsys)
    assert code == 0 and "download (dry run)" in text and not out.exists()
    code, text = _cli(args, capsys)
    assert code == 0 and "fetched" in text and _same_tree(mirror, out)
    server, url = _start(mirror, FaultyHandler, corrupt=True)
    with server:
        code, text = _cli(args[:-4] + ["--outdir", str(tmp_path / "bad"), "--source", url, "--workers", "2"], capsys)
    assert code == 2 and "sha256" in text and not (tmp_path / "bad" / "05").exists()
