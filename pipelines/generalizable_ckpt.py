"""Checkpoints of the generalizable field: one safetensors file (no pickle) holding the model's weights
(`model.<name>`), the Adam state (`optim.<param index>.<exp_avg|exp_avg_sq>`) and, in its string metadata,
format_version, the architecture (FieldConfig), the step, training seconds, label names, the training config
and the training history. A file of another format version or architecture is refused with an InputError
naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from perfdata.models.generalizable import ARCH_VERSION, FieldConfig, GeneralizableField

from perfdata.atomic import atomic_path
from perfdata.errors import FormatVersionError, InputError

CKPT_FORMAT_VERSION = 1
CKPT_NAME = "model.safetensors"


@dataclass
class Checkpoint:
    """What a checkpoint restores."""

    model: GeneralizableField
    label_names: tuple[str, ...]
    step: int = 0
    seconds: float = 0.0
    optim_state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[list[float]]] = field(default_factory=lambda: {"train": [], "heldout": []})
    split: dict[str, list[str]] = field(default_factory=dict)


def optim_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The Adam state as flat named tensors (`optim.<i>.<key>`; the step count as a 0-d tensor)."""
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return out


def load_optim_(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore `optim_tensors` into `opt` (same parameters in the same order)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, i, key = name.split(".", 2)
        state.setdefault(int(i), {})[key] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(path: str | Path, ckpt: Checkpoint, opt: torch.optim.Optimizer | None = None) -> None:
    """Write atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()}
    tensors.update(optim_tensors(opt) if opt is not None else ckpt.optim_state)
    meta = {
        "format_version": str(CKPT_FORMAT_VERSION), "field_config": json.dumps(ckpt.model.cfg.to_dict()),
        "label_names": json.dumps(list(ckpt.label_names)), "step": str(ckpt.step), "seconds": repr(ckpt.seconds),
        "train_config": json.dumps(ckpt.train_config), "history": json.dumps(ckpt.history),
        "split": json.dumps(ckpt.split),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    expect: FieldConfig | None = None) -> Checkpoint:
    """Load a checkpoint; `expect` (when given) must equal the stored architecture."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format_version") != str(CKPT_FORMAT_VERSION):
        raise FormatVersionError(path, meta.get("format_version"), CKPT_FORMAT_VERSION)
    try:
        cfg = FieldConfig.from_dict(json.loads(meta["field_config"]))
        names = tuple(json.loads(meta["label_names"]))
    except (KeyError, TypeError, ValueError) as exc:  # TypeError: an unknown FieldConfig field
        raise InputError(path, f"checkpoint metadata is incomplete ({exc})") from None
    if cfg.arch_version != ARCH_VERSION:
        raise InputError(path, f"checkpoint is of architecture version {cfg.arch_version}; this perfdata builds "
                               f"version {ARCH_VERSION}")
    if expect is not None and cfg != expect:
        raise InputError(path, f"checkpoint is of another architecture ({_diff(cfg, expect)})")
    model = GeneralizableField(cfg)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(path, f"checkpoint weights do not fit the architecture ({first})") from None
    return Checkpoint(
        model.to(device), names, int(meta.get("step", 0)), float(meta.get("seconds", 0.0)),
        {k: v for k, v in tensors.items() if k.startswith("optim.")}, json.loads(meta.get("train_config", "{}")),
        json.loads(meta.get("history", "{}")) or {"train": [], "heldout": []}, json.loads(meta.get("split", "{}")),
    )


def _diff(found: FieldConfig, wanted: FieldConfig) -> str:
    a, b = found.to_dict(), wanted.to_dict()
    return ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b.get(k))


def model_path(run: str | Path) -> Path:
    """The checkpoint of a run folder (or the file itself when given one)."""
    p = Path(run)
    return p / CKPT_NAME if p.is_dir() or not p.suffix else p


def load_model(run: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """The trained model of a run folder (`RUN/model.safetensors`), in eval mode."""
    ckpt = read_checkpoint(model_path(run), device)
    ckpt.model.eval()
    return ckpt
