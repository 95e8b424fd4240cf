"""Download benchmark: prints one JSON object.

1. Throughput on one large file from a loopback `serve_directory` server: `perfdata` (the whole download
   stage: mirror index, sha256, part file, rename, status) against `curl -o` on the same URL, best of N,
   interleaved. Target: ratio >= 0.9.
2. Many files, parallel workers against one worker, from a server that caps each connection's rate and adds
   a per-request latency (as CDNs do; on an uncapped loopback both would be CPU-bound on a shared machine).
3. Kill at 50%: a download in a child process is SIGKILLed when its part file passes half the large file; a
   rerun resumes. Bytes re-transferred = (bytes the server sent in both runs) - file size, counted on the
   server (each slice counted before it is sent, so the figure is an upper bound). Target: < 1% of the file.

Run: .venv/bin/python benchmarks/download.py [--size-mb 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfdata.pipelines.download import DownloadConfig, download

from perfdata.download.mirror import RangeRequestHandler, index_directory, serve_directory

BIG = "05/plenoxel_co3d_1_2_305/last.ckpt"


class SlicedHandler(RangeRequestHandler):
    """Sends in slices, counting each before it goes out; `server.rate` (bytes/s per connection, 0 = no cap)
    and `server.latency` (seconds before each body) shape the transfer."""

    def send_body(self, target: Path, rel: str, start: int, end: int) -> None:
        rate, latency = self.server.rate, self.server.latency  # type: ignore[attr-defined]
        time.sleep(latency)
        piece = 1 << 18 if rate else 1 << 22
        t0, sent = time.perf_counter(), 0
        with open(target, "rb") as f:
            for offset in range(start, end, piece):
                n = min(piece, end - offset)
                self.server.count(rel, n)
                try:
                    self.connection.sendfile(f, offset, n)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += n
                if rate:
                    time.sleep(max(0.0, sent / rate - (time.perf_counter() - t0)))


def _make_mirror(root: Path, size_mb: int, n_small: int, small_mb: int) -> None:
    scene = root / "05" / "plenoxel_co3d_1_2_305"
    scene.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with open(scene / "last.ckpt", "wb") as f:
        for i in range(size_mb):
            f.write(block[i % 64 :] + block[: i % 64])
    for i in range(n_small):
        (scene / f"part{i:02d}.bin").write_bytes(os.urandom(small_mb << 20))
    index_directory(root)


def _time_curl(url: str, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "--http1.1", "-o", str(out), url], check=True)
    dt = time.perf_counter() - t0
    out.unlink()
    return dt


def _time_perfdata(source: str, outdir: Path, workers: int) -> float:
    t0 = time.perf_counter()
    download(DownloadConfig("co3d", "5", outdir, source, workers=workers))
    dt = time.perf_counter() - t0
    shutil.rmtree(outdir)
    return dt


def _throughput(mirror: Path, work: Path, size: int, reps: int) -> dict:
    big_only = work / "big-mirror"
    (big_only / "05" / "plenoxel_co3d_1_2_305").mkdir(parents=True)
    os.link(mirror / BIG, big_only / BIG)
    index_directory(big_only)
    server, url = serve_directory(big_only, handler=SlicedHandler)
    server.rate, server.latency = 0, 0.0  # type: ignore[attr-defined]
    curl_s, ours_s = [], []
    with server:
        for _ in range(reps):
            curl_s.append(_time_curl(f"{url}/{BIG}", work / "curl.out"))
            ours_s.append(_time_perfdata(url, work / "ours", 1))
    curl, ours = size / min(curl_s) / 1e6, size / min(ours_s) / 1e6
    return {"file_mb": size / 1e6, "curl_MBps": round(curl, 1), "perfdata_MBps": round(ours, 1),
            "ratio_vs_curl": round(ours / curl, 3), "curl_s": [round(s, 3) for s in curl_s],
            "perfdata_s": [round(s, 3) for s in ours_s]}


def _parallel(work: Path, n_small: int, small_mb: int, rate_mbps: float) -> dict:
    small = work / "small-mirror"
    scene = small / "05" / "plenoxel_co3d_1_2_305"
    scene.mkdir(parents=True)
    for i in range(n_small):
        (scene / f"part{i:02d}.bin").write_bytes(os.urandom(small_mb << 20))
    index_directory(small)
    server, url = serve_directory(small, handler=SlicedHandler)
    server.rate, server.latency = rate_mbps * 1e6, 0.05  # type: ignore[attr-defined]
    with server:
        serial = _time_perfdata(url, work / "ours", 1)
        parallel = _time_perfdata(url, work / "ours", 8)
    return {"files": n_small, "file_mb": small_mb * 1.048576, "per_connection_cap_MBps": rate_mbps,
            "latency_s": 0.05, "serial_s": round(serial, 3), "parallel8_s": round(parallel, 3),
            "speedup": round(serial / parallel, 2)}


_CHILD = """
import sys
from pathlib import Path
from perfdata.pipelines.download import DownloadConfig, download
download(DownloadConfig("co3d", "5", Path(sys.argv[2]), sys.argv[1], workers=1))
"""


def _kill_and_resume(mirror: Path, work: Path, size: int, rate_mbps: float) -> dict:
    server, url = serve_directory(mirror, handler=SlicedHandler)
    server.rate, server.latency = rate_mbps * 1e6, 0.0  # type: ignore[attr-defined]
    out = work / "killed"
    part = out / "_in_progress" / (BIG + ".part")
    with server:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, url, str(out)])
        while not (part.exists() and part.stat().st_size >= size // 2):
            if child.poll() is not None:
                raise RuntimeError("the child finished before it could be killed")
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = part.stat().st_size
        first = server.sent_by_path[BIG]
        server.rate = 0  # type: ignore[attr-defined]
        result = download(DownloadConfig("co3d", "5", out, url, workers=1))
        total = server.sent_by_path[BIG]
    extra = total - size
    return {"file_bytes": size, "part_bytes_at_kill": killed_at, "server_bytes_before_kill": first,
            "server_bytes_total": total, "retransferred_bytes": extra,
            "retransferred_pct": round(100 * extra / size, 4), "rerun_fetched_files": result.n_fetched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=16)
    parser.add_argument("--small-mb", type=int, default=4)
    parser.add_argument("--kill-rate-mbps", type=float, default=50.0, help="server rate while the child is killed")
    parser.add_argument("--cap-mbps", type=float, default=20.0, help="per-connection cap for the parallel test")
    parser.add_argument("--scratch", default=None, help="work folder (default /dev/shm: measure the network path, "
                        "not a disk shared with other jobs)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is needed as the reference")
    scratch = args.scratch or ("/dev/shm" if Path("/dev/shm").is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="perfdata-bench-", dir=scratch) as tmp:
        work = Path(tmp)
        _make_mirror(work / "mirror", args.size_mb, 0, 0)
        size = (work / "mirror" / BIG).stat().st_size
        report = {
            "benchmark": "download",
            "single_large_file": _throughput(work / "mirror", work, size, args.reps),
            "parallel_vs_serial": _parallel(work, args.small_files, args.small_mb, args.cap_mbps),
            "scratch": scratch,
            "kill_at_50pct": _kill_and_resume(work / "mirror", work, size, args.kill_rate_mbps),
        }
    report["targets_met"] = {
        "ratio_vs_curl>=0.9": report["single_large_file"]["ratio_vs_curl"] >= 0.9,
        "parallel_faster": report["parallel_vs_serial"]["speedup"] > 1.0,
        "retransferred<1%": report["kill_at_50pct"]["retransferred_pct"] < 1.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
