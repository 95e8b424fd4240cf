"""`perfdata mirror index DIR` and `perfdata mirror serve DIR`: host a copy of a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from perfdata.commands.common import print_table


@click.group()
def mirror() -> None:
    """Index or serve a local copy of a dataset."""


@mirror.command("index")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(["co3d", "scannet"]), default=None, help="Default: from the layout.")
def index(root: Path, dataset: str | None) -> None:
    """Hash every file under ROOT and write ROOT/index.json (chunk -> path, size, sha256)."""
    import json

    from perfdata.download.mirror import index_directory

    path = index_directory(root, dataset)
    chunks = json.loads(path.read_text())["chunks"]
    n_files = sum(len(v) for v in chunks.values())
    n_bytes = sum(e["size"] for v in chunks.values() for e in v)
    print_table("mirror index", [("index", path), ("chunks", len(chunks)), ("files", n_files), ("bytes", f"{n_bytes:,}")])


@mirror.command("serve")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, help="Port (0 = any free one).")
def serve(root: Path, host: str, port: int) -> None:
    """Serve ROOT over HTTP with Range support until interrupted."""
    from perfdata.download.mirror import serve_directory

    server, url = serve_directory(root, host, port)
    click.echo(f"serving {root} at {url} (Ctrl-C to stop); use --source {url}")
    try:
        while server.thread is not None and server.thread.is_alive():
            server.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
