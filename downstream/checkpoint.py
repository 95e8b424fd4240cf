"""Training checkpoints for `perfdata train --resume`: OUT/checkpoint.pt, written atomically after every epoch.

Contents (a dict of tensors, numbers, strings and lists, read back with `torch.load(weights_only=True)`, so no
arbitrary object is ever unpickled): format_version, config (JSON of the run-defining TrainConfig fields), epoch
(epochs completed), model, optimizer and scheduler state dicts, rng (torch CPU, CUDA, numpy and Python global
states) and history (JSON of the finished epochs' statistics).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfdata.atomic import atomic_path
from perfdata.errors import FormatVersionError, InputError

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, numpy, Python random) as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(mt), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` (plus format_version) to `path` atomically: a crash leaves the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights only); errors name the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no checkpoint to resume from") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise InputError(path, f"not a perfdata training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else None
        raise FormatVersionError(path, found, CHECKPOINT_FORMAT_VERSION)
    for key in ("config", "epoch", "model", "optimizer", "scheduler", "rng", "history"):
        if key not in state:
            raise InputError(path, f"checkpoint lacks {key!r}")
    return state
