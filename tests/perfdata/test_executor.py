"""The executor interface: in-process, a real dask LocalCluster, sharding, failure isolation."""

from __future__ import annotations

import pytest

from perfdata.errors import ConfigError
from perfdata.executor import ExecutorConfig, parse_executor, parse_shard, run_tasks, shard_items


def test_parse_executor_specs() -> None:
    assert parse_executor("local") == ExecutorConfig()
    assert parse_executor("dask:3") == ExecutorConfig(kind="dask", workers=3)
    assert parse_executor("tcp://127.0.0.1:8786") == ExecutorConfig(kind="address", address="tcp://127.0.0.1:8786")
    assert parse_executor("slurm:8").workers == 8
    for bad in ("mpi", "dask:x", "dask:0"):
        with pytest.raises(ConfigError):
            parse_executor(bad)


def test_shards_partition_the_items() -> None:
    items = [f"s{i}" for i in range(10)]
    parts = [shard_items(items, parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert parts[1] == ["s1", "s4", "s7"]
    assert shard_items(items, None) == items
    for bad in ("3/3", "-1/2", "a/b", "1"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_local_failure_does_not_stop_the_others() -> None:
    seen = []
    outcomes = run_tasks(int, ["1", "oops", "3"], on_outcome=seen.append)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert [o.result for o in outcomes] == [1, None, 3]
    assert "invalid literal" in (outcomes[1].error or "")
    assert len(seen) == 3


def test_dask_local_cluster_runs_items_in_worker_processes() -> None:
    items = [str(i) for i in range(6)] + ["bad"]
    outcomes = run_tasks(int, items, ExecutorConfig(kind="dask", workers=2))
    assert [o.item for o in outcomes] == items
    assert [o.result for o in outcomes[:-1]] == list(range(6))
    assert outcomes[-1].status == "failed"


def test_slurm_job_script_is_generated(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dask_jobqueue")
    from perfdata.executor import _slurm_cluster

    monkeypatch.setenv("PERFDATA_SLURM_QUEUE", "gpu")
    monkeypatch.setenv("PERFDATA_SLURM_WALLTIME", "01:30:00")
    cluster = _slurm_cluster(ExecutorConfig(kind="slurm", workers=0))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH -t 01:30:00" in script
