"""Where tasks run: in this process, a thread pool, a dask LocalCluster, an existing dask scheduler, or SLURM.

`run_tasks(fn, items, cfg)` runs `fn(item)` for every item and returns what each call returned, in item order;
the per-scene runner (`perfdata.runner.run_stage`) builds on it. Executor specs (the `--executor` option)::

    local                      in this process, one item after another (default)
    threads:N                  N threads of this process (I/O-bound stages: export, pack)
    dask[:N][,gpus=G]          a dask.distributed LocalCluster of N worker processes, one thread each
    tcp://HOST:PORT            an existing dask scheduler
    slurm[:N][,queue=Q,walltime=HH:MM:SS,memory=16GB,cores=4,gpus=G,account=A]
                               N SLURM jobs through dask-jobqueue (defaults from PERFDATA_SLURM_QUEUE, _ACCOUNT,
                               _CORES, _MEMORY, _WALLTIME, _GPUS)

GPUs: a LocalCluster on a machine with G GPUs (`torch.cuda.device_count()`, or `gpus=G`) gives worker i
`CUDA_VISIBLE_DEVICES=i % G` and the dask resource `GPU=1`; tasks then ask for `GPU=1`, so each GPU runs one task
at a time. SLURM jobs with `gpus=G` ask for `--gres=gpu:G`; their workers advertise `GPU=1`. On an existing
scheduler, tasks ask for `GPU=1` when its workers advertise that resource.

Worker loss (a worker killed or out of memory): the scheduler reruns the task on another worker, at most
`max_attempts` times in all (dask's `distributed.scheduler.allowed-failures`, set for the clusters started
here; an existing scheduler keeps its own setting); after that the item comes back as a `WorkerLost`.

Note for scripts: a LocalCluster starts worker processes, so a script using it must keep its top-level code
under `if __name__ == "__main__":`. The `perfdata` console command already does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from perfdata.errors import ConfigError

T = TypeVar("T")
Kind = Literal["local", "threads", "dask", "address", "slurm"]
SLURM_KEYS = ("queue", "account", "cores", "memory", "walltime", "gpus")


@dataclass(frozen=True)
class SlurmOptions:
    """What each SLURM job asks for (dask-jobqueue's SLURMCluster)."""

    queue: str | None = None
    account: str | None = None
    cores: int = 4
    memory: str = "16GB"
    walltime: str = "04:00:00"
    gpus: int = 0
    """GPUs per job (`--gres=gpu:G`); each job runs one worker with the dask resource GPU=1 when > 0."""

    @classmethod
    def from_env(cls) -> SlurmOptions:
        env = os.environ.get
        return cls(queue=env("PERFDATA_SLURM_QUEUE"), account=env("PERFDATA_SLURM_ACCOUNT"),
                   cores=int(env("PERFDATA_SLURM_CORES", "4")), memory=env("PERFDATA_SLURM_MEMORY", "16GB"),
                   walltime=env("PERFDATA_SLURM_WALLTIME", "04:00:00"), gpus=int(env("PERFDATA_SLURM_GPUS", "0")))


@dataclass(frozen=True)
class ExecutorConfig:
    """Where tasks run."""

    kind: Kind = "local"
    """local, threads, dask (a LocalCluster), address (an existing scheduler) or slurm."""
    workers: int = 2
    """Threads (threads), worker processes (dask) or SLURM jobs (slurm)."""
    address: str | None = None
    """Scheduler address for kind="address", e.g. tcp://10.0.0.1:8786."""
    threads_per_worker: int = 1
    """Threads per dask worker; 1 keeps torch from oversubscribing cores."""
    gpus: int | None = None
    """GPUs for a LocalCluster (None: as many as torch sees)."""
    max_attempts: int = 3
    """Attempts of a task whose worker dies, in all (clusters started here)."""
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


@dataclass(frozen=True)
class WorkerLost:
    """What `run_tasks` returns for an item whose worker died on every attempt."""

    item: str
    error: str


def parse_executor(spec: str) -> ExecutorConfig:
    """An executor spec (module docstring) -> ExecutorConfig."""
    spec = spec.strip()
    if spec in ("", "local"):
        return ExecutorConfig()
    if "://" in spec:
        return ExecutorConfig(kind="address", address=spec)
    head, *pairs = spec.split(",")
    name, _, count = head.partition(":")
    if name not in ("threads", "dask", "slurm"):
        raise ConfigError(f"unknown executor {spec!r}: use local, threads:N, dask[:N], tcp://HOST:PORT or slurm[:N]")
    try:
        workers = int(count) if count else 2
    except ValueError:
        raise ConfigError(f"executor {spec!r}: {count!r} is not a worker count") from None
    if workers < 1:
        raise ConfigError(f"executor {spec!r}: need at least one worker")
    options = _parse_options(spec, pairs, SLURM_KEYS if name == "slurm" else ("gpus",) if name == "dask" else ())
    cfg = ExecutorConfig(kind=name, workers=workers)  # type: ignore[arg-type]
    if name == "slurm":
        return replace(cfg, slurm=replace(SlurmOptions.from_env(), **options))
    return replace(cfg, **options)


def _parse_options(spec: str, pairs: list[str], allowed: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"executor {spec!r}: {pair!r} is not one of {', '.join(k + '=' for k in allowed)}")
        if key in ("cores", "gpus"):
            try:
                options[key] = int(value)
            except ValueError:
                raise ConfigError(f"executor {spec!r}: {key}={value!r} is not an integer") from None
            if options[key] < 0:
                raise ConfigError(f"executor {spec!r}: {key} must be >= 0")
        else:
            options[key] = value
    return options


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """`i/n` (0 <= i < n) -> (i, n); None -> None."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {spec!r}: need 0 <= i < n")
    return i, n


def shard_items(items: Iterable[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of shard i of n: every n-th item starting at i (stable for a fixed item list)."""
    items = list(items)
    if shard is None:
        return items
    i, n = shard
    return items[i::n]


def run_tasks(fn: Callable[[str], T], items: Iterable[str], cfg: ExecutorConfig = ExecutorConfig(),
              on_result: Callable[[str, T | WorkerLost], None] | None = None) -> list[T | WorkerLost]:
    """fn(item) for every item on the configured executor; results in item order.

    `fn` must not raise (wrap it; `perfdata.runner` does) and, for dask kinds, must be picklable (a module-level
    function or a functools.partial of one). An item whose worker died `max_attempts` times is a WorkerLost.
    `on_result(item, result)` is called as each item finishes (for progress).
    """
    items = list(items)
    if cfg.kind in ("local", "threads"):
        def call(item: str) -> T:
            result = fn(item)
            if on_result is not None:
                on_result(item, result)
            return result

        if cfg.kind == "local":
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            return list(pool.map(call, items))
    with DaskClient(cfg) as client:
        return run_on_client(client, fn, items, on_result)


def run_on_client(client: Any, fn: Callable[[str], T], items: list[str],
                  on_result: Callable[[str, T | WorkerLost], None] | None = None) -> list[T | WorkerLost]:
    """Submit fn(item) for every item to a distributed.Client (asking for one GPU where workers have them)."""
    from distributed import as_completed

    resources = {"GPU": 1} if workers_have_gpus(client) else None
    futures = {client.submit(fn, item, pure=False, resources=resources,
                             key=f"perfdata-{item}-{os.urandom(4).hex()}"): i for i, item in enumerate(items)}
    results: list[Any] = [None] * len(items)
    # as_completed defaults to default_client()'s loop: with several clients in one process (the demo's fit
    # groups, one client per thread) that is another client's, and results were left unseen (dask/distributed
    # #4357, #3856): the demo test hung for 16 minutes with the task done on the scheduler
    for future in as_completed(futures, loop=client.loop):
        index = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # KilledWorker: the worker died on every attempt (killed, out of memory)
            result = WorkerLost(items[index], f"worker lost: {type(exc).__name__}: {exc}")
        results[index] = result
        if on_result is not None:
            on_result(items[index], result)
    return results


def workers_have_gpus(client: Any) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any((w.get("resources") or {}).get("GPU") for w in workers.values())


def count_gpus() -> int:
    """GPUs torch sees here (0 without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


class DaskClient:
    """Context manager giving a distributed.Client for the config, closing what it started."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        self.cfg = cfg
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        import dask
        from distributed import Client

        cfg = self.cfg
        if cfg.kind == "address":
            self.client = Client(cfg.address, timeout=30)
            return self.client
        with dask.config.set({"distributed.scheduler.allowed-failures": max(cfg.max_attempts - 1, 0)}):
            self.cluster = local_cluster(cfg) if cfg.kind == "dask" else slurm_cluster(cfg)
        self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def local_cluster(cfg: ExecutorConfig) -> Any:
    """A LocalCluster of cfg.workers processes; with GPUs, worker i sees GPU i % G only and has GPU=1."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = count_gpus() if cfg.gpus is None else cfg.gpus
    env = thread_env(cfg.threads_per_worker)
    if gpus == 0:
        return LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, processes=True,
                            dashboard_address=None, env=env)
    workers = {
        f"gpu-{i}": {"cls": Nanny, "options": {
            "nthreads": cfg.threads_per_worker, "host": "127.0.0.1", "resources": {"GPU": 1},
            "env": {**env, "CUDA_VISIBLE_DEVICES": str(i % gpus)}}}
        for i in range(cfg.workers)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="perfdata-gpu")


def thread_env(threads: int) -> dict[str, str]:
    """Environment of a LocalCluster's worker processes: torch (OpenMP, MKL, OpenBLAS) uses as many threads
    as the worker runs tasks, so N workers use N cores, not N times all of them (dask's nanny sets 1 by default;
    this keeps it so under any dask configuration)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def slurm_cluster(cfg: ExecutorConfig) -> Any:
    """A SLURMCluster of cfg.workers jobs, one worker process each, asking for what cfg.slurm says."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("the slurm executor needs dask-jobqueue: pip install 'perfdata[slurm]'") from None
    opts = cfg.slurm
    gpu_args: dict[str, Any] = {}
    if opts.gpus:
        gpu_args = {"job_extra_directives": [f"--gres=gpu:{opts.gpus}"], "worker_extra_args": ["--resources", "GPU=1"]}
    cluster = SLURMCluster(queue=opts.queue, account=opts.account, cores=opts.cores, memory=opts.memory,
                           walltime=opts.walltime, processes=1, **gpu_args)
    cluster.scale(jobs=cfg.workers)
    return cluster
