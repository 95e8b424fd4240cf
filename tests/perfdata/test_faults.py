"""The per-scene runner under real faults, with the real fit stage on tiny synthetic scenes: a worker of a real
dask LocalCluster SIGKILLed mid-scene, a whole run (driver and workers) SIGKILLed and rerun, two `--shard i/2`
job-array processes on one output folder. Nothing is mocked; the kills are kill -9 of real processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from perfdata.pipelines.fit import fit_scenes
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.executor import ExecutorConfig, shard_items
from perfdata.markers import DONE, RUNNING, Markers
from perfdata.records.fit import GRID_NAME, read_fit
from perfdata.runner import RunConfig
from perfdata.status import output_status

PERFDATA = [sys.executable, "-c", "from perfdata.cli import main; main()"]
# ~5 ms a step at 16^3 with 256 rays on one CPU thread: a scene takes ~1.5 s, long enough to be killed mid-scene
SLOW = dict(resolution=(16,), steps=300, batch_rays=256, device="cpu", holdout_every=4)


def write_objects(root: Path, n: int) -> list[str]:
    """n synthetic object scenes of 8 views at 16 px under root; their ids."""
    from perfdata.synthetic import make_object_scene, write_scene

    ids = []
    for i in range(n):
        scene = make_object_scene(i, 8, 16, scene_id=f"obj{i}")
        write_scene(scene, root / scene.scene_id)
        ids.append(scene.scene_id)
    return ids


def done_record(out: Path, scene_id: str) -> dict:
    return json.loads((out / scene_id / DONE).read_text())


def check_complete(folder: Path) -> None:
    """A scene folder that shows its output shows all of it: fit.json reads and grid.npz loads whole."""
    read_fit(folder)
    with np.load(folder / GRID_NAME) as grid:
        for name in grid.files:
            grid[name]


class Watcher(threading.Thread):
    """Polls the fit output while a run goes on: SIGKILLs the worker of the first scene that starts, `delay`
    seconds into it (its pid from RUNNING.json), and checks that any scene folder showing a grid shows a
    complete output (never a partial file under a final name)."""

    def __init__(self, out: Path, ids: list[str], delay: float) -> None:
        super().__init__(daemon=True)
        self.out, self.ids, self.delay = out, ids, delay
        self.stop = threading.Event()
        self.killed: tuple[str, int] | None = None
        self.output_at_kill: list[str] = []
        self.checked: set[str] = set()
        self.violations: list[str] = []

    def run(self) -> None:
        started: dict[str, float] = {}
        while not self.stop.is_set():
            for scene_id in self.ids:
                folder = self.out / scene_id
                if scene_id not in self.checked and (folder / GRID_NAME).exists():
                    try:
                        check_complete(folder)
                        self.checked.add(scene_id)
                    except Exception as exc:  # noqa: BLE001 -- any failure to read is the violation reported
                        self.violations.append(f"{scene_id}: {type(exc).__name__}: {exc}")
                if self.killed is None and (folder / RUNNING).is_file() and not (folder / DONE).exists():
                    started.setdefault(scene_id, time.monotonic())
                    if time.monotonic() - started[scene_id] >= self.delay:
                        self._kill(scene_id)
            time.sleep(0.01)

    def _kill(self, scene_id: str) -> None:
        folder = self.out / scene_id
        try:
            pid = int(json.loads((folder / RUNNING).read_text())["pid"])
        except (OSError, ValueError):
            return  # it finished between the two looks: try the next scene
        assert pid != os.getpid()
        self.output_at_kill = sorted(p.name for p in folder.iterdir())
        os.kill(pid, signal.SIGKILL)
        self.killed = (scene_id, pid)


def test_a_worker_killed_mid_scene_is_replaced_and_the_scene_redone(tmp_path: Path) -> None:
    ids = write_objects(tmp_path / "data", 3)
    out = tmp_path / "fits"
    watcher = Watcher(out, ids, delay=0.5)
    watcher.start()
    try:
        outcomes = fit_scenes("synthetic", tmp_path / "data", None, out, FitConfig(**SLOW),  # type: ignore[arg-type]
                              RunConfig(ExecutorConfig("dask", 2)))
    finally:
        watcher.stop.set()
        watcher.join()
    assert watcher.killed is not None, "no scene was seen running"
    scene_id, pid = watcher.killed
    assert watcher.output_at_kill == [RUNNING]  # killed mid-scene: nothing of its output written yet
    assert [(o.item, o.status) for o in outcomes] == [(i, "done") for i in ids], outcomes
    by_id = {o.item: o for o in outcomes}
    assert by_id[scene_id].attempts == 2  # the killed attempt counts; the scene ran again on a live worker
    assert done_record(out, scene_id)["pid"] != pid
    assert all(by_id[i].attempts == 1 for i in ids if i != scene_id)
    assert watcher.violations == []
    for i in ids:
        check_complete(out / i)
    assert sorted(p.name for p in out.iterdir()) == [".perfdata", *ids]  # no temporary left behind
    (stage,) = output_status(out)
    assert {r.item: (r.state, r.attempts) for r in stage.records} == {
        i: ("done", 2 if i == scene_id else 1) for i in ids}


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_run_reruns_only_what_was_left(tmp_path: Path) -> None:
    """`perfdata fit --executor dask:2` SIGKILLed (driver, nanny and workers: its whole process group) after two
    scenes are done; `perfdata status` then tells done / pending, and a rerun fits only the others."""
    ids = write_objects(tmp_path / "data", 5)
    out = tmp_path / "fits"
    config = tmp_path / "fit.json"
    config.write_text(json.dumps({"batch_rays": 256}))
    args = ["fit", "--reader", "synthetic", "--data", tmp_path / "data", "--out", out, "--config", config,
            "--resolution", "16", "--steps", str(SLOW["steps"]), "--device", "cpu", "--holdout-every", "4",
            "--executor", "dask:2"]
    proc = subprocess.Popen([*PERFDATA, *map(str, args)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def two_done_and_one_running() -> bool:
            done = [(out / i / DONE).is_file() for i in ids]
            running = [(out / i / RUNNING).is_file() and not d for i, d in zip(ids, done, strict=True)]
            return (sum(done) >= 2 and any(running)) or proc.poll() is not None

        wait_for(two_done_and_one_running, 120, "two scenes done and a third running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        wait_for(lambda: not group_alive(proc.pid), 30, "the killed run's processes to go")
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    done_before = {i: (out / i / DONE).stat().st_mtime_ns for i in ids if (out / i / DONE).is_file()}
    in_flight = [i for i in ids if i not in done_before and (out / i / RUNNING).is_file()]
    assert 2 <= len(done_before) < len(ids) and in_flight
    for i in ids:  # a scene not done shows no output under its final name
        if i not in done_before:
            assert not (out / i / GRID_NAME).exists() and not (out / i / "fit.json").exists()
    (stage,) = output_status(out)
    assert {r.item: r.state for r in stage.records} == {i: "done" if i in done_before else "pending" for i in ids}

    quick = FitConfig(**{**SLOW, "steps": 20})  # type: ignore[arg-type]
    outcomes = fit_scenes("synthetic", tmp_path / "data", None, out, quick, RunConfig(ExecutorConfig("dask", 2)))
    assert {o.item: o.status for o in outcomes} == {i: "skipped" if i in done_before else "done" for i in ids}
    assert {i: (out / i / DONE).stat().st_mtime_ns for i in done_before} == done_before  # not touched
    assert {o.item: o.attempts for o in outcomes} == {i: 2 if i in in_flight else 1 for i in ids}
    for i in ids:
        check_complete(out / i)


def test_two_shard_processes_cover_every_scene_exactly_once(tmp_path: Path) -> None:
    """`--shard 0/2` and `--shard 1/2` as two concurrent processes on one output folder (a job array): every
    scene is fitted once, by the process of its shard; the plan merges both runs."""
    ids = write_objects(tmp_path / "data", 4)
    out = tmp_path / "fits"
    args = ["fit", "--reader", "synthetic", "--data", tmp_path / "data", "--out", out, "--resolution", "16",
            "--steps", "20", "--device", "cpu", "--holdout-every", "4"]
    procs = [subprocess.Popen([*PERFDATA, *map(str, args), "--shard", f"{k}/2"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for k in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    by_pid = {p.pid: k for k, p in enumerate(procs)}
    fitted_by: dict[int, list[str]] = {0: [], 1: []}
    for i in ids:
        record = done_record(out, i)
        assert record["attempts"] == 1, (i, record)
        fitted_by[by_pid[record["pid"]]].append(i)
        check_complete(out / i)
    assert fitted_by == {k: shard_items(ids, (k, 2)) for k in range(2)}
    assert sorted(Markers.in_folder(out, "fit").planned()) == sorted(ids)


def test_two_runs_on_one_output_folder_never_write_one_scene_twice(tmp_path: Path) -> None:
    """Two identical `perfdata fit` processes on one output folder at the same time (no --shard): the scene
    locks let only one process write each scene; the other refuses it, naming the scene and the holder, and
    exits 1 -- or skips it, when it was done before it looked. Each scene is started once (attempts 1), its
    output is complete, and a rerun finds everything done."""
    ids = write_objects(tmp_path / "data", 3)
    out = tmp_path / "fits"
    args = ["fit", "--reader", "synthetic", "--data", tmp_path / "data", "--out", out, "--resolution", "16",
            "--steps", str(SLOW["steps"]), "--device", "cpu", "--holdout-every", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}  # summary tables unwrapped
    procs = [subprocess.Popen([*PERFDATA, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for _ in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    pids = {p.pid for p in procs}
    by = {i: done_record(out, i) for i in ids}
    assert all(r["attempts"] == 1 and r["pid"] in pids for r in by.values()), by  # never started twice
    for i in ids:
        check_complete(out / i)
    for proc, log in zip(procs, logs, strict=True):  # a run that refused a scene says so and exits 1
        assert proc.returncode == (1 if " busy" in log else 0), (proc.returncode, log)
    assert any(" busy" in log and "another run is writing it" in log for log in logs), logs  # they overlapped
    rerun = subprocess.run([*PERFDATA, *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {i: done_record(out, i)["pid"] for i in ids} == {i: r["pid"] for i, r in by.items()}


@pytest.mark.parametrize("spec", ["slurm:3,queue=gpu,walltime=02:15:00,memory=24GB,gpus=1,cores=6"])
def test_the_slurm_spec_reaches_the_job_script(spec: str) -> None:
    """What `--executor slurm:...` asks for is what the job script dask-jobqueue generates asks SLURM for."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the slurm extra) is not installed")
    from perfdata.executor import parse_executor, slurm_cluster

    cfg = parse_executor(spec)
    assert cfg.workers == 3
    cluster = slurm_cluster(dataclasses.replace(cfg, workers=0))  # 0 jobs: no sbatch here to submit them to
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -t 02:15:00", "#SBATCH --mem=23G", "#SBATCH --gres=gpu:1",
                 "#SBATCH --cpus-per-task=6"):
        assert line in script, script
    assert "--resources GPU=1" in script
