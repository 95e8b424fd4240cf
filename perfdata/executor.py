"""One executor interface for every per-scene stage (DESIGN.md section 7).

A stage hands `run_tasks` a picklable function and a list of items (usually scene ids). Items run in-process
(default), on a dask.distributed LocalCluster of worker processes, on an existing dask scheduler by address, or on
SLURM through dask-jobqueue; `--shard i/n` splits the item list for a plain job array. A failed item never stops
the others: every item comes back as a `TaskOutcome`.

Executor specs (the `--executor` option): `local`, `dask` or `dask:N` (LocalCluster, N worker processes),
`tcp://HOST:PORT` (existing scheduler), `slurm:N` (N SLURM jobs; queue / cores / memory / walltime through
environment variables PERFDATA_SLURM_QUEUE, _CORES, _MEMORY, _WALLTIME, _ACCOUNT).

Note for scripts: a dask LocalCluster starts worker processes, so the calling script must keep its top-level code
under `if __name__ == "__main__":`. The `perfdata` console command already does.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from perfdata.errors import ConfigError, PerfdataError

T = TypeVar("T")
Kind = Literal["local", "dask", "address", "slurm"]


@dataclass(frozen=True)
class ExecutorConfig:
    """Where per-scene tasks run."""

    kind: Kind = "local"
    """local (in this process), dask (a LocalCluster), address (an existing scheduler) or slurm."""
    workers: int = 2
    """Worker processes (dask) or SLURM jobs (slurm)."""
    address: str | None = None
    """Scheduler address for kind="address", e.g. tcp://10.0.0.1:8786."""
    threads_per_worker: int = 1
    """Threads per dask worker; 1 keeps torch from oversubscribing cores."""


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one item."""

    item: str
    status: Literal["done", "failed", "skipped"]
    seconds: float = 0.0
    error: str | None = None
    result: Any = None


def parse_executor(spec: str) -> ExecutorConfig:
    """`local`, `dask`, `dask:N`, `tcp://host:port` or `slurm:N` -> ExecutorConfig."""
    spec = spec.strip()
    if spec in ("", "local"):
        return ExecutorConfig()
    if "://" in spec:
        return ExecutorConfig(kind="address", address=spec)
    name, _, count = spec.partition(":")
    if name not in ("dask", "slurm"):
        raise ConfigError(f"unknown executor {spec!r}: use local, dask[:N], tcp://HOST:PORT or slurm[:N]")
    try:
        workers = int(count) if count else 2
    except ValueError:
        raise ConfigError(f"executor {spec!r}: {count!r} is not a worker count") from None
    if workers < 1:
        raise ConfigError(f"executor {spec!r}: need at least one worker")
    return ExecutorConfig(kind=name, workers=workers)  # type: ignore[arg-type]


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


def shard_items(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of shard i of n: every n-th item starting at i (stable for a fixed item list)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i::n])


def call_captured(fn: Callable[[str], Any], item: str) -> TaskOutcome:
    """Run fn(item); any exception becomes a failed outcome carrying its message (and traceback for bugs)."""
    start = time.perf_counter()
    try:
        result = fn(item)
    except PerfdataError as exc:
        return TaskOutcome(item, "failed", time.perf_counter() - start, str(exc))
    except Exception as exc:  # a bug or a library error: keep the traceback for `perfdata status`
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return TaskOutcome(item, "failed", time.perf_counter() - start, f"{detail}\n{traceback.format_exc()}")
    if isinstance(result, TaskOutcome):
        return result
    return TaskOutcome(item, "done", time.perf_counter() - start, result=result)


def run_tasks(
    fn: Callable[[str], Any],
    items: Iterable[str],
    cfg: ExecutorConfig = ExecutorConfig(),
    on_outcome: Callable[[TaskOutcome], None] | None = None,
) -> list[TaskOutcome]:
    """Run fn over items on the configured executor; outcomes come back in item order.

    `fn` must be picklable (a module-level function or functools.partial of one with picklable arguments) for
    every kind but local. `on_outcome` is called as each item finishes (for progress).
    """
    items = list(items)
    if cfg.kind == "local":
        outcomes = []
        for item in items:
            outcomes.append(call_captured(fn, item))
            if on_outcome:
                on_outcome(outcomes[-1])
        return outcomes
    with _dask_client(cfg) as client:
        return _run_on_client(client, fn, items, on_outcome)


def _run_on_client(client: Any, fn: Callable[[str], Any], items: list[str],
                   on_outcome: Callable[[TaskOutcome], None] | None) -> list[TaskOutcome]:
    from distributed import as_completed

    futures = {client.submit(call_captured, fn, item, pure=False, key=f"perfdata-{item}-{os.urandom(4).hex()}"): i
               for i, item in enumerate(items)}
    outcomes: list[TaskOutcome | None] = [None] * len(items)
    for future in as_completed(futures):
        index = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:  # the worker died (killed, out of memory)
            outcome = TaskOutcome(items[index], "failed", error=f"worker lost: {exc}")
        outcomes[index] = outcome
        if on_outcome:
            on_outcome(outcome)
    return [o for o in outcomes if o is not None]


class _dask_client:
    """Context manager giving a distributed.Client for the config, closing what it started."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        self.cfg = cfg
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        cfg = self.cfg
        if cfg.kind == "address":
            self.client = Client(cfg.address, timeout=30)
            return self.client
        if cfg.kind == "dask":
            self.cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker,
                                        processes=True, dashboard_address=None)
        else:
            self.cluster = _slurm_cluster(cfg)
        self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _slurm_cluster(cfg: ExecutorConfig) -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("the slurm executor needs dask-jobqueue: pip install 'perfdata[slurm]'") from None
    env = os.environ.get
    cluster = SLURMCluster(
        queue=env("PERFDATA_SLURM_QUEUE"),
        account=env("PERFDATA_SLURM_ACCOUNT"),
        cores=int(env("PERFDATA_SLURM_CORES", "4")),
        memory=env("PERFDATA_SLURM_MEMORY", "16GB"),
        walltime=env("PERFDATA_SLURM_WALLTIME", "04:00:00"),
        processes=1,
    )
    cluster.scale(jobs=cfg.workers)
    return cluster
