"""Data-parallel training with torch.distributed: gloo on CPU, nccl on CUDA.

Started by `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; multi-node works the
same way, with a shared output folder) or by `perfdata train --nproc N` (`launch`, N local processes on a free
loopback port). Each process reads a disjoint part of the data (shards: webdataset split_by_node /
split_by_worker; stores: DistributedSampler), the model is wrapped in DistributedDataParallel (gradients averaged,
buffers broadcast from rank 0), a step is taken only while every rank still has a batch (`even_batches`), and
metrics are summed over ranks. Rank 0 alone writes the outputs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from perfdata.errors import ConfigError, PerfdataError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (absent: one process)."""
    env = dict(os.environ if env is None else env)
    try:
        info = DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ConfigError(f"RANK {info.rank} is not in [0, WORLD_SIZE {info.world_size})")
    return info


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (when world_size > 1) and return this process's device (cuda:LOCAL_RANK on GPU)."""
    if not info.enabled:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=info.rank, world_size=info.world_size)
    return device


def teardown(info: DistInfo, synchronize: bool = True) -> None:
    """Leave the process group. With `synchronize` (a run that ended normally) every rank first waits at a
    barrier, so no rank closes its gloo connections while a peer still uses them: a rank that tore down early
    could abort its peer ("terminate called without an active exception")."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            if synchronize:
                dist.barrier()
            dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when world_size > 1 (else the model itself)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def all_sum(t: torch.Tensor, info: DistInfo, device: torch.device) -> torch.Tensor:
    """Sum of `t` over ranks (t itself with one process); returned on the CPU."""
    if not info.enabled:
        return t
    import torch.distributed as dist

    buf = t.to(device).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def even_batches(batches: Iterable[Any], info: DistInfo, device: torch.device) -> Iterator[Any]:
    """`batches`, stopping as soon as any rank has run out (so every rank takes the same number of steps)."""
    it = iter(batches)
    while True:
        batch = next(it, None)
        if info.enabled:
            import torch.distributed as dist

            flag = torch.tensor([0 if batch is None else 1], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if int(flag.item()) == 0:
                return
        elif batch is None:
            return
        yield batch


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerError(PerfdataError):
    """A PerfdataError raised in a worker process of `launch`, carried to the parent with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _child(local_rank: int, nproc: int, port: int, threads: int, fn: Callable[..., Any], args: tuple,
           results: Any) -> None:
    os.environ.update({"RANK": str(local_rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(local_rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    try:
        out = fn(*args)
    except PerfdataError as exc:
        results.put((local_rank, "error", (str(exc), exc.exit_code)))
        raise SystemExit(exc.exit_code) from None
    results.put((local_rank, "ok", out if local_rank == 0 else None))


def launch(nproc: int, fn: Callable[..., Any], args: tuple = (), threads: int | None = None) -> Any:
    """Run fn(*args) in `nproc` spawned processes forming one gloo / nccl group on loopback; returns rank 0's
    result. A PerfdataError in any process is re-raised here as a WorkerError with its message and exit code."""
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    threads = threads or max(1, torch.get_num_threads() // nproc)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    try:
        mp.start_processes(_child, args=(nproc, free_port(), threads, fn, args, results), nprocs=nproc,
                           join=True, start_method="spawn")
    except mp.ProcessRaisedException as exc:
        raise WorkerError(f"a training process failed: {str(exc).strip().splitlines()[-1]}", 1) from None
    except mp.ProcessExitedException:
        pass
    outcomes = {}
    while not results.empty():
        rank, status, value = results.get()
        outcomes[rank] = (status, value)
    for _rank, (status, value) in sorted(outcomes.items()):
        if status == "error":
            raise WorkerError(*value)
    if 0 not in outcomes:
        raise WorkerError("training process 0 ended without a result", 1)
    return outcomes[0][1]
