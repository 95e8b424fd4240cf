"""`perfdata demo`: the pipeline on a handful of embedded synthetic scenes, leaving a report.

The demo is a list of named steps run in order over one `DemoContext`; later stages (fit, export, render, pack)
add their steps to `default_steps()`. Today it makes object and room scenes under OUT/scenes, then writes
OUT/report/contact_sheet.png (one row per scene: colour, depth, mask, labels of the first `sheet_views` views)
and OUT/report/report.md (what was made, and how long each step took).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.atomic import write_text


@dataclass(frozen=True)
class DemoConfig:
    """What the demo makes."""

    out: Path
    """Output folder: scenes/ and report/ go under it."""
    n_scenes: int = 3
    """Object scenes, and as many room scenes."""
    size: int = 64
    """Image width = height in pixels."""
    n_views: int = 12
    """Cameras per scene."""
    seed: int = 0
    """Seed of the synthetic scenes."""
    sheet_views: int = 2
    """Views per scene shown on the contact sheet (four tiles each)."""


@dataclass
class DemoContext:
    """State the steps share: scene folders, rows of the scenes table, artefacts and step timings."""

    cfg: DemoConfig
    scene_dirs: list[Path] = field(default_factory=list)
    scene_rows: list[dict[str, Any]] = field(default_factory=list)
    artefacts: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run made."""

    out: Path
    scenes: tuple[dict[str, Any], ...]
    artefacts: dict[str, Path]
    timings: dict[str, float]


DemoStep = Callable[[DemoContext], None]


def default_steps() -> list[tuple[str, DemoStep]]:
    """The demo's steps, in order."""
    return [
        ("synth objects", _synth_step("objects")),
        ("synth rooms", _synth_step("rooms")),
        ("contact sheet", contact_sheet_step),
        ("report", report_step),
    ]


def run_demo(cfg: DemoConfig, steps: Sequence[tuple[str, DemoStep]] | None = None) -> DemoResult:
    """Run the steps (default: `default_steps()`) and return what they made."""
    ctx = DemoContext(cfg)
    for name, step in steps if steps is not None else default_steps():
        start = time.perf_counter()
        step(ctx)
        ctx.timings[name] = time.perf_counter() - start
    return DemoResult(Path(cfg.out), tuple(ctx.scene_rows), dict(ctx.artefacts), dict(ctx.timings))


def _synth_step(kind: str) -> DemoStep:
    def step(ctx: DemoContext) -> None:
        from perfdata.synthetic import SynthConfig, synthesize

        cfg = ctx.cfg
        synth = SynthConfig(kind, Path(cfg.out) / "scenes", cfg.n_scenes, cfg.n_views, cfg.size, cfg.seed)  # type: ignore[arg-type]
        for outcome in synthesize(synth):
            ctx.scene_dirs.append(outcome.path)
            ctx.scene_rows.append({
                "scene": outcome.spec.name,
                "kind": kind,
                "class": outcome.spec.shape or "room",
                "seed": outcome.spec.seed,
                "status": outcome.status,
                "seconds": round(outcome.seconds, 2),
            })

    return step


def contact_sheet_step(ctx: DemoContext) -> None:
    """One row per scene (read back through the `synthetic` reader): colour, depth, mask, labels per view."""
    from perfdata.contact import frame_panels, write_contact_sheet
    from perfdata.readers import get_reader

    reader = get_reader("synthetic")
    rows = []
    for folder, row in zip(ctx.scene_dirs, ctx.scene_rows, strict=True):
        scene = reader.load_scene(folder, folder.name)
        n_classes = len(scene.label_names) if scene.label_names else None
        tiles = [t for f in scene.frames[: ctx.cfg.sheet_views] for t in frame_panels(f, n_classes)]
        rows.append(tiles)
        row["frames"] = len(scene.frames)
        masks = [f.load_mask() for f in scene.frames]
        row["foreground"] = f"{sum(float(m.mean()) for m in masks if m is not None) / len(masks):.2f}"
    path = Path(ctx.cfg.out) / "report" / "contact_sheet.png"
    write_contact_sheet(path, rows)
    ctx.artefacts["contact_sheet"] = path


def report_step(ctx: DemoContext) -> None:
    """report.md: the scenes table, the artefacts and the step timings so far."""
    cfg = ctx.cfg
    lines = [
        "# perfdata demo",
        "",
        f"{cfg.n_scenes} object + {cfg.n_scenes} room scenes, {cfg.n_views} views of {cfg.size}x{cfg.size} px, "
        f"seed {cfg.seed}.",
        "",
    ]
    if ctx.scene_rows:
        keys = list(ctx.scene_rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in ctx.scene_rows]
        lines.append("")
    report_dir = Path(cfg.out) / "report"
    lines += [f"- {name}: `{p.relative_to(report_dir) if p.is_relative_to(report_dir) else p}`"
              for name, p in ctx.artefacts.items()]
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.2f} |" for name, sec in ctx.timings.items()]
    path = report_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    ctx.artefacts["report"] = path
