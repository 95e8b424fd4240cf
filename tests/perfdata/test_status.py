"""Markers and `perfdata status`."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from perfdata.cli import cli
from perfdata.status import mark_done, mark_failed, scan, write_plan


def test_scan_reports_done_failed_pending(tmp_path: Path) -> None:
    write_plan(tmp_path, "fit", ["a", "b", "c", "d"])
    mark_done(tmp_path / "a")
    mark_failed(tmp_path / "b", "NaN in training at step 12")
    (tmp_path / "c").mkdir()  # interrupted: folder without a marker
    (tmp_path / "c" / "fit.json").write_text('{"status": "failed", "error": "too few frames"}')
    states = {s.item: (s.state, s.error) for s in scan(tmp_path)}
    assert states == {
        "a": ("done", None),
        "b": ("failed", "NaN in training at step 12"),
        "c": ("failed", "too few frames"),
        "d": ("pending", None),
    }
    mark_done(tmp_path / "b")  # a successful rerun clears the failure
    assert {s.item: s.state for s in scan(tmp_path)}["b"] == "done"


def test_plan_merges_and_cli_exit_code(tmp_path: Path) -> None:
    write_plan(tmp_path, "fit", ["a"])
    write_plan(tmp_path, "fit", ["b", "a"])
    mark_done(tmp_path / "a")
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 done, 0 failed, 1 pending" in result.output
    mark_failed(tmp_path / "b", "boom")
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 1
    assert "boom" in result.output
