"""The demo's HTML report: OUT/report/index.html, one static page (no script) over what the demo made.

    index.html           the scenes table (fit method and status, held-out psnr / ssim / depth_abs_rel / miou,
                         voxels, labels), the per-scene fit PSNR chart, the input contact sheet, each scene's
                         render contact sheet and turntable, the downstream metrics table (cls2d, cls3d, seg3d),
                         each training run's epochs, curves, confusion matrix and per-class IoU, notes,
                         links to every artefact and the step timings
    fit_psnr.png         bar chart of the per-scene held-out PSNR (matplotlib)
    turntables/<id>.gif  an orbit of the fitted scene (imageio), made by `write_turntable`

Every path on the page is relative to report/, so the folder can be moved or served as it is.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfdata.atomic import atomic_path, write_text

INDEX_NAME = "index.html"
PSNR_CHART = "fit_psnr.png"
SCENE_COLUMNS = ("scene", "kind", "class", "frames", "method", "fit", "fit_s", "psnr", "ssim", "depth_abs_rel", "miou",
                 "voxels", "labelled")
TRAIN_COLUMNS = ("task", "metric", "val", "chance", "val_accuracy", "train_loss", "classes", "n_train", "n_val",
                 "epochs", "seconds", "rerun")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img.sheet { max-width: 100%; image-rendering: pixelated; }
img.turntable { width: 160px; height: 160px; image-rendering: pixelated; }
"""


@dataclass(frozen=True)
class TrainingRun:
    """One downstream training run shown on the page."""

    task: str
    out_dir: Path
    metric: str
    classes: tuple[str, ...]
    epochs: tuple[Mapping[str, Any], ...]
    """Per epoch: epoch, train_loss, train_metric, val_metric, seconds."""
    final: Mapping[str, Any] = field(default_factory=dict)
    """metrics.json's final: val_metric, val_confusion, (seg3d) val_per_class_iou, val_accuracy."""


@dataclass(frozen=True)
class ReportInput:
    """What the page shows (paths anywhere; the page links them relative to its folder)."""

    out: Path
    """The demo's output folder; the page goes to out/report/."""
    title: str
    summary: str
    scenes: Sequence[Mapping[str, Any]]
    input_sheet: Path | None
    render_sheets: Mapping[str, Path]
    turntables: Mapping[str, Path]
    trainings: Sequence[TrainingRun]
    train_rows: Sequence[Mapping[str, Any]]
    """One summary row per downstream task (task, metric, val, chance, ...) for the metrics table."""
    artefacts: Mapping[str, Path]
    notes: Sequence[str]
    timings: Mapping[str, float]


def write_turntable(frames: Sequence[np.ndarray], path: str | Path, frame_ms: int = 120) -> Path:
    """An endlessly looping GIF of (H, W, 3) uint8 frames, written atomically."""
    import imageio.v3 as iio

    assert frames and all(f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 for f in frames), (
        "turntable frames must be (H, W, 3) uint8")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=frame_ms, loop=0)
    return Path(path)


def write_psnr_chart(path: str | Path, scenes: Sequence[Mapping[str, Any]]) -> Path | None:
    """A bar per scene with a held-out psnr; None (nothing written) when no scene has one."""
    from matplotlib.figure import Figure

    rows = [(str(r["scene"]), float(r["psnr"])) for r in scenes if r.get("psnr") is not None]
    if not rows:
        return None
    fig = Figure(figsize=(max(4.0, 0.9 * len(rows) + 2.0), 3.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(rows)), [v for _, v in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([n for n, _ in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="PSNR (dB)", title="fit: held-out PSNR per scene")
    ax.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_report(data: ReportInput) -> Path:
    """out/report/index.html (and its PSNR chart); returns the page's path."""
    report_dir = data.out / "report"
    chart = write_psnr_chart(report_dir / PSNR_CHART, data.scenes)
    parts = [f"<h1>{_e(data.title)}</h1>", f"<p>{_e(data.summary)}</p>", "<h2>Scenes</h2>",
             _scenes_table(data.scenes)]
    if chart is not None:
        parts.append(_figure(report_dir, chart, "held-out PSNR of each scene's fit", "sheet"))
    if data.input_sheet is not None:
        parts += ["<h2>Inputs</h2>", _figure(report_dir, data.input_sheet,
                                              "per scene and view: colour, depth, mask, labels", "sheet")]
    if data.render_sheets or data.turntables:
        parts.append("<h2>Renders</h2>")
        parts += [_figure(report_dir, p, f"{name}: orbit of the fitted grid", "turntable")
                  for name, p in data.turntables.items()]
        parts += [_figure(report_dir, p, f"{name}: novel views (colour, depth, mask, labels)", "sheet")
                  for name, p in data.render_sheets.items()]
    if data.train_rows:
        parts += ["<h2>Downstream metrics</h2>", _rows_table(data.train_rows, TRAIN_COLUMNS)]
    for run in data.trainings:
        parts += _training(report_dir, run)
    if data.notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in data.notes) + "</ul>"]
    parts += ["<h2>Artefacts</h2>", "<ul>" + "".join(
        f'<li>{_e(name)}: {_link(report_dir, p)}</li>' for name, p in data.artefacts.items()) + "</ul>"]
    parts += ["<h2>Steps</h2>", _table(["step", "seconds"], [[n, f"{s:.2f}"] for n, s in data.timings.items()])]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(data.title)}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = report_dir / INDEX_NAME
    write_text(path, page)
    return path


def read_training(out_dir: Path) -> TrainingRun | None:
    """The run a `perfdata train` folder holds (its metrics.json), or None when it has none."""
    path = out_dir / "metrics.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return TrainingRun(str(doc.get("task", out_dir.name)), out_dir, str(doc.get("metric", "metric")),
                       tuple(doc.get("classes", ())), tuple(doc.get("epochs", ())), dict(doc.get("final") or {}))


def _training(report_dir: Path, run: TrainingRun) -> list[str]:
    rows = [[e.get("epoch", i + 1), _num(e.get("train_loss")), _num(e.get("train_metric")),
             _num(e.get("val_metric")), _num(e.get("seconds"), 1)] for i, e in enumerate(run.epochs)]
    parts = [f"<h2>Training: {_e(run.task)}</h2>",
             f"<p>{len(run.classes)} classes ({_e(', '.join(run.classes))}); metric {_e(run.metric)}; "
             f"{_link(report_dir, run.out_dir / 'metrics.json')}, "
             f"{_link(report_dir, run.out_dir / 'model.safetensors')}</p>",
             _table(["epoch", "train loss", f"train {run.metric}", f"val {run.metric}", "seconds"], rows)]
    iou = run.final.get("val_per_class_iou")
    if iou:
        parts.append(_table(["class", "val IoU"], [[c, _num(v)] for c, v in zip(run.classes, iou, strict=False)]))
    for name, caption in (("curve.png", "training curves"), ("confusion.png", "val confusion matrix")):
        if (run.out_dir / name).is_file():
            parts.append(_figure(report_dir, run.out_dir / name, f"{run.task}: {caption}", "sheet"))
    return parts


def _scenes_table(scenes: Sequence[Mapping[str, Any]]) -> str:
    return _rows_table(scenes, SCENE_COLUMNS)


def _rows_table(rows: Sequence[Mapping[str, Any]], order: Sequence[str]) -> str:
    """A table of dict rows: the columns of `order` that any row has, then any others."""
    keys = [k for k in order if any(k in r for r in rows)]
    keys += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in keys]
    return _table(keys, [["" if r.get(k) is None else r.get(k) for k in keys] for r in rows])


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None or value != value else f"{float(value):.{digits}f}"


def _figure(report_dir: Path, path: Path, caption: str, css: str) -> str:
    src = _rel(report_dir, path)
    return (f'<figure><a href="{src}"><img class="{css}" src="{src}" alt="{_e(caption)}"></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _link(report_dir: Path, path: Path) -> str:
    return f'<a href="{_rel(report_dir, path)}">{_e(_rel(report_dir, path))}</a>'


def _rel(report_dir: Path, path: Path) -> str:
    """`path` relative to the page, as a URL path (quoted)."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(Path(path).resolve(), report_dir.resolve())).as_posix())


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
