"""`perfdata demo`: the whole pipeline on a handful of embedded synthetic scenes, leaving a report.

The demo is a list of named steps run in order over one `DemoContext`:
1. synthesize object and room scenes into OUT/mirror/00/ (the layout of the `synthetic` dataset manifest),
2. index that mirror and serve it over HTTP on loopback, then `download` it into OUT/downloads/ (so the demo
   exercises the resumable, verified download path),
3. fit every scene on the per-scene runner (OUT/fits/), by default on a dask LocalCluster of 2 worker
   processes (`--executor dask:2`, as `perfdata fit --executor` does): a Plenoxel grid per object scene and a
   semantic field (`--method semantic`: the grid plus class logits learnt from the label maps) per room, both
   methods' scenes on one cluster at once,
4. export them to the zarr store OUT/dataset.zarr (rooms with the semantic field's labels) and give the other
   scenes' voxels 3D labels fused from the 2D label maps through depth,
5. render novel views (OUT/renders/), 6. pack them into WebDataset shards (OUT/shards/),
7. train cls2d on the shards, cls3d on every stored grid and seg3d on the rooms' grids (OUT/train/<task>/,
   `perfdata.pipelines.demo_train`),
8. render an orbit per scene (OUT/turntables/) into OUT/report/turntables/<scene>.gif,
9. write OUT/report/contact_sheet.png (inputs), OUT/report/report.md and OUT/report/index.html (the HTML
   report, `perfdata.pipelines.demo_report`).
Every step skips work already done, so a rerun of the demo is quick; OUT/.demo.lock keeps a second demo off the
same folder while one runs (`demo_lock`).

Measured on the 2-core CPU (defaults: 3 object + 3 room scenes of 64 px, 20 s fits on dask:2): ~100 s in all
(fit ~70 s of it), a rerun ~6 s. A semantic fit costs 1.3x a plenoxel one per step (room_0000, 400 steps, one
thread: 45.9 s against 35.2 s, same psnr, miou 0.92), so within the same budget it takes fewer steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.atomic import write_text
from perfdata.markers import ItemBusy

MIRROR_CHUNK = "00"
DEMO_LOCK = ".demo.lock"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo makes."""

    out: Path
    """Output folder: mirror/, downloads/, fits/, dataset.zarr, renders/, shards/, train/, report/."""
    n_scenes: int = 3
    """Object scenes, and as many room scenes unless `n_rooms` is given."""
    n_rooms: int | None = None
    """Room scenes (None: n_scenes); seg3d trains on them and holds about a third out for val."""
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
    executor: str = "dask:2"
    """Where the fits run (`perfdata.executor` spec): a LocalCluster of 2 worker processes by default."""
    semantic_rooms: bool = True
    """Fit the room scenes with `--method semantic` (else plenoxel, like the objects)."""
    train_3d_epochs: int = 8
    """Epochs of the 3D classifier and segmenter."""

    def __post_init__(self) -> None:
        from perfdata.executor import parse_executor

        parse_executor(self.executor)  # a bad spec is a ConfigError before anything is made


@dataclass
class DemoContext:
    """State the steps share: scene folders, rows of the scenes table, artefacts and step timings."""

    cfg: DemoConfig
    scene_dirs: list[Path] = field(default_factory=list)
    scene_rows: list[dict[str, Any]] = field(default_factory=list)
    artefacts: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    train_rows: list[dict[str, Any]] = field(default_factory=list)
    """One summary per trained downstream task (`demo_train.summary`)."""

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
    trainings: tuple[dict[str, Any], ...] = ()
    """The downstream tasks' summaries (task, metric, val, chance, ...)."""


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
    with demo_lock(Path(cfg.out)):
        for name, step in steps if steps is not None else default_steps():
            if on_step is not None:
                on_step(name)
            start = time.perf_counter()
            step(ctx)
            ctx.timings[name] = time.perf_counter() - start
    return DemoResult(Path(cfg.out), tuple(ctx.scene_rows), dict(ctx.artefacts), dict(ctx.timings), tuple(ctx.notes),
                      tuple(ctx.train_rows))


@contextlib.contextmanager
def demo_lock(out: Path) -> Iterator[None]:
    """Hold OUT/.demo.lock (an flock) for a demo run: a second demo on the same folder at the same time is refused
    (ItemBusy, naming the folder and the holder's pid) before it touches anything. The stages' own per-item
    locks guard their items too; this keeps the steps between them (synth, download, report) single-writer."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / DEMO_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise ItemBusy(f"demo: another demo run (pid {holder or '?'}) is writing {out}; not started") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _synth_step(kind: str) -> DemoStep:
    def step(ctx: DemoContext) -> None:
        from perfdata.synthetic import SynthConfig, synthesize

        cfg = ctx.cfg
        n = cfg.n_scenes if kind == "objects" or cfg.n_rooms is None else cfg.n_rooms
        synth = SynthConfig(kind, ctx.path("mirror", MIRROR_CHUNK), n, cfg.n_views, cfg.size, cfg.seed)  # type: ignore[arg-type]
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
    """Every scene's fit on the demo's executor within the time budget: plenoxel for the objects, semantic for
    the rooms (`cfg.semantic_rooms`); with a dask executor both groups share one cluster, submitted at once, so
    neither waits for the other's last scene. Held-out metrics go into the scenes table."""
    from concurrent.futures import ThreadPoolExecutor

    from perfdata.executor import DaskClient, ExecutorConfig, parse_executor
    from perfdata.markers import Markers

    groups = fit_groups(ctx)
    executor = parse_executor(ctx.cfg.executor)
    markers = Markers.in_folder(ctx.path("fits"), "fit")
    todo = [g for g in groups if not all(markers.is_done(i) for i in g[1])]
    if executor.kind == "dask" and todo:
        with DaskClient(executor) as client:
            shared = ExecutorConfig("address", address=client.scheduler_info()["address"])
            with ThreadPoolExecutor(len(groups)) as pool:
                outcomes = [o for done in pool.map(lambda g: fit_group(ctx, g, shared), groups) for o in done]
    else:
        outcomes = [o for g in groups for o in fit_group(ctx, g, executor if todo else ExecutorConfig())]
    where = f"on {ctx.cfg.executor}" if todo else "(all done before)"
    ctx.notes.append(f"fit {where}: " + ", ".join(f"{len(ids)} {cfg.method}" for cfg, ids in groups))
    for outcome in outcomes:
        row = ctx.row(outcome.item)
        row["fit"] = outcome.status if outcome.status != "skipped" else "done"
        if outcome.seconds:
            row["fit_s"] = round(outcome.seconds, 1)
        for key in ("psnr", "ssim", "depth_abs_rel", "miou"):
            if key in outcome.metrics:
                row[key] = round(float(outcome.metrics[key]), 3)
        if outcome.error:
            ctx.notes.append(f"fit {outcome.item} {outcome.status}: {outcome.error}")


def fit_groups(ctx: DemoContext) -> list[tuple[Any, list[str]]]:
    """(FitConfig, scene ids) per fit method: the objects' plenoxel fits and the rooms' semantic ones."""
    from perfdata.pipelines.fitconfig import FitConfig

    cfg = FitConfig(max_seconds=ctx.cfg.fit_seconds, seed=ctx.cfg.seed, holdout_every=6, device="cpu")
    if ctx.cfg.fit_steps is not None:
        cfg = dataclasses.replace(cfg, steps=ctx.cfg.fit_steps)
    rooms = [r["scene"] for r in ctx.scene_rows if r["kind"] == "rooms"]
    others = [r["scene"] for r in ctx.scene_rows if r["kind"] != "rooms"]
    for r in ctx.scene_rows:
        r["method"] = "semantic" if r["kind"] == "rooms" and ctx.cfg.semantic_rooms else "plenoxel"
    if not ctx.cfg.semantic_rooms:
        return [(cfg, others + rooms)]
    return [g for g in ((cfg, others), (dataclasses.replace(cfg, method="semantic"), rooms)) if g[1]]


def fit_group(ctx: DemoContext, group: tuple[Any, list[str]], executor: Any) -> list[Any]:
    from perfdata.pipelines.fit import fit_scenes

    from perfdata.runner import RunConfig

    cfg, ids = group
    return fit_scenes("synthetic", ctx.path("downloads", MIRROR_CHUNK), ids, ctx.path("fits"), cfg,
                      RunConfig(executor))


def export_step(ctx: DemoContext) -> None:
    from perfdata.pipelines.export import ExportConfig, export_fits

    result = export_fits(ctx.path("fits"), str(ctx.path("dataset.zarr")), ExportConfig(dataset="perfdata-demo"))
    for scene in result.scenes:
        if scene.n_voxels:
            ctx.row(scene.scene_id)["voxels"] = scene.n_voxels
    ctx.artefacts["store"] = ctx.path("dataset.zarr")


def label_step(ctx: DemoContext) -> None:
    """3D labels for every stored scene, fused from the downloaded 2D label maps through depth. Scenes labelled
    at export (the rooms' semantic fields) keep those labels -- unless a fit too short to learn them left no
    voxel labelled, then they are fused like the others (noted), so seg3d has labels to learn."""
    from perfdata.pipelines.labels import LabelConfig, label_scenes

    from perfdata.runner import RunConfig
    from perfdata.store import open_store

    url = str(ctx.path("dataset.zarr"))
    kw: dict[str, Any] = dict(reader="synthetic", data=str(ctx.path("downloads", MIRROR_CHUNK)))
    outcomes = {o.item: o for o in label_scenes(url, open_store(url).scene_ids, LabelConfig(), **kw)}
    store = open_store(url)
    semantic = {i: store.read_scene(i).labels for i, o in outcomes.items()
                if o.status == "skipped" and not o.facts.get("n_voxels")}
    empty = [i for i, labels in semantic.items() if labels is None or not (labels >= 0).any()]
    if empty:
        ctx.notes.append(f"label: the semantic fits of {', '.join(empty)} labelled no voxel (too short to learn "
                         "labels); their labels are fused from the 2D label maps instead")
        outcomes.update({o.item: o for o in label_scenes(url, empty, LabelConfig(), **kw, run=RunConfig(force=True))})
    for o in outcomes.values():
        labels = semantic.get(o.item)
        if o.status in ("done", "skipped") and o.facts.get("n_voxels"):
            ctx.row(o.item)["labelled"] = f"{o.facts['n_labelled'] / max(o.facts['n_voxels'], 1):.0%}"
        elif o.status == "skipped" and labels is not None and len(labels):  # labelled at export
            ctx.row(o.item)["labelled"] = f"{float((labels >= 0).mean()):.0%} (semantic)"
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
    """cls2d on the shards, cls3d on every stored grid, seg3d on the rooms (`perfdata.pipelines.demo_train`);
    a task already trained with the same settings is kept."""
    from perfdata.pipelines.demo_train import DemoTraining, task_configs, train_task

    training = DemoTraining(epochs_2d=ctx.cfg.train_epochs, epochs_3d=ctx.cfg.train_3d_epochs, seed=ctx.cfg.seed)
    configs = task_configs(ctx.path("train"), ctx.path("shards"), ctx.path("dataset.zarr"), training)
    for task, cfg in configs.items():
        try:
            row = train_task(cfg)
        except Exception as exc:  # a failed task is a note on the page; the others still train
            from perfdata.runner import describe_error

            ctx.notes.append(f"train {task} failed: {describe_error(exc)[0]}")
            continue
        ctx.train_rows.append(row)
        ctx.artefacts[f"train {task}"] = Path(cfg.out) / "metrics.json"


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


def summary_line(cfg: DemoConfig) -> str:
    rooms = "semantic fits (grid + class logits)" if cfg.semantic_rooms else "plenoxel fits"
    budget = f"{cfg.fit_steps} steps" if cfg.fit_steps is not None else f"{cfg.fit_seconds:g} s"
    n_rooms = cfg.n_scenes if cfg.n_rooms is None else cfg.n_rooms
    return (f"{cfg.n_scenes} object + {n_rooms} room scenes, {cfg.n_views} views of {cfg.size}x{cfg.size} px, "
            f"seed {cfg.seed}; objects: plenoxel fits, rooms: {rooms}, {budget} each on {cfg.executor} "
            "(psnr / ssim / depth_abs_rel / miou on held-out views).")


def _md_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |" for r in rows), ""]


def report_step(ctx: DemoContext) -> None:
    """report.md: the scenes table (with fit metrics), the training metrics, notes, artefacts and step timings;
    then the HTML report."""
    cfg = ctx.cfg
    lines = ["# perfdata demo", "", summary_line(cfg), "", *_md_table(ctx.scene_rows), *_md_table(ctx.train_rows)]
    lines += [f"- {note}" for note in ctx.notes] + [""]
    lines += [f"- {name}: `{p.relative_to(Path(cfg.out)) if p.is_relative_to(Path(cfg.out)) else p}`"
              for name, p in ctx.artefacts.items()]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.2f} |" for name, sec in ctx.timings.items()]
    path = ctx.path("report", "report.md")
    write_text(path, "\n".join(lines) + "\n")
    ctx.artefacts["report"] = path
    ctx.artefacts["html report"] = write_html_report(ctx)


def write_html_report(ctx: DemoContext) -> Path:
    """OUT/report/index.html from what the steps made (`perfdata.pipelines.demo_report`)."""
    from perfdata.pipelines.demo_report import ReportInput, read_training, write_report
    from perfdata.pipelines.demo_train import TASKS

    arts = ctx.artefacts
    trainings = [t for t in (read_training(ctx.path("train", task)) for task in TASKS) if t is not None]
    fit_files = {f"fit {r['scene']}": ctx.path("fits", r["scene"], "fit.json") for r in ctx.scene_rows}
    data = ReportInput(
        out=Path(ctx.cfg.out), title="perfdata demo", summary=summary_line(ctx.cfg),
        scenes=ctx.scene_rows, input_sheet=arts.get("contact_sheet"),
        render_sheets={k.removeprefix("renders "): p for k, p in arts.items() if k.startswith("renders ")},
        turntables={k.removeprefix("turntable "): p for k, p in arts.items() if k.startswith("turntable ")},
        trainings=trainings, train_rows=ctx.train_rows,
        artefacts={**arts, **{k: p for k, p in fit_files.items() if p.is_file()},
                   "fits": ctx.path("fits"), "renders": ctx.path("renders"), "downloads": ctx.path("downloads")},
        notes=ctx.notes, timings=ctx.timings)
    return write_report(data)
