"""The generalizable parts of the CLI: `fit --method generalizable`, `render --model`, `export --from-model`
(each parses, calls its stage and prints a summary)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfdata.commands.common import print_table
from perfdata.errors import ConfigError, InputError


def load_scenes(reader: str, data: str, scene_ids: Sequence[str] = ()) -> list:
    """Every chosen scene of `data` (frames load lazily)."""
    from perfdata.readers import load_scenes as read

    return list(read(reader, data, scene_ids or None))


def config_from(config_file: str | None, **overrides: Any):  # type: ignore[no-untyped-def]
    """GeneralizableConfig from a JSON file of its fields, with the CLI's options on top (None = not given)."""
    from perfdata.pipelines.generalizable_fit import GeneralizableConfig

    cfg = GeneralizableConfig()
    if config_file:
        try:
            data = json.loads(Path(config_file).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(config_file, f"cannot read JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(config_file, "a config must be a JSON object of GeneralizableConfig fields")
        cfg = GeneralizableConfig.from_dict(data, config_file)
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def check_unused(**given: Any) -> None:
    """ConfigError naming the per-scene options given to `fit --method generalizable` (which does not use them)."""
    used = sorted(k.replace("_", "-") for k, v in given.items() if v is not None)
    if used:
        raise ConfigError(f"--method generalizable does not take --{', --'.join(used)}")


def fit_generalizable_from_cli(reader: str, data: str, out: Path, scene_ids: Sequence[str], config_file: str | None,
                               resume: bool, run: Any, resolution: Any, downscale: Any, holdout_every: Any,
                               init_from: Any, **options: Any) -> None:
    """`fit --method generalizable`: refuse the per-scene options, then train."""
    executor = None if run.executor.kind == "local" else run.executor.kind
    check_unused(resolution=resolution, downscale=downscale, holdout_every=holdout_every, init_from=init_from,
                 shard=run.shard, dry_run=run.dry_run or None, retry_failed=run.retry_failed or None, executor=executor)
    fit_generalizable_command(reader, data, out, scene_ids, config_file, resume, run.force, **options)


def fit_generalizable_command(reader: str, data: str, out: Path, scene_ids: Sequence[str], config_file: str | None,
                              resume: bool, force: bool, **options: Any) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from perfdata.pipelines.generalizable_fit import fit_generalizable

    cfg = config_from(config_file, **options)
    scenes = load_scenes(reader, data, scene_ids)
    total = cfg.max_seconds if cfg.max_seconds is not None else float(cfg.steps)
    with Progress(TextColumn("train"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("train", total=total, info="")

        def callback(p) -> None:  # type: ignore[no-untyped-def]
            done = p.seconds if cfg.max_seconds is not None else p.step
            bar.update(task, completed=min(done, total), info=f"step {p.step}  loss {p.loss:.4f}  psnr {p.psnr:.2f}")

        result = fit_generalizable(scenes, out, cfg, resume=resume, force=force, callback=callback, where=data)
    rows: list[tuple[str, Any]] = [(k, f"{v:.4f}") for k, v in result.metrics.items()]
    rows += [("steps", result.steps), ("train seconds", f"{result.train_seconds:.1f}"),
             ("held-out scenes", len(result.split["heldout"]))]
    print_table(f"fit generalizable -> {out}", rows, header=["metric", "value"])


def render_model_command(model: str, reader: str | None, data: str | None, out: str | None, scene_ids: Sequence[str],
                         run: Any, **options: Any) -> None:
    from perfdata.pipelines.generalizable_render import ModelRenderConfig, render_from_model

    if reader is None or data is None or out is None:
        raise ConfigError("render --model needs --reader, --data and --out")
    cfg = ModelRenderConfig(**{k: v for k, v in options.items() if v is not None})
    result = render_from_model(model, load_scenes(reader, data, scene_ids), out, cfg, run)
    rows = [(s, "rendered", "") for s in result.rendered] + [(s, "kept (done)", "") for s in result.kept]
    rows += [(s, "failed", e) for s, e in result.failed]
    print_table(f"render --model {model} -> {out}: {result.n_views} views in {result.seconds:.1f} s", rows,
                header=("scene", "status", "note"))
    if result.failed:
        import sys

        sys.exit(1)


def export_model_command(model: str, reader: str | None, data: str | None, out: str, scene_ids: Sequence[str],
                         run: Any, **options: Any) -> None:
    import sys

    from perfdata.pipelines.generalizable_export import ModelExportConfig, export_from_model

    if reader is None or data is None:
        raise ConfigError("export --from-model needs --reader and --data")
    cfg = ModelExportConfig(**{k: v for k, v in options.items() if v is not None})
    results = export_from_model(model, load_scenes(reader, data, scene_ids), out, cfg, run)
    rows = [(r.scene_id, r.status, r.n_voxels or "", _fmt(r.metrics.get("psnr")), _fmt(r.metrics.get("psnr_grid")),
             _fmt(r.metrics.get("psnr_grid_vs_model")), r.error) for r in results]
    print_table(f"export --from-model {model} -> {out}", rows,
                header=("scene", "status", "voxels", "psnr model", "psnr grid", "grid vs model", "error"))
    if any(r.status in ("failed", "failed earlier", "busy") for r in results):
        sys.exit(1)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
