"""`perfdata export`: fit folders (or released PeRFception scene folders) -> the zarr store, PLY or HDF5."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from perfdata.commands.common import print_table, runner_options

if TYPE_CHECKING:
    from perfdata.runner import RunConfig


@click.command()
@click.option("--fits", "fits_dir", type=click.Path(), help="Folder of fit outputs (DIR/<scene_id>/, DONE).")
@click.option("--from-perfception", "perfception", type=click.Path(),
              help="A released PeRFception scene folder, a folder of them, or of chunk folders NN/.")
@click.option("--from-model", "from_model", type=click.Path(file_okay=False),
              help="A generalizable run: export its predictions of --data's scenes.")
@click.option("--reader", help="With --from-model: reader of --data.")
@click.option("--data", type=click.Path(), help="With --from-model: the scenes to predict.")
@click.option("--source-views", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --from-model: source views per scene.")
@click.option("--resolution", type=click.IntRange(min=2), default=64, show_default=True,
              help="With --from-model: grid resolution.")
@click.option("--out", required=True, help="Store path or fsspec URL (zarr), or an output folder (ply, h5).")
@click.option("--format", "fmt", type=click.Choice(["zarr", "ply", "h5"]), default="zarr", show_default=True)
@click.option("--sh-bits", type=click.IntRange(1, 8), default=8, show_default=True, help="Bits per SH value.")
@click.option("--scenes", "scene_ids", multiple=True, help="Scene ids to export (repeatable; default all).")
@click.option("--dataset", default="perfdata", show_default=True, help="Dataset name in the store's attrs.")
@click.option("--min-psnr", type=float, help="Leave out (and list) fits whose held-out PSNR is below this.")
@click.option("--portable", is_flag=True, help="Use only zarr v3 spec codecs (no numcodecs delta).")
@runner_options
def export(fits_dir: str | None, perfception: str | None, from_model: str | None, reader: str | None,
           data: str | None, source_views: int, resolution: int, out: str, fmt: str, sh_bits: int,
           scene_ids: tuple[str, ...], dataset: str, min_psnr: float | None, portable: bool, run: RunConfig) -> None:
    """Write the dataset store (zarr), PLY per scene, or HDF5 point files; done scenes are skipped. Use
    --executor threads:N to write N scenes at once in this process. Exits 1 if any scene failed."""
    from perfdata.errors import ConfigError
    from perfdata.pipelines.export import ExportConfig, export_fits
    from perfdata.store.writer import WriteConfig

    if sum(x is not None for x in (fits_dir, perfception, from_model)) != 1:
        raise ConfigError("give exactly one of --fits DIR, --from-perfception PATH and --from-model RUN")
    if from_model is not None:
        from perfdata.commands.fit_generalizable import export_model_command

        if fmt != "zarr" or run.dry_run or min_psnr is not None:
            raise ConfigError("--from-model writes the zarr store only (no --dry-run, no --min-psnr)")
        return export_model_command(from_model, reader, data, out, scene_ids, run, source_views=source_views,
                                    resolution=resolution, dataset=dataset,
                                    write=WriteConfig(sh_bits=sh_bits, portable=portable))
    from perfdata.runner import count

    cfg = ExportConfig(format=fmt, scenes=scene_ids, dataset=dataset, min_psnr=min_psnr, force=run.force,
                       dry_run=run.dry_run, write=WriteConfig(sh_bits=sh_bits, portable=portable))
    if perfception is not None:
        if fmt != "zarr":
            raise ConfigError("--from-perfception writes the zarr store only")
        from perfdata.pipelines.perfception import import_perfception

        result = import_perfception(perfception, out, cfg)
    else:
        assert fits_dir is not None  # exactly one of --fits, --from-perfception and --from-model
        result = export_fits(fits_dir, out, cfg, run)
    rows = [(s.scene_id, s.status, s.n_voxels or "", f"{s.seconds:.2f}" if s.seconds else "", s.error)
            for s in result.scenes]
    counts = ", ".join(f"{n} {k}" for k, n in count(result.scenes).items())
    print_table(f"export -> {out}: {counts or 'nothing to do'}", rows,
                header=("scene", "status", "voxels", "seconds", "error"))
    if any(s.status in ("failed", "failed earlier", "busy") for s in result.scenes):
        sys.exit(1)

