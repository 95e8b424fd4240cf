"""`perfdata status`: done / failed / pending (planned, killed) with attempts, seconds, device, psnr, error."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from click.testing import CliRunner

from perfdata.cli import cli
from perfdata.errors import FitError
from perfdata.markers import Markers
from perfdata.runner import StageJob, run_stage
from perfdata.status import output_status


def work(out: str, item: str) -> dict:
    if item == "bad":
        raise FitError(f"scene {item}: too few frames")
    (Path(out) / item).mkdir(parents=True, exist_ok=True)
    return {"device": "cpu", "metrics": {"psnr": 21.0}}


def test_status_after_a_run_with_a_failure_and_a_killed_item(tmp_path: Path) -> None:
    stage = StageJob(Markers.in_folder(tmp_path, "fit"), functools.partial(work, str(tmp_path)))
    run_stage(stage, ["a", "bad"])
    stage.markers.add_to_plan(["c", "d"])  # planned by a run that was killed ...
    stage.markers.start("c")  # ... while c was running
    (status,) = output_status(tmp_path)
    assert status.stage == "fit" and status.summary() == "1 done, 1 failed, 2 pending"
    rec = {r.item: r for r in status.records}
    assert (rec["a"].state, rec["a"].psnr, rec["a"].device, rec["a"].attempts) == ("done", 21.0, "cpu", 1)
    assert rec["c"].attempts == 1 and rec["d"].attempts == 0
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "[fit]: 1 done, 1 failed, 2 pending" in result.output and "too few frames" in result.output
    doc = json.loads(CliRunner().invoke(cli, ["status", "--json", str(tmp_path)]).output)
    assert doc[0]["items"][0]["facts"]["metrics"]["psnr"] == 21.0


def test_status_of_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "missing")])
    assert result.exit_code != 0
