"""The per-scene runner every batch stage uses: fit, export, label, render, and pack (by split).

A stage gives `run_stage` a `StageJob` -- where its markers live (`perfdata.markers.Markers`), a picklable
`work(item)` that writes one item's output atomically and returns facts about it (device, metrics, counts),
and optionally `is_done(item)` when the output itself says whether an item is complete (a store's scenes) --
plus the items and a `RunConfig` (executor, `--shard`, `--force`, `--retry-failed`, `--dry-run`).

For each item, in the driver: done -> skipped (unless force); failed earlier -> held (unless retry_failed or
force); with retry_failed, only failed items run. Then, wherever the item runs (see `perfdata.executor`):
take the item's lock (held by another run -> busy, never two writers of one item), check again, write
RUNNING.json, call `work`, and write the done marker with the facts -- or the failure record with the error
and, for errors that are not PerfdataErrors, the traceback. Any exception fails that item only. A worker that
dies is replaced and the item retried elsewhere (bounded); the plan and the run manifest are rewritten from
the markers at the start and the end of every run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from perfdata.errors import PerfdataError, from_os_error
from perfdata.executor import ExecutorConfig, WorkerLost, run_tasks, shard_items
from perfdata.markers import ItemBusy, ItemRecord, Markers

Status = Literal["done", "failed", "skipped", "held", "busy", "pending", "planned"]
FINAL_FAILURES = ("failed", "held", "busy")


@dataclass(frozen=True)
class RunConfig:
    """How a stage's items are run: the options every batch command shares."""

    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where items run (`perfdata.executor`)."""
    shard: tuple[int, int] | None = None
    """(i, n): only every n-th item from i (job arrays); n runs with i = 0..n-1 cover each item once."""
    force: bool = False
    """Redo items already done (and failed ones)."""
    retry_failed: bool = False
    """Run only the items whose last attempt failed."""
    dry_run: bool = False
    """Report what would run; run nothing, write nothing."""


@dataclass(frozen=True)
class StageJob:
    """One stage's work, as the runner needs it (picklable for the dask executors)."""

    markers: Markers
    work: Callable[[str], Mapping[str, Any] | None]
    """Writes one item's output (atomically) and returns facts for its done marker; raises on failure."""
    is_done: Callable[[str], bool] | None = None
    """Whether the output holds the item complete (default: its done marker)."""


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one item in this run."""

    item: str
    status: Status
    """done (now), failed (now), skipped (done before), held (failed before; --retry-failed reruns it),
    busy (another run holds it), pending (left for later by --retry-failed), planned (--dry-run)."""
    seconds: float = 0.0
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    """The stage's facts from the done marker (this run's or an earlier one's)."""
    attempts: int = 0

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.facts.get("metrics") or {})

    @property
    def psnr(self) -> float | None:
        return ItemRecord(self.item, facts=self.facts).psnr


def run_stage(job: StageJob, items: Sequence[str], cfg: RunConfig = RunConfig(),
              on_outcome: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
    """Run `job` over the items of `cfg.shard`; one outcome per item, in item order (module docstring)."""
    items = shard_items(items, cfg.shard)
    if not cfg.dry_run:
        job.markers.add_to_plan(items)
    decided: dict[str, TaskOutcome] = {}
    todo = []
    for item in items:
        outcome = _decide(job, item, cfg)
        if outcome is None:
            todo.append(item)
        else:
            decided[item] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
    if todo and not cfg.dry_run:
        def report(item: str, result: TaskOutcome | WorkerLost) -> None:
            if on_outcome is not None:
                on_outcome(_lost(job, result) if isinstance(result, WorkerLost) else result)

        results = run_tasks(_ItemTask(job, cfg.force), todo, cfg.executor, report)
        decided.update({r.item: _lost(job, r) if isinstance(r, WorkerLost) else r for r in results})
    if not cfg.dry_run:
        job.markers.write_manifest()
    return [decided[item] for item in items]


def _decide(job: StageJob, item: str, cfg: RunConfig) -> TaskOutcome | None:
    """The outcome of an item that does not run, or None when it runs."""
    rec = job.markers.read(item)
    done = job.is_done(item) if job.is_done is not None else rec.state == "done"
    if cfg.force:
        return _planned(rec) if cfg.dry_run else None
    if done:
        return TaskOutcome(item, "skipped", rec.seconds or 0.0, facts=rec.facts, attempts=rec.attempts)
    if rec.state == "failed" and not cfg.retry_failed:
        return TaskOutcome(item, "held", error=f"failed earlier (use --retry-failed): {first_line(rec.error)}",
                           attempts=rec.attempts)
    if cfg.retry_failed and rec.state != "failed":
        return TaskOutcome(item, "pending", error="not run: --retry-failed runs only failed items")
    if rec.state == "running":
        return TaskOutcome(item, "busy", error=busy_message(job, item, f" (pid {rec.pid} on {rec.host})"))
    return _planned(rec) if cfg.dry_run else None


def _planned(rec: ItemRecord) -> TaskOutcome:
    return TaskOutcome(rec.item, "planned", attempts=rec.attempts)


@dataclass(frozen=True)
class _ItemTask:
    """One item, wherever it runs: lock, check, RUNNING, work, then the done marker or the failure record."""

    job: StageJob
    force: bool

    def __call__(self, item: str) -> TaskOutcome:
        markers = self.job.markers
        try:
            with markers.lock(item):
                return self._locked(item)
        except ItemBusy as exc:
            return TaskOutcome(item, "busy", error=f"{exc}: {markers.item_dir(item)}")
        except Exception as exc:  # the markers themselves cannot be written (read-only, disk full)
            return TaskOutcome(item, "failed", error=describe_error(exc)[0])

    def _locked(self, item: str) -> TaskOutcome:
        markers, job = self.job.markers, self.job
        if not self.force:
            done = job.is_done(item) if job.is_done is not None else markers.is_done(item)
            if done:  # another run finished it since the driver looked
                rec = markers.read(item)
                return TaskOutcome(item, "skipped", rec.seconds or 0.0, facts=rec.facts, attempts=rec.attempts)
        rec = markers.start(item)
        start = time.perf_counter()
        try:
            facts = dict(job.work(item) or {})
        except Exception as exc:  # any failure stays with its item (DESIGN.md section 7)
            seconds = time.perf_counter() - start
            message, trace = describe_error(exc)
            markers.fail(replace(rec, seconds=round(seconds, 3), error=message, traceback=trace))
            return TaskOutcome(item, "failed", seconds, message, attempts=rec.attempts)
        seconds = time.perf_counter() - start
        device = facts.get("device")
        markers.finish(replace(rec, seconds=round(seconds, 3), device=None if device is None else str(device),
                               facts=facts))
        return TaskOutcome(item, "done", seconds, facts=facts, attempts=rec.attempts)


def busy_message(job: StageJob, item: str, holder: str) -> str:
    """Why an item was refused: another run holds it (the same words as `Markers.lock`'s ItemBusy)."""
    return f"{job.markers.stage} {item}: another run is writing it{holder}; not touched: {job.markers.item_dir(item)}"


def describe_error(exc: BaseException) -> tuple[str, str | None]:
    """(one-line message, traceback or None): a PerfdataError is its message; anything else is a bug or a
    library's error, so its type and traceback are kept."""
    if isinstance(exc, PerfdataError):
        return str(exc), None
    if isinstance(exc, OSError):  # the path and the problem (perfdata.errors.from_os_error), not a bug
        return str(from_os_error(exc)), None
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _lost(job: StageJob, lost: WorkerLost) -> TaskOutcome:
    """A worker died on every attempt: the driver records the failure (under the item's lock)."""
    markers = job.markers
    try:
        with markers.lock(lost.item):
            rec = markers.read(lost.item)
            markers.fail(replace(rec, error=lost.error))
    except ItemBusy as exc:
        return TaskOutcome(lost.item, "busy", error=str(exc))
    return TaskOutcome(lost.item, "failed", error=lost.error, attempts=rec.attempts)


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def count(outcomes: Sequence[Any]) -> dict[str, int]:
    """Outcomes (anything with a .status) per status, only the statuses present."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


def any_failed(outcomes: Sequence[TaskOutcome]) -> bool:
    """Whether a run should exit 1: an item failed now, failed before and was held, or was busy."""
    return any(o.status in FINAL_FAILURES for o in outcomes)
