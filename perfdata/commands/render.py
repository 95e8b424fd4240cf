"""`perfdata render`: novel views (rgb, depth, mask, background, labels) of a store's scenes, to files or shards."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

import click

from perfdata.commands.common import print_table, runner_options

if TYPE_CHECKING:
    from collections.abc import Callable

    from perfdata.runner import RunConfig


@click.command()
@click.option("--store", help="Dataset store (zarr path or fsspec URL), or a folder of fits.")
@click.option("--model", type=click.Path(file_okay=False), help="A generalizable run: render --data's scenes through it.")
@click.option("--reader", help="With --model: reader of --data.")
@click.option("--data", type=click.Path(), help="With --model: the (unseen) scenes to render.")
@click.option("--source-views", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --model: source views per scene.")
@click.option("--source-choice", type=click.Choice(["spread", "nearest"]), default=None,
              help="With --model: one spread set of source views per scene, or each view's nearest frames "
                   "(default: the run's own choice).")
@click.option("--out", type=click.Path(), help="Render folder: <scene_id>/ with per-view files (see docs).")
@click.option("--shards", "shards_dir", type=click.Path(), help="Write WebDataset shards here instead.")
@click.option("--scenes", "scene_ids", multiple=True, help="Scene ids (repeatable; default all).")
@click.option("--views", type=int, default=50, show_default=True, help="Views per scene.")
@click.option("--size", type=int, default=300, show_default=True, help="Longer image side in pixels.")
@click.option("--poses", type=click.Choice(["interpolate", "orbit", "train"]), default="interpolate",
              show_default=True, help="Interpolations of nearby training cameras, an orbit, or the training cameras.")
@click.option("--cameras", "cameras_file", type=click.Path(dir_okay=False), default=None,
              help="Render the cameras of this file instead (transforms.json, a render's cameras.json or a "
                   "nerfstudio camera_path.json, in the scene's world frame): score a fit on given views.")
@click.option("--what", default="rgb,depth,mask,bg,label", show_default=True, help="Outputs, comma-separated.")
@click.option("--depth-format", type=click.Choice(["png", "npy", "both"]), default="png", show_default=True)
@click.option("--min-psnr", type=float, help="Skip (and list) scenes whose fit PSNR is below this.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--memory-budget", type=float, default=4096.0, show_default=True, help="MB one view may use.")
@click.option("--maxcount", type=int, default=1000, show_default=True, help="With --shards: samples per shard.")
@click.option("--maxsize", type=int, default=1 << 30, show_default=True, help="With --shards: bytes per shard.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="With --shards: val scenes.")
@click.option("--mix-mb", type=click.IntRange(0), default=1024, show_default=True,
              help="With --shards: shuffle buffer (MiB) mixing scenes into the shards, as `perfdata pack`; 0: scene order.")
@runner_options
def render(store: str | None, model: str | None, reader: str | None, data: str | None, source_views: int,
           source_choice: str | None, out: str | None, shards_dir: str | None, scene_ids: tuple[str, ...], views: int, size: int,
           poses: str, cameras_file: str | None, what: str, depth_format: str, min_psnr: float | None, seed: int, device: str,
           memory_budget: float, maxcount: int, maxsize: int, val_fraction: float, mix_mb: int, run: RunConfig) -> None:
    """Render a store's scenes (or, with --model, unseen scenes through a generalizable run), one runner item
    per scene (--out; --shards renders in this process); completed scenes are kept on a rerun. Exits 1 if any
    scene failed."""
    from perfdata.errors import ConfigError
    from perfdata.pipelines.render import RenderConfig, render_store
    from perfdata.shards import PackConfig

    if (store is None) == (model is None):
        raise ConfigError("give exactly one of --store STORE and --model RUN")
    if model is not None:
        from perfdata.commands.fit_generalizable import render_model_command

        if cameras_file is not None:
            raise ConfigError("--cameras renders a store's scenes; it is not an option of --model")

        return render_model_command(model, reader, data, out, scene_ids, run, source_views=source_views,
                                    source_choice=source_choice, n_views=views, poses=poses, what=tuple(w for w in what.split(",") if w),
                                    depth_format=depth_format, seed=seed, device=device,
                                    size=size if size != 300 else None)
    if source_choice is not None:
        raise ConfigError("--source-choice is an option of --model")
    if (out is None) == (shards_dir is None):
        raise ConfigError("give exactly one of --out DIR and --shards DIR")
    if cameras_file is not None:
        from perfdata.pipelines.camera_files import read_camera_file

        views = len(read_camera_file(cameras_file))  # a bad file is bad input before anything is written
    cfg = RenderConfig(
        scenes=scene_ids, n_views=views, size=size, poses=poses, cameras_file=cameras_file, what=tuple(w for w in what.split(",") if w),
        depth_format=depth_format, min_psnr=min_psnr, seed=seed, device=device, memory_budget_mb=memory_budget,
        shards=shards_dir is not None, dry_run=run.dry_run,
        pack=PackConfig(maxcount=maxcount, maxsize=maxsize, val_fraction=val_fraction, seed=seed, mix_bytes=mix_mb << 20),
    )
    assert store is not None  # exactly one of --store and --model; --model returned above
    with _progress() as report:
        result = render_store(store, cast(str, out or shards_dir), cfg, report, run)
    rows = [(s, "rendered" if not run.dry_run else "planned", "") for s in result.rendered]
    rows += [(s, "kept (done)", "") for s in result.kept]
    rows += [(s, "skipped", why) for s, why in result.skipped] + [(s, "failed", e) for s, e in result.failed]
    title = f"render -> {out or shards_dir}: {result.n_views} views in {result.seconds:.1f} s"
    if result.shards:
        title += f", {len(result.shards)} shards"
    print_table(title, rows, header=("scene", "status", "note"))
    if result.failed:
        sys.exit(1)


class _progress:
    """A rich progress bar fed with (scene_id, views done, views in scene)."""

    def __enter__(self) -> Callable[[str, int, int], None]:
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("render", total=None)
        return self.update

    def update(self, scene_id: str, done: int, total: int) -> None:
        self.bar.update(self.task, description=f"{scene_id}", completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
