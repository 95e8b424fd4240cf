"""Memory estimates that let a stage refuse, up front, work the machine cannot hold (instead of an allocator
error deep inside it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perfdata.errors import ConfigError

FIT_BYTES_PER_CELL = 13
"""Dense tables a Plenoxel fit holds per cell of an R^3 grid, whatever the voxel count: the int32 link table (4),
the padded int64 link table of the ray marcher (8) and the bool allocation mask (1)."""


def fit_min_bytes(resolution: Sequence[int]) -> int:
    """A lower bound of the memory a fit at `resolution` (one R per coarse-to-fine stage) needs."""
    return max((FIT_BYTES_PER_CELL * int(r) ** 3 for r in resolution), default=0)


def available_bytes(device: Any) -> int:
    """Memory a new allocation can use: total memory of a CUDA device, else the host's MemAvailable (Linux;
    physical memory elsewhere)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


def check_fit_memory(resolution: Sequence[int], device: Any) -> None:
    """ConfigError when a fit at `resolution` cannot fit in the memory of `device` (see fit_min_bytes)."""
    need, have = fit_min_bytes(resolution), available_bytes(device)
    if need > have:
        largest = max(int(r) for r in resolution)
        raise ConfigError(
            f"--resolution {','.join(str(r) for r in resolution)}: a fit needs at least {human_bytes(need)} "
            f"({FIT_BYTES_PER_CELL} bytes per cell of {largest}^3), more than the {human_bytes(have)} of memory "
            f"available on {device}; lower --resolution"
        )
