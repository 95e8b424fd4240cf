"""Executors: specs, threads, a real dask LocalCluster (with and without GPU resources), the SLURM job script."""

from __future__ import annotations

import os

import pytest

from perfdata.errors import ConfigError
from perfdata.executor import (
    DaskClient,
    ExecutorConfig,
    SlurmOptions,
    parse_executor,
    parse_shard,
    run_on_client,
    run_tasks,
    shard_items,
)


def test_parse_executor_specs() -> None:
    assert parse_executor("local") == ExecutorConfig()
    assert parse_executor("threads:4") == ExecutorConfig(kind="threads", workers=4)
    assert parse_executor("dask:3") == ExecutorConfig(kind="dask", workers=3)
    assert parse_executor("dask:2,gpus=1").gpus == 1
    assert parse_executor("tcp://127.0.0.1:8786") == ExecutorConfig(kind="address", address="tcp://127.0.0.1:8786")
    slurm = parse_executor("slurm:8,queue=gpu,walltime=01:30:00,memory=32GB,gpus=2")
    assert slurm.workers == 8
    assert (slurm.slurm.queue, slurm.slurm.walltime, slurm.slurm.memory, slurm.slurm.gpus) == ("gpu", "01:30:00", "32GB", 2)
    for bad in ("mpi", "dask:x", "dask:0", "slurm:2,colour=red", "slurm:2,gpus=-1", "dask:2,queue=q", "threads:2,gpus=1"):
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


def test_local_and_threads_keep_item_order() -> None:
    items = [str(i) for i in range(20)]
    assert run_tasks(int, items) == list(range(20))
    assert run_tasks(int, items, ExecutorConfig(kind="threads", workers=4)) == list(range(20))


def worker_env(item: str) -> tuple[str, str | None]:
    from distributed import get_worker

    return get_worker().name, os.environ.get("CUDA_VISIBLE_DEVICES")


def test_dask_local_clusters_with_and_without_gpu_resources() -> None:
    """Worker processes run the items (results in item order); with GPUs, each worker sees one GPU only and
    tasks ask for the GPU resource, so a GPU never runs two items at once."""
    items = [str(i) for i in range(6)]
    assert run_tasks(int, items, ExecutorConfig(kind="dask", workers=2, gpus=0)) == list(range(6))
    with DaskClient(ExecutorConfig(kind="dask", workers=2, gpus=2)) as client:
        info = client.scheduler_info()["workers"].values()
        assert sorted(w["resources"].get("GPU") for w in info) == [1, 1]
        seen = run_on_client(client, worker_env, items)
    assert {gpu for _, gpu in seen} == {"0", "1"}
    assert all((name, gpu) in {("gpu-0", "0"), ("gpu-1", "1")} for name, gpu in seen)


def torch_threads(item: str) -> tuple[int, int]:
    import torch

    return os.getpid(), torch.get_num_threads()


def test_dask_workers_run_torch_on_their_own_threads_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A LocalCluster of 2 single-thread workers uses 2 cores: torch runs one thread in each worker, whatever
    OMP_NUM_THREADS the driver has (benchmarks/scale.py's 1-vs-2 worker comparison relies on it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # what the worker processes would inherit
    seen = run_tasks(torch_threads, [str(i) for i in range(6)], ExecutorConfig(kind="dask", workers=2, gpus=0))
    assert {threads for _, threads in seen} == {1}
    assert os.getpid() not in {pid for pid, _ in seen}


def test_slurm_job_script_asks_for_queue_walltime_memory_and_gpus() -> None:
    pytest.importorskip("dask_jobqueue")
    from perfdata.executor import slurm_cluster

    opts = SlurmOptions(queue="gpu", walltime="01:30:00", memory="32GB", cores=8, gpus=2, account="vision")
    cluster = slurm_cluster(ExecutorConfig(kind="slurm", workers=0, slurm=opts))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -t 01:30:00", "#SBATCH --mem=30G", "#SBATCH --gres=gpu:2",
                 "#SBATCH -A vision", "#SBATCH --cpus-per-task=8"):
        assert line in script, script
    assert "--resources GPU=1" in script


def test_slurm_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERFDATA_SLURM_QUEUE", "long")
    monkeypatch.setenv("PERFDATA_SLURM_GPUS", "1")
    cfg = parse_executor("slurm:3,walltime=10:00:00")
    assert (cfg.slurm.queue, cfg.slurm.gpus, cfg.slurm.walltime, cfg.workers) == ("long", 1, "10:00:00", 3)
