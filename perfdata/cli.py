"""The `perfdata` command line. Commands live in `perfdata/commands/<name>.py` (each a click command that only
parses, calls a stage and reports) and are imported only when used, so `perfdata --help` stays fast."""

from __future__ import annotations

import importlib
import logging
import math
import sys
from typing import Any

import click

from perfdata import __version__

# command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "scenes": "perfdata.commands.scenes:scenes",
    "fit": "perfdata.commands.fit:fit",
    "synth": "perfdata.commands.synth:synth",
    "demo": "perfdata.commands.demo:demo",
    "status": "perfdata.commands.status:status",
    "download": "perfdata.commands.download:download",
    "mirror": "perfdata.commands.mirror:mirror",
    "export": "perfdata.commands.export:export",
    "validate": "perfdata.commands.validate:validate",
    "label": "perfdata.commands.label:label",
    "render": "perfdata.commands.render:render",
    "pack": "perfdata.commands.pack:pack",
    "train": "perfdata.commands.train:train",
}

HELP: dict[str, str] = {
    "scenes": "Inspect what a reader sees in a capture.",
    "fit": "Fit a radiance field (Plenoxel grid) per scene: grid.npz + fit.json.",
    "synth": "Write synthetic scenes with exact depth, masks and labels.",
    "demo": "Run the pipeline on embedded synthetic scenes and write a report.",
    "status": "Done / failed / pending items of a stage's output folder.",
    "download": "Download PeRFception chunks: resumable, verified, parallel.",
    "mirror": "Index or serve (HTTP with Range) a local copy of a dataset.",
    "export": "Write fits (or PeRFception checkpoints) to the zarr store, PLY or HDF5.",
    "validate": "Check a dataset store: schema, versions, shapes, ranges, NaNs, chunks.",
    "label": "Give a store's voxels 3D labels from a labelled mesh or 2D label maps.",
    "render": "Render novel views (rgb, depth, mask, background, labels) of a store's scenes.",
    "pack": "Pack rendered views into deterministic WebDataset shards with index.json.",
    "train": "Train a downstream model (cls2d on shards, cls3d / seg3d on a store): metrics, weights, curve.",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name].split(":")
        return require_finite_floats(getattr(importlib.import_module(module_name), attr))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perfdata")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """perfdata: PeRFception-style datasets -- download, fit, export, render, pack, train."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def require_finite_floats(command: click.Command) -> click.Command:
    """Make every float option of `command` (and of its subcommands) refuse NaN and infinities, once."""
    for param in command.params:
        kinds = param.type.types if isinstance(param.type, click.Tuple) else [param.type]
        if any(isinstance(t, click.types.FloatParamType) for t in kinds) and not getattr(param, "_finite", False):
            param.callback = _finite_callback(param.callback)
            param._finite = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            require_finite_floats(sub)
    return command


def _finite_callback(inner: Any) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        values = value if isinstance(value, (tuple, list)) else [value]
        for v in values:
            for x in v if isinstance(v, (tuple, list)) else [v]:
                if isinstance(x, float) and not math.isfinite(x):
                    raise click.BadParameter(f"{x!r} is not a finite number", ctx=ctx, param=param)
        return value if inner is None else inner(ctx, param, value)

    return check


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a PerfdataError is one line on stderr and a non-zero exit (traceback with --debug).

    Every OSError that reaches here (permission, full disk, not a folder, name too long, ...) becomes such an
    error naming its path (`perfdata.errors.from_os_error`): exit 2 when the input is at fault, 1 when the run
    failed. This is the one place that happens; commands do not catch OSError themselves."""
    from perfdata.errors import PerfdataError, from_os_error

    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="perfdata", standalone_mode=False)
    except (PerfdataError, OSError) as exc:
        if "--debug" in args:
            raise
        err = exc if isinstance(exc, PerfdataError) else from_os_error(exc)
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
