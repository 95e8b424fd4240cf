"""Device choice and deterministic splits shared by the stages and the downstream trainers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from perfdata.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; "cuda" without a GPU is a ConfigError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def split_scene_ids(scene_ids: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic train / val split of scene ids (never of views): the sorted ids permuted by `seed`, the
    first round(val_fraction * n) to val (at least one when val_fraction > 0 and n >= 2); each list sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(scene_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and n_val == 0 and len(ids) >= 2:
        n_val = 1
    val = sorted(ids[i] for i in order[:n_val])
    return {"train": sorted(set(ids) - set(val)), "val": val}


def versions(*extra: str) -> dict[str, str]:
    """Versions of perfdata, python, torch, numpy and the named extra modules, for output metadata."""
    import importlib
    import platform

    import torch

    from perfdata import __version__

    found = {"perfdata": __version__, "torch": torch.__version__, "numpy": np.__version__,
             "python": platform.python_version()}
    for name in extra:
        found[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
    return found
