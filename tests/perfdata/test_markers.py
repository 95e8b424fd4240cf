"""Markers: done / failed / running / pending records, attempts, locks, plan and manifest."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from perfdata.errors import UnsafePathError
from perfdata.markers import ItemBusy, Markers, check_item_name, runs_dir, stages_with_markers


def test_states_attempts_and_the_one_failure_record(tmp_path: Path) -> None:
    m = Markers.in_folder(tmp_path, "fit")
    assert m.read("a").state == "pending" and m.read("a").attempts == 0
    rec = m.start("a")
    assert (m.read("a").state, m.read("a").attempts) == ("pending", 1)  # RUNNING.json, no lock: killed attempt
    m.fail(replace(rec, error="FitError: NaN at step 12", seconds=1.5))
    failed = m.read("a")
    assert (failed.state, failed.error, failed.attempts, failed.seconds) == ("failed", "FitError: NaN at step 12", 1, 1.5)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["FAILED.json"]
    again = m.start("a")
    assert again.attempts == 2
    m.finish(replace(again, seconds=3.0, device="cuda:0", facts={"metrics": {"psnr": 27.5}}))
    done = m.read("a")
    assert (done.state, done.attempts, done.device, done.psnr, done.error) == ("done", 2, "cuda:0", 27.5, None)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["DONE"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "DONE").write_text("")  # an older, empty marker still means done
    assert m.read("b").state == "done" and m.is_done("b")


def test_lock_refuses_a_second_writer_and_status_sees_it_running(tmp_path: Path) -> None:
    m = Markers.in_folder(tmp_path, "render")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with m.lock("s"):
            m.start("s")
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    assert holding.wait(10)
    try:
        assert m.read("s").state == "running" and m.is_locked("s")
        with pytest.raises(ItemBusy, match="another run is writing it"), m.lock("s"):
            pass
    finally:
        release.set()
        worker.join()
    assert m.read("s").state == "pending" and not m.is_locked("s")  # the holder went away without finishing
    with m.lock("s"):
        pass


def test_plan_merges_and_manifest_is_rebuilt_from_markers(tmp_path: Path) -> None:
    m = Markers.beside(tmp_path / "ds.zarr", "export")
    assert m.run_dir == tmp_path / ".ds.zarr.perfdata" / "export"
    assert m.add_to_plan(["a", "b"]) == ["a", "b"]
    assert m.add_to_plan(["c", "a"]) == ["a", "b", "c"]
    m.finish(m.start("b"))
    manifest = json.loads(m.write_manifest().read_text())
    assert manifest["counts"] == {"done": 1, "failed": 0, "running": 0, "pending": 2}
    assert [(i["item"], i["state"]) for i in manifest["items"]] == [("a", "pending"), ("b", "done"), ("c", "pending")]
    assert [s.stage for s in stages_with_markers(tmp_path / "ds.zarr")] == ["export"]
    assert runs_dir(tmp_path / "renders") == tmp_path / "renders" / ".perfdata"


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b", "a\\b", "nul\0", "x" * 300, "/abs"])
def test_unsafe_item_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        check_item_name(bad)
    with pytest.raises(UnsafePathError):
        Markers.in_folder(tmp_path, "fit").start(bad)
    assert check_item_name("obj_0000_sphere.v2") == "obj_0000_sphere.v2"
