"""`perfdata download`: fetch PeRFception chunks, resumable and verified."""

from __future__ import annotations

from pathlib import Path

import click

from perfdata.commands.common import print_table


class _RichProgress:
    """One overall bar: bytes, rate, ETA."""

    def __init__(self, bar: object) -> None:
        self.bar, self.task = bar, None

    def start(self, n_files: int, n_bytes: int) -> None:
        self.task = self.bar.add_task(f"{n_files} files", total=n_bytes)  # type: ignore[attr-defined]

    def advance(self, n_bytes: int) -> None:
        self.bar.advance(self.task, n_bytes)  # type: ignore[attr-defined]


@click.command()
@click.option("--dataset", required=True, type=click.Choice(["co3d", "scannet", "synthetic"]),
              help="PeRFception-CO3D, PeRFception-ScanNet, or perfdata synthetic scenes (mirrors only).")
@click.option("--chunks", "spec", required=True, help="77, [11,22,33], 11,22,33, 10-20 or all (ScanNet: scene numbers).")
@click.option("--outdir", required=True, type=click.Path(path_type=Path), help="Download folder.")
@click.option("--source", default=None, help="hf, or a mirror URL/path with index.json [default: $PERFDATA_MIRROR or hf].")
@click.option("--hf-endpoint", default=None, help="Hugging Face endpoint [default: $HF_ENDPOINT or https://huggingface.co].")
@click.option("--workers", default=4, show_default=True, help="Files fetched in parallel.")
@click.option("--retries", default=5, show_default=True, help="Extra attempts per file (exponential back-off).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds without data before an attempt is dropped.")
@click.option("--verify", is_flag=True, help="Re-hash files on disk; re-fetch mismatches.")
@click.option("--extract", is_flag=True, help="Extract downloaded zip/tar archives safely, once.")
@click.option("--dry-run", is_flag=True, help="List what would be fetched; write nothing.")
def download(dataset: str, spec: str, outdir: Path, source: str | None, hf_endpoint: str | None, workers: int,
             retries: int, timeout: float, verify: bool, extract: bool, dry_run: bool) -> None:
    """Download PeRFception chunks to OUTDIR (status in OUTDIR/download_status.json)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from perfdata.download.remote import TransferConfig
    from perfdata.pipelines.download import DownloadConfig, default_hf_endpoint, default_source
    from perfdata.pipelines.download import download as run

    cfg = DownloadConfig(dataset, spec, outdir, source or default_source(), hf_endpoint or default_hf_endpoint(),
                         workers, verify, extract, dry_run, TransferConfig(retries=retries, read_timeout_s=timeout))
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress("{task.description}", *columns, transient=True) as bar:
        r = run(cfg, _RichProgress(bar))
    rows = [("source", r.source), ("chunks", f"{len(r.chunks)} ({r.chunks[0]}-{r.chunks[-1]})"),
            ("files", r.n_files), ("fetched", r.n_fetched), ("skipped (verified)", r.n_skipped),
            ("failed", r.n_failed), ("extracted", r.n_extracted), ("listed bytes", f"{r.bytes_total:,}"),
            ("transferred", f"{r.bytes_transferred:,} B in {r.seconds:.1f} s"), ("status", r.status_path)]
    print_table("download (dry run)" if dry_run else "download", rows)
