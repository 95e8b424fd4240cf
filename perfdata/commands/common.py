"""Helpers shared by the click commands: tables, runner options and outcome tables."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import click

READER_HELP = ("Reader NAME or NAME:KEY=VALUE,... (options, e.g. co3d:min_quality=0.5,depth=off; see README): "
               "blender, synthetic, rgbd, scannet, replica, co3d, llff, colmap.")


def print_table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> None:
    """Print a small table with rich (to stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=header is not None)
    for name in header or [""] * (len(rows[0]) if rows else 2):
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console = Console(width=120)
    console.print(title, soft_wrap=True, markup=False, highlight=False)
    console.print(table)


EXECUTOR_HELP = ("Where items run: local, threads:N, dask[:N][,gpus=G] (LocalCluster of N processes), "
                 "tcp://HOST:PORT (a scheduler) or slurm[:N][,queue=Q,walltime=T,memory=M,gpus=G].")


def runner_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every batch command shares (--executor, --shard, --force, --retry-failed, --dry-run),
    handed to the command as one `run: perfdata.runner.RunConfig` argument."""

    @functools.wraps(fn)
    def command(*args: Any, executor: str, shard: str | None, force: bool, retry_failed: bool, dry_run: bool,
                **kwargs: Any) -> Any:
        from perfdata.executor import parse_executor, parse_shard
        from perfdata.runner import RunConfig

        run = RunConfig(parse_executor(executor), parse_shard(shard), force, retry_failed, dry_run)
        return fn(*args, run=run, **kwargs)

    options = [
        click.option("--executor", default="local", show_default=True, help=EXECUTOR_HELP),
        click.option("--shard", default=None, help="i/n: only every n-th item starting at i (job arrays)."),
        click.option("--force", is_flag=True, help="Redo items already done."),
        click.option("--retry-failed", is_flag=True, help="Run only the items whose last attempt failed."),
        click.option("--dry-run", is_flag=True, help="List the items and their state; run nothing."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def print_outcomes(title: str, outcomes: Sequence[Any], extra: Sequence[tuple[str, Callable[[Any], Any]]] = ()
                   ) -> None:
    """A table of runner outcomes: item, status, attempts, seconds, psnr, the `extra` columns, error; the title
    gets the counts per status."""
    from perfdata.runner import count, first_line

    counts = ", ".join(f"{n} {status}" for status, n in count(outcomes).items()) or "nothing to do"
    rows = [(o.item, o.status, o.attempts or "", f"{o.seconds:.1f}" if o.seconds else "",
             "" if o.psnr is None else f"{o.psnr:.2f}", *(fmt(o) for _, fmt in extra), first_line(o.error))
            for o in outcomes]
    print_table(f"{title}: {counts}", rows,
                header=("item", "status", "attempts", "seconds", "psnr", *(name for name, _ in extra), "error"))


def exit_if_failed(outcomes: Sequence[Any]) -> None:
    """Exit 1 when an item failed now, was held as failed, or was busy (another run writes it)."""
    from perfdata.runner import any_failed

    if any_failed(outcomes):
        raise SystemExit(1)
