"""`perfdata pack`: render folders -> WebDataset shards `<split>-NNNNNN.tar` and index.json."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from perfdata.commands.common import print_table, runner_options

if TYPE_CHECKING:
    from perfdata.runner import RunConfig


@click.command()
@click.option("--renders", required=True, type=click.Path(), help="Folder written by `perfdata render --out`.")
@click.option("--out", required=True, type=click.Path(), help="Shard folder.")
@click.option("--maxcount", type=int, default=1000, show_default=True, help="Samples per shard at most.")
@click.option("--maxsize", type=int, default=1 << 30, show_default=True, help="Bytes per shard at most.")
@click.option("--split-by", type=click.Choice(["scene"]), default="scene", show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Fraction of scenes for val.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the scene split and sample order.")
@click.option("--mix-mb", type=click.IntRange(0), default=1024, show_default=True,
              help="Shuffle buffer (MiB, per split) samples pass on their way into the shards, so shards mix scenes; 0: scene order.")
@click.option("--min-psnr", type=float, help="Leave out (and list) scenes whose fit PSNR is below this.")
@runner_options
def pack(renders: str, out: str, maxcount: int, maxsize: int, split_by: str, val_fraction: float, seed: int,
         mix_mb: int, min_psnr: float | None, run: RunConfig) -> None:
    """Pack rendered views into deterministic WebDataset shards (a rerun is byte-identical), one runner item
    per split. Exits 1 if a split failed."""
    from perfdata.pipelines.pack import PackConfig, pack_renders

    cfg = PackConfig(maxcount=maxcount, maxsize=maxsize, val_fraction=val_fraction, seed=seed,
                     split_by=split_by, min_psnr=min_psnr, mix_bytes=mix_mb << 20)
    res = pack_renders(renders, out, cfg, run)
    dry_run = run.dry_run
    rows = [(split, len(res.scenes[split]), res.n_samples.get(split, 0),
             sum(1 for s in res.shards if s.split == split),
             sum(s.bytes for s in res.shards if s.split == split)) for split in res.scenes]
    title = f"pack -> {out}{' (dry run)' if dry_run else ''}: {len(res.classes)} classes"
    if res.incomplete:
        title += f"; left out (no DONE): {', '.join(res.incomplete)}"
    if res.low_psnr:
        title += f"; left out (--min-psnr): {', '.join(sid for sid, _ in res.low_psnr)}"
    print_table(title, rows, header=("split", "scenes", "samples", "shards", "bytes"))
    failed = [o for o in res.outcomes if o.status != "done" and o.status != "skipped"]
    for o in failed:
        click.echo(f"split {o.item}: {o.status}: {o.error}", err=True)
    if failed:
        sys.exit(1)
