"""The per-scene runner: isolation, skip / hold / retry / force / dry run / shard, busy items, facts."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

from perfdata.errors import FitError
from perfdata.executor import ExecutorConfig
from perfdata.markers import Markers
from perfdata.runner import RunConfig, StageJob, any_failed, run_stage

ITEMS = ["a", "bad", "bug", "d"]


def work(out: str, item: str) -> dict:
    """Writes out/<item>/value.txt; 'bad' raises a PerfdataError, 'bug' a plain exception."""
    if item == "bad":
        raise FitError(f"scene {item}: too few frames")
    if item == "bug":
        raise ZeroDivisionError("division by zero")
    (Path(out) / item).mkdir(parents=True, exist_ok=True)
    (Path(out) / item / "value.txt").write_text(item)
    return {"device": "cpu", "metrics": {"psnr": 20.0 + len(item)}}


def job(out: Path) -> StageJob:
    return StageJob(Markers.in_folder(out, "test"), functools.partial(work, str(out)))


def test_failures_stay_with_their_items_and_reruns_skip_or_hold(tmp_path: Path) -> None:
    seen = []
    outcomes = run_stage(job(tmp_path), ITEMS, on_outcome=seen.append)
    assert [(o.item, o.status) for o in outcomes] == [("a", "done"), ("bad", "failed"), ("bug", "failed"), ("d", "done")]
    assert sorted(o.item for o in seen) == sorted(ITEMS) and any_failed(outcomes)
    assert outcomes[0].facts["metrics"]["psnr"] == 21.0 and outcomes[0].psnr == 21.0
    assert outcomes[1].error == "scene bad: too few frames"
    bad, bug = (json.loads((tmp_path / i / "FAILED.json").read_text()) for i in ("bad", "bug"))
    assert bad["traceback"] is None  # a PerfdataError is its message
    assert bug["error"] == "ZeroDivisionError: division by zero" and "Traceback" in bug["traceback"]
    again = run_stage(job(tmp_path), ITEMS)
    assert [o.status for o in again] == ["skipped", "held", "held", "skipped"]
    assert again[0].psnr == 21.0 and "--retry-failed" in (again[1].error or "")
    retry = run_stage(job(tmp_path), ITEMS, RunConfig(retry_failed=True))
    assert [o.status for o in retry] == ["skipped", "failed", "failed", "skipped"]
    assert [o.attempts for o in retry] == [1, 2, 2, 1]
    manifest = json.loads((tmp_path / ".perfdata" / "test" / "run.json").read_text())
    assert manifest["counts"] == {"done": 2, "failed": 2, "running": 0, "pending": 0}
    assert {i["item"]: i["attempts"] for i in manifest["items"]} == {"a": 1, "bad": 2, "bug": 2, "d": 1}


def test_force_dry_run_shard_and_threads(tmp_path: Path) -> None:
    assert [o.status for o in run_stage(job(tmp_path), ITEMS, RunConfig(dry_run=True))] == ["planned"] * 4
    assert not (tmp_path / ".perfdata").exists() and not (tmp_path / "a").exists()  # a dry run writes nothing
    threads = RunConfig(ExecutorConfig(kind="threads", workers=3))
    parts = [run_stage(job(tmp_path), ITEMS, RunConfig(threads.executor, shard=(i, 2))) for i in range(2)]
    assert [[o.item for o in p] for p in parts] == [["a", "bug"], ["bad", "d"]]
    mtime = (tmp_path / "a" / "DONE").stat().st_mtime_ns
    forced = run_stage(job(tmp_path), ["a", "bad"], RunConfig(force=True))
    assert [o.status for o in forced] == ["done", "failed"] and forced[0].attempts == 2
    assert (tmp_path / "a" / "DONE").stat().st_mtime_ns != mtime
    plan = json.loads((tmp_path / ".perfdata" / "test" / "plan.json").read_text())["items"]
    assert plan == ["a", "bug", "bad", "d"]


def test_an_item_held_by_another_run_is_busy_and_not_touched(tmp_path: Path) -> None:
    markers = Markers.in_folder(tmp_path, "test")
    holding, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with markers.lock("d"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=other_run)
    thread.start()
    assert holding.wait(10)
    try:
        outcomes = run_stage(job(tmp_path), ["a", "d"])
    finally:
        release.set()
        thread.join()
    assert [o.status for o in outcomes] == ["done", "busy"] and "another run" in (outcomes[1].error or "")
    assert not (tmp_path / "d").exists()
    assert [o.status for o in run_stage(job(tmp_path), ["a", "d"])] == ["skipped", "done"]


def test_output_truth_decides_done(tmp_path: Path) -> None:
    """A stage whose output says what is complete (a store) skips by it, not by a stale marker."""
    present = {"a"}
    truth = StageJob(Markers.beside(tmp_path / "s.zarr", "export"), functools.partial(work, str(tmp_path)),
                     present.__contains__)
    assert [o.status for o in run_stage(truth, ["a", "d"])] == ["skipped", "done"]
    assert [o.status for o in run_stage(truth, ["a", "d"])] == ["skipped", "done"]  # d: marker, not in the output
    assert (tmp_path / ".s.zarr.perfdata" / "export" / "items" / "d" / "DONE").is_file()
