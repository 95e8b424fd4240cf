"""`perfdata demo`: the whole pipeline on a handful of embedded synthetic scenes, leaving a report.

The demo is a list of named steps run in order over one `DemoContext`:
1. synthesize object and room scenes into OUT/mirror/00/ (the layout of the `synthetic` dataset manifest),
2. index that mirror and serve it over HTTP on loopback, then `download` it into OUT/downloads/ (so the demo
   exercises the resumable, verified download path),
3. fit a Plenoxel grid per scene (OUT/fits/), 4. export them to the zarr store OUT/dataset.zarr and give its
   voxels 3D labels fused from the 2D label maps through depth,
5. render novel views (OUT/renders/), 6. pack them into WebDataset shards (OUT/shards/),
7. train a small 2D classifier on the shards (OUT/train/),
8. render an orbit per scene (OUT/turntables/) into OUT/report/turntables/<scene>.gif,
9. write OUT/report/contact_sheet.png (inputs), OUT/report/report.md and OUT/report/index.html (the HTML
   report, `perfdata.pipelines.demo_report`).
Every step skips work already done, so a rerun of the demo is quick.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.atomic import write_text

MIRROR_CHUNK = "00"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo makes."""

    out: Path
    """Output folder: mirror/, downloads/, fits/, dataset.zarr, renders/, shards/, train/, report/."""
    n_scenes: int = 3
    """Object scenes, and as many room scenes."""
    size: int = 64
    """Image width = height in pixels."""
    n_views: int = 12
    """Cameras per scene."""
    seed: int = 0
    """Seed of the synthetic scenes (and of the fits, renders and training)."""
    sheet_views: int = 2
    """Views per scene shown on the contact sheet (four tiles each)."""
    fit_seconds: float = 20.0
    """Wall-clock budget of each scene's fit."""
    fit_steps: int | None = None
    """Optimisation steps of each fit (None: as many as the budget allows); steps make a run reproducible."""
    render_views: int = 8
    """Novel views rendered per scene."""
    train_epochs: int = 6
    """Epochs of the 2D classifier."""
    turntable_views: int = 12
    """Frames of each scene's turntable animation."""


@dataclass
class DemoContext:
    """State the steps share: scene folders, rows of the scenes table, artefacts and step timings."""

    cfg: DemoConfig
    scene_dirs: list[Path] = field(default_factory=list)
    scene_rows: list[dict[str, Any]] = field(default_factory=list)
    artefacts: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def path(self, *parts: str) -> Path:
        return Path(self.cfg.out).joinpath(*parts)

    def row(self, scene_id: str) -> dict[str, Any]:
        return next(r for r in self.scene_rows if r["scene"] == scene_id)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run made."""

    out: Path
    scenes: tuple[dict[str, Any], ...]
    artefacts: dict[str, Path]
    timings: dict[str, float]
    notes: tuple[str, ...] = ()


DemoStep = Callable[[DemoContext], None]


def default_steps() -> list[tuple[str, DemoStep]]:
    """The demo's steps, in order."""
    return [
        ("synth objects", _synth_step("objects")),
        ("synth rooms", _synth_step("rooms")),
        ("download", download_step),
        ("contact sheet", contact_sheet_step),
        ("fit", fit_step),
        ("export", export_step),
        ("label", label_step),
        ("render", render_step),
        ("pack", pack_step),
        ("train", train_step),
        ("turntables", turntable_step),
        ("report", report_step),
    ]


def run_demo(cfg: DemoConfig, steps: Sequence[tuple[str, DemoStep]] | None = None,
             on_step: Callable[[str], None] | None = None) -> DemoResult:
    """Run the steps (default: `default_steps()`) and return what they made; `on_step(name)` before each."""
    ctx = DemoContext(cfg)
    for name, step in steps if steps is not None else default_steps():
        if on_step is not None:
            on_step(name)
        start = time.perf_counter()
        step(ctx)
        ctx.timings[name] = time.perf_counter() - start
    return DemoResult(Path(cfg.out), tuple(ctx.scene_rows), dict(ctx.artefacts), dict(ctx.timings), tuple(ctx.notes))


def _synth_step(kind: str) -> DemoStep:
    def step(ctx: DemoContext) -> None:
        from perfdata.synthetic import SynthConfig, synthesize

        cfg = ctx.cfg
        synth = SynthConfig(kind, ctx.path("mirror", MIRROR_CHUNK), cfg.n_scenes, cfg.n_views, cfg.size, cfg.seed)  # type: ignore[arg-type]
        for outcome in synthesize(synth):
            ctx.scene_dirs.append(outcome.path)
            ctx.scene_rows.append({
                "scene": outcome.spec.name,
                "kind": kind,
                "class": outcome.spec.shape or "room",
                "seed": outcome.spec.seed,
            })

    return step


def download_step(ctx: DemoContext) -> None:
    """Index the mirror, serve it on loopback and download it: the scenes used from here on are the downloaded
    copies, verified by sha256."""
    from perfdata.pipelines.download import DownloadConfig, download

    from perfdata.download import index_directory, serve_directory

    mirror = ctx.path("mirror")
    index_directory(mirror, dataset="synthetic")
    server, url = serve_directory(mirror)
    with server:
        result = download(DownloadConfig(dataset="synthetic", chunks=str(int(MIRROR_CHUNK)), outdir=ctx.path("downloads"), source=url))
    ctx.notes.append(f"download: {result.n_fetched} files fetched, {result.n_skipped} already verified, "
                     f"{result.bytes_total / 1e6:.1f} MB from {url}")
    ctx.scene_dirs = [ctx.path("downloads", MIRROR_CHUNK, d.name) for d in ctx.scene_dirs]


def contact_sheet_step(ctx: DemoContext) -> None:
    """One row per scene (read back through the `synthetic` reader): colour, depth, mask, labels per view."""
    from perfdata.contact import frame_panels, write_contact_sheet
    from perfdata.readers import get_reader

    reader = get_reader("synthetic")
    rows = []
    for folder, row in zip(ctx.scene_dirs, ctx.scene_rows, strict=True):
        scene = reader.load_scene(folder, folder.name)
        n_classes = len(scene.label_names) if scene.label_names else None
        rows.append([t for f in scene.frames[: ctx.cfg.sheet_views] for t in frame_panels(f, n_classes)])
        row["frames"] = len(scene.frames)
    path = ctx.path("report", "contact_sheet.png")
    write_contact_sheet(path, rows)
    ctx.artefacts["contact_sheet"] = path


def fit_step(ctx: DemoContext) -> None:
    """A Plenoxel fit per scene within the time budget; held-out metrics go into the scenes table."""
    from perfdata.pipelines.fit import fit_scenes
    from perfdata.pipelines.fitconfig import FitConfig

    cfg = FitConfig(max_seconds=ctx.cfg.fit_seconds, seed=ctx.cfg.seed, holdout_every=6)
    if ctx.cfg.fit_steps is not None:
        cfg = dataclasses.replace(cfg, steps=ctx.cfg.fit_steps)
    for outcome in fit_scenes("synthetic", ctx.path("downloads", MIRROR_CHUNK), None, ctx.path("fits"), cfg):
        row = ctx.row(outcome.item)
        row["fit"] = outcome.status if outcome.status != "skipped" else "done"
        for key in ("psnr", "ssim", "depth_abs_rel"):
            if key in outcome.metrics:
                row[key] = round(float(outcome.metrics[key]), 3)
        if outcome.error:
            ctx.notes.append(f"fit {outcome.item} {outcome.status}: {outcome.error}")


def export_step(ctx: DemoContext) -> None:
    from perfdata.pipelines.export import ExportConfig, export_fits

    result = export_fits(ctx.path("fits"), str(ctx.path("dataset.zarr")), ExportConfig(dataset="perfdata-demo"))
    for scene in result.scenes:
        if scene.n_voxels:
            ctx.row(scene.scene_id)["voxels"] = scene.n_voxels
    ctx.artefacts["store"] = ctx.path("dataset.zarr")


def label_step(ctx: DemoContext) -> None:
    """3D labels for every stored scene, fused from the downloaded 2D label maps through depth (scenes that
    already have labels keep them)."""
    from perfdata.pipelines.labels import LabelConfig, label_scenes

    from perfdata.store import open_store

    url = str(ctx.path("dataset.zarr"))
    outcomes = label_scenes(url, open_store(url).scene_ids, LabelConfig(), reader="synthetic",
                            data=str(ctx.path("downloads", MIRROR_CHUNK)))
    for o in outcomes:
        if o.status in ("done", "skipped") and o.facts.get("n_voxels"):
            ctx.row(o.item)["labelled"] = f"{o.facts['n_labelled'] / max(o.facts['n_voxels'], 1):.0%}"
        elif o.error:
            ctx.notes.append(f"label {o.item} {o.status}: {o.error}")


def render_step(ctx: DemoContext) -> None:
    from perfdata.pipelines.render import RenderConfig, render_store

    cfg = RenderConfig(n_views=ctx.cfg.render_views, size=ctx.cfg.size, seed=ctx.cfg.seed, contact_views=4)
    result = render_store(str(ctx.path("dataset.zarr")), ctx.path("renders"), cfg)
    for scene_id, error in result.failed:
        ctx.notes.append(f"render {scene_id} failed: {error}")
    for scene_id in (*result.rendered, *result.kept):
        sheet = ctx.path("renders", scene_id, "contact.png")
        if sheet.is_file():
            ctx.artefacts[f"renders {scene_id}"] = sheet


def pack_step(ctx: DemoContext) -> None:
    from perfdata.pipelines.pack import PackConfig, pack_renders

    result = pack_renders(ctx.path("renders"), ctx.path("shards"), PackConfig(val_fraction=0.34, seed=ctx.cfg.seed))
    ctx.notes.append("pack: " + ", ".join(f"{split} {n} samples" for split, n in result.n_samples.items())
                     + f" in {len(result.shards)} shards")
    if result.index_path is not None:
        ctx.artefacts["shards"] = result.index_path


def train_step(ctx: DemoContext) -> None:
    """A small 2D classifier on the shards (object classes and rooms): a smoke run of the downstream path."""
    from perfdata.downstream.train import TrainConfig, train

    cfg = TrainConfig(task="cls2d", data=str(ctx.path("shards")), out=str(ctx.path("train")),
                      epochs=ctx.cfg.train_epochs, batch_size=8, seed=ctx.cfg.seed, size=32)
    result = train(cfg)
    ctx.notes.append(f"train cls2d: {json.dumps(_last_epoch(result))}")
    ctx.artefacts["training curve"] = ctx.path("train", "curve.png")


def turntable_step(ctx: DemoContext) -> None:
    """An orbit of each stored scene (rgb only, OUT/turntables/), as a looping GIF in OUT/report/turntables/."""
    import imageio.v3 as iio
    from perfdata.pipelines.demo_report import write_turntable
    from perfdata.pipelines.render import RenderConfig, render_store

    from perfdata.records.render import read_render

    cfg = RenderConfig(n_views=ctx.cfg.turntable_views, size=ctx.cfg.size, seed=ctx.cfg.seed, poses="orbit",
                       what=("rgb",))
    result = render_store(str(ctx.path("dataset.zarr")), ctx.path("turntables"), cfg)
    for scene_id, error in result.failed:
        ctx.notes.append(f"turntable {scene_id} failed: {error}")
    for scene_id in (*result.rendered, *result.kept):
        folder = ctx.path("turntables", scene_id)
        meta = read_render(folder)
        frames = [iio.imread(folder / f"{v['name']}.rgb.png")[..., :3] for v in meta.views]
        ctx.artefacts[f"turntable {scene_id}"] = write_turntable(frames, ctx.path("report", "turntables",
                                                                                  f"{scene_id}.gif"))


def _last_epoch(result: Any) -> dict[str, Any]:
    last = result.epochs[-1] if getattr(result, "epochs", None) else None
    return {} if last is None else {k: v for k, v in vars(last).items() if isinstance(v, (int, float))}


def report_step(ctx: DemoContext) -> None:
    """report.md: the scenes table (with fit metrics), notes, artefacts and step timings."""
    cfg = ctx.cfg
    lines = [
        "# perfdata demo",
        "",
        f"{cfg.n_scenes} object + {cfg.n_scenes} room scenes, {cfg.n_views} views of {cfg.size}x{cfg.size} px, "
        f"seed {cfg.seed}; fits of {cfg.fit_seconds:g} s each (psnr / ssim / depth_abs_rel on held-out views).",
        "",
    ]
    if ctx.scene_rows:
        keys = list(dict.fromkeys(k for r in ctx.scene_rows for k in r))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in ctx.scene_rows]
        lines.append("")
    lines += [f"- {note}" for note in ctx.notes] + [""]
    report_dir = ctx.path("report")
    lines += [f"- {name}: `{p.relative_to(Path(cfg.out)) if p.is_relative_to(Path(cfg.out)) else p}`"
              for name, p in ctx.artefacts.items()]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.2f} |" for name, sec in ctx.timings.items()]
    path = report_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    ctx.artefacts["report"] = path
    ctx.artefacts["html report"] = write_html_report(ctx)


def write_html_report(ctx: DemoContext) -> Path:
    """OUT/report/index.html from what the steps made (`perfdata.pipelines.demo_report`)."""
    from perfdata.pipelines.demo_report import ReportInput, read_training, write_report

    cfg = ctx.cfg
    arts = ctx.artefacts
    training = read_training(ctx.path("train"))
    data = ReportInput(
        out=Path(cfg.out), title="perfdata demo",
        summary=(f"{cfg.n_scenes} object + {cfg.n_scenes} room scenes, {cfg.n_views} views of {cfg.size}x{cfg.size} "
                 f"px, seed {cfg.seed}; fits of {cfg.fit_seconds:g} s each (psnr / ssim / depth_abs_rel on "
                 "held-out views)."),
        scenes=ctx.scene_rows, input_sheet=arts.get("contact_sheet"),
        render_sheets={k.removeprefix("renders "): p for k, p in arts.items() if k.startswith("renders ")},
        turntables={k.removeprefix("turntable "): p for k, p in arts.items() if k.startswith("turntable ")},
        trainings=[training] if training is not None else [],
        artefacts={**arts, **{f"fit {r['scene']}": ctx.path("fits", r["scene"], "fit.json") for r in ctx.scene_rows
                              if ctx.path("fits", r["scene"], "fit.json").is_file()}},
        notes=ctx.notes, timings=ctx.timings)
    return write_report(data)
