"""`perfdata status DIR`: done / failed / pending items of a stage's output folder."""

from __future__ import annotations

import sys

import click

from perfdata.commands.common import print_table


@click.command()
@click.argument("out_dir", type=click.Path())
@click.option("--errors/--no-errors", default=True, help="Show the first line of each failure.")
def status(out_dir: str, errors: bool) -> None:
    """Report which items (scenes) of a stage's output folder are done, failed (with the error) or pending.
    Exits 1 when any item failed."""
    from perfdata.status import scan

    items = scan(out_dir)
    rows = [(s.item, s.state, (s.error or "").splitlines()[0] if errors and s.error else "") for s in items]
    counts = {state: sum(s.state == state for s in items) for state in ("done", "failed", "pending")}
    print_table(f"{out_dir}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending",
                rows, header=("item", "state", "error"))
    if counts["failed"]:
        sys.exit(1)
