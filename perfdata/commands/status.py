"""`perfdata status PATH`: done / failed / pending items of any stage's output (fits, store, renders, shards)."""

from __future__ import annotations

import sys

import click

from perfdata.commands.common import print_table


@click.command()
@click.argument("path", type=click.Path())
@click.option("--errors/--no-errors", default=True, help="Show the first line of each failure.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON instead of tables.")
def status(path: str, errors: bool, as_json: bool) -> None:
    """Report, per stage that wrote PATH, which items are done, failed (with the error) or pending (never
    started, or left by a killed run), with attempts, seconds, device and the fit PSNR. Exits 1 when any
    item failed."""
    import json

    from perfdata.runner import first_line
    from perfdata.status import output_status

    stages = output_status(path)
    if as_json:
        click.echo(json.dumps([{"stage": s.stage, "output": s.output, "summary": s.summary(),
                                "items": [r.to_json() for r in s.records]} for s in stages], indent=2))
    for s in stages if not as_json else ():
        rows = [(r.item, r.state, r.attempts or "", "" if r.seconds is None else f"{r.seconds:.1f}",
                 r.device or "", "" if r.psnr is None else f"{r.psnr:.2f}",
                 first_line(r.error) if errors else "") for r in s.records]
        print_table(f"{path} [{s.stage}]: {s.summary()}", rows,
                    header=("item", "state", "attempts", "seconds", "device", "psnr", "error"))
    if any(s.count("failed") for s in stages):
        sys.exit(1)
