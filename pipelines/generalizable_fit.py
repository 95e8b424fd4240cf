"""`perfdata fit --method generalizable`: train one field across scenes, resumably, and evaluate it on held-out
scenes it never saw.

A run folder RUN holds `model.safetensors` (model + Adam state + step; rewritten atomically every
`checkpoint_seconds` and at the end), `curves.png` (training curves) and, written last, `fit.json` (config,
split, versions, metrics on the held-out scenes: psnr, ssim, miou where labels exist, baseline_warp_psnr where
depth exists, baseline_mean_psnr; see `perfdata.pipelines.generalizable_eval`).

Every step takes one training scene and `batch_rays` random pixels of target frames: with `source_choice`
spread, `source_views` source frames spread by farthest-point sampling from a random frame and two other
frames as targets; with nearest, one random target frame and its `source_views` nearest other frames. The loss
is colour MSE, plus, where labels exist, cross-entropy of the composited logits and of the 2D head's logits on
the source views, and an L1 z-depth term where depth exists (training scenes only; the model never sees depth
at inference).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.models import generalizable
from perfdata.models.generalizable import FieldConfig, GeneralizableField
from perfdata.pipelines.generalizable_ckpt import (
    CKPT_NAME,
    Checkpoint,
    load_optim_,
    read_checkpoint,
    save_checkpoint,
)
from perfdata.pipelines.generalizable_data import (
    SOURCE_CHOICES,
    SceneTensors,
    check_scene,
    frame_rays,
    load_scene_tensors,
    sources_for,
    union_label_names,
)
from perfdata.pipelines.generalizable_eval import encode_sources, evaluate_scenes

from perfdata import atomic
from perfdata.configs import from_fields
from perfdata.devices import resolve_device, split_scene_ids, versions
from perfdata.errors import ConfigError, FitError, InputError
from perfdata.scene import Scene

RUN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GeneralizableConfig:
    """How to train and evaluate the generalizable field."""

    source_views: int = 3
    """Source views per scene (training and inference)."""
    source_choice: str = "spread"
    """How source views are picked, in training and in the held-out metrics: spread (one farthest-point set per
    scene) or nearest (per target, its nearest other frames); `generalizable_data`."""
    steps: int = 1_000_000
    """Total optimisation steps (a resumed run counts its earlier steps)."""
    max_seconds: float | None = None
    """Total optimisation wall-clock budget (a resumed run counts its earlier seconds; evaluation excluded)."""
    batch_rays: int = 256
    """Rays per step."""
    n_samples: int = 32
    """Samples per ray in training."""
    eval_samples: int = 32
    """Samples per ray when evaluating (the training count: 64 gave the same held-out PSNR, 19.52 against
    19.55 dB on two object scenes, rooms 21.14 both, miou equal, at 2.4x the time)."""
    lr: float = 2e-3
    """Adam learning rate at the start (decays exponentially to lr_final over the budget). Rooms alone, 4400
    steps, 4 held-out rooms: 2e-3 -> 2e-4 gave miou 0.545 against 0.535 for 1e-3 -> 1e-4, psnr equal (27.84)."""
    lr_final: float = 2e-4
    semantic_weight: float = 0.2
    """Weight of the cross-entropy of composited logits (0.05 left the logits at wall / floor everywhere after
    150 s on 12 object + 8 room scenes; 0.2 with the class weights and the logit branch: 0.30 miou pooled)."""
    class_balance: float = 0.5
    """Cross-entropy class weights (median frequency / frequency) ** class_balance over the training label
    maps (0: unweighted); small classes (a lamp, a chair) otherwise lose to walls and floors."""
    label_2d_weight: float = 0.2
    """Weight of the cross-entropy of the 2D head's logits against the source views' own labels (labelled
    scenes; `FieldConfig.label_head_2d`); the same class weights."""
    detach_label_weights: bool = True
    """The cross-entropy composites the logits with gradient-free weights, so it cannot move density."""
    depth_weight: float = 0.1
    """Weight of the L1 z-depth loss (divided by the scene's median depth) where training scenes have depth."""
    heldout_fraction: float = 0.2
    """Fraction of the scenes held out (never trained on) for the metrics (scene split by `seed`)."""
    eval_views: int = 6
    """Target views per held-out scene in the final metrics."""
    checkpoint_seconds: float = 60.0
    """Seconds between checkpoints (each also records a quick held-out PSNR for the curves)."""
    seed: int = 0
    device: str = "auto"
    field: FieldConfig = field(default_factory=FieldConfig)
    """Architecture (image_size and n_classes are taken from the data)."""

    def __post_init__(self) -> None:
        if self.source_views < 1:
            raise ConfigError(f"--source-views must be at least 1, got {self.source_views}")
        if self.source_choice not in SOURCE_CHOICES:
            raise ConfigError(f"--source-choice must be one of {', '.join(SOURCE_CHOICES)}, got {self.source_choice!r}")
        if min(self.steps, self.batch_rays, self.n_samples, self.eval_samples, self.eval_views) < 1:
            raise ConfigError("steps, batch_rays, n_samples, eval_samples and eval_views must be positive")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["field"] = self.field.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> GeneralizableConfig:
        fixed = dict(data)
        if "field" in fixed:
            try:
                fixed["field"] = FieldConfig.from_dict(fixed["field"])
            except TypeError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return from_fields(cls, fixed, where, "generalizable config")


@dataclass(frozen=True)
class TrainProgress:
    step: int
    seconds: float
    loss: float
    psnr: float
    total_steps: int
    max_seconds: float | None


@dataclass(frozen=True)
class GeneralizableResult:
    run: Path
    metrics: dict[str, float]
    per_scene: dict[str, float]
    steps: int
    train_seconds: float
    device: str
    split: dict[str, list[str]]


def split_scenes(scenes: Sequence[Scene], cfg: GeneralizableConfig, where: str) -> dict[str, list[str]]:
    """Train / held-out scene ids (disjoint; at least one of each)."""
    if len(scenes) < 2:
        raise InputError(where, f"{len(scenes)} scene(s): training across scenes needs at least 2 (one held out)")
    split = split_scene_ids([s.scene_id for s in scenes], cfg.heldout_fraction, cfg.seed)
    return {"train": split["train"], "heldout": split["val"]}


def start_model(run: Path, cfg: GeneralizableConfig, field_cfg: FieldConfig, names: tuple[str, ...],
                split: dict[str, list[str]], resume: bool, device: torch.device) -> tuple[Checkpoint, torch.optim.Optimizer]:
    """A fresh model, or the run's checkpoint when resuming (it must match the architecture, labels, split)."""
    path = run / CKPT_NAME
    if resume and path.is_file():
        ckpt = read_checkpoint(path, device, expect=field_cfg)
        if tuple(ckpt.label_names) != names or ckpt.split != split:
            raise InputError(path, "checkpoint was trained on other scenes or labels; start over with --force")
    else:
        torch.manual_seed(cfg.seed)
        ckpt = Checkpoint(GeneralizableField(field_cfg).to(device), names, split=split)
    ckpt.train_config = cfg.to_dict()
    opt = torch.optim.Adam(ckpt.model.parameters(), lr=cfg.lr)
    if ckpt.optim_state:
        load_optim_(opt, {k: v.to(device) for k, v in ckpt.optim_state.items()})
    return ckpt, opt


def class_weights(scenes: Sequence[SceneTensors], n_classes: int, power: float) -> torch.Tensor | None:
    """(n_classes,) cross-entropy weights (median frequency / frequency) ** power from the scenes' label maps
    (classes never seen get weight 1; None without labels or with power 0)."""
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for st in scenes:
        if st.labels is not None:
            lab = st.labels[st.labels >= 0].cpu()
            counts += torch.bincount(lab, minlength=n_classes)[:n_classes].double()
    seen = counts > 0
    if power == 0 or not bool(seen.any()):
        return None
    freq = counts / counts.sum()
    weights = torch.ones(n_classes, dtype=torch.float64)
    weights[seen] = (freq[seen].median() / freq[seen]) ** power
    return weights.float()


def training_loss(model: GeneralizableField, st: SceneTensors, cfg: GeneralizableConfig,
                  gen: torch.Generator, depth_norm: float,
                  label_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Loss of one random batch of one scene, and its colour PSNR."""
    n = st.n_frames
    first = int(torch.randint(n, (1,), generator=gen))
    src = sources_for(st, cfg.source_choice, cfg.source_views, target=first, start=first)
    if cfg.source_choice == "nearest":
        targets = torch.tensor([first])
    else:
        rest = torch.tensor([i for i in range(n) if i not in src])
        targets = rest[torch.randperm(len(rest), generator=gen)[:2]]
    h, w = st.size
    frame = targets[torch.randint(len(targets), (cfg.batch_rays,), generator=gen)]
    pix = torch.randint(h * w, (cfg.batch_rays,), generator=gen)
    rays = [frame_rays(st, int(t), pix[frame == t]) for t in targets]
    o, d, zs = (torch.cat([r[i] for r in rays]).float().to(st.images.device) for i in range(3))
    order = torch.cat([torch.nonzero(frame == t).squeeze(-1) for t in targets])
    fr, px = frame[order].to(st.images.device), pix[order].to(st.images.device)
    truth = st.images[fr, :, px // w, px % w]
    sources = encode_sources(model, st, src)
    out = generalizable.render_rays(model, sources, o, d, zs, st.background, cfg.n_samples, gen_for(gen, o.device),
                                    detach_label_weights=cfg.detach_label_weights)
    mse = F.mse_loss(out["rgb"], truth)
    loss = mse
    if st.labels is not None and cfg.semantic_weight > 0 and model.cfg.n_classes:
        lab = st.labels[fr, px // w, px % w]
        if bool((lab >= 0).any()):
            loss = loss + cfg.semantic_weight * F.cross_entropy(out["logits"], lab, weight=label_weights,
                                                                ignore_index=-1)
        src_lab = st.labels[torch.as_tensor(src, device=st.labels.device)]
        if model.head_2d is not None and cfg.label_2d_weight > 0 and bool((src_lab >= 0).any()):
            loss = loss + cfg.label_2d_weight * F.cross_entropy(model.source_logits(sources), src_lab,
                                                                weight=label_weights, ignore_index=-1)
    if st.depth is not None and cfg.depth_weight > 0:
        dep = st.depth[fr, px // w, px % w]
        known = dep > 0
        if bool(known.any()):
            loss = loss + cfg.depth_weight * (out["depth"] - dep).abs()[known].mean() / depth_norm
    return loss, -10.0 * math.log10(max(float(mse.detach()), 1e-10))


def gen_for(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """`gen` itself on the CPU; on another device a generator seeded from it."""
    if device.type == "cpu":
        return gen
    return torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))


def progress_fraction(cfg: GeneralizableConfig, step: int, seconds: float) -> float:
    frac = step / cfg.steps
    if cfg.max_seconds is not None:
        frac = max(frac, seconds / max(cfg.max_seconds, 1e-9))
    return min(frac, 1.0)


def train(ckpt: Checkpoint, opt: torch.optim.Optimizer, scenes: Sequence[SceneTensors], heldout: Sequence[SceneTensors],
          cfg: GeneralizableConfig, run: Path, callback: Callable[[TrainProgress], None] | None) -> None:
    """Optimise until the step or time budget is spent, checkpointing every `checkpoint_seconds`."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ckpt.step)
    norms = [float(st.depth[st.depth > 0].median()) if st.depth is not None and bool((st.depth > 0).any()) else 1.0
             for st in scenes]
    n_classes = ckpt.model.cfg.n_classes
    weights = class_weights(scenes, n_classes, cfg.class_balance) if n_classes else None
    model, start, last_ckpt = ckpt.model, time.perf_counter() - ckpt.seconds, ckpt.seconds
    history = ckpt.history
    model.train()
    while ckpt.step < cfg.steps and progress_fraction(cfg, ckpt.step, ckpt.seconds) < 1.0:
        frac = progress_fraction(cfg, ckpt.step, ckpt.seconds)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (cfg.lr_final / cfg.lr) ** frac
        i = int(torch.randint(len(scenes), (1,), generator=gen))
        loss, psnr = training_loss(model, scenes[i], cfg, gen, norms[i],
                                   None if weights is None else weights.to(scenes[i].images.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ckpt.step += 1
        ckpt.seconds = time.perf_counter() - start
        if not math.isfinite(float(loss.detach())):
            raise FitError(f"training diverged (non-finite loss) at step {ckpt.step}")
        if ckpt.step % 10 == 0 or ckpt.step == 1:
            history["train"].append([ckpt.step, round(ckpt.seconds, 2), float(loss.detach()), psnr])
            if callback is not None:
                callback(TrainProgress(ckpt.step, ckpt.seconds, float(loss.detach()), psnr, cfg.steps, cfg.max_seconds))
        if ckpt.seconds - last_ckpt >= cfg.checkpoint_seconds:
            paused = time.perf_counter()
            history["heldout"].append([ckpt.step, round(ckpt.seconds, 2), quick_heldout_psnr(model, heldout, cfg)])
            save_checkpoint(run / CKPT_NAME, ckpt, opt)
            model.train()
            start += time.perf_counter() - paused
            last_ckpt = ckpt.seconds


def quick_heldout_psnr(model: GeneralizableField, heldout: Sequence[SceneTensors], cfg: GeneralizableConfig) -> float:
    """Held-out PSNR on one target view of up to 3 held-out scenes (for the curves)."""
    model.eval()
    summary, _ = evaluate_scenes(model, list(heldout)[:3], cfg.source_views, 1, cfg.eval_samples,
                                 choice=cfg.source_choice)
    return summary["psnr"]


def plot_curves(path: Path, history: dict[str, list[list[float]]]) -> None:
    """Training loss and PSNR (batch, and held-out at the checkpoints) against steps, as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_h = np.asarray(history.get("train") or [[0, 0, np.nan, np.nan]], dtype=float)
    held = np.asarray(history.get("heldout") or np.zeros((0, 3)), dtype=float)
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.semilogy(train_h[:, 0], train_h[:, 2], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_psnr.plot(train_h[:, 0], train_h[:, 3], lw=1, alpha=0.6, label="training batch")
    if len(held):
        ax_psnr.plot(held[:, 0], held[:, 2], "o-", label="held-out scenes")
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB)", title="PSNR")
    ax_psnr.legend()
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def check_run_folder(run: Path, resume: bool, force: bool) -> None:
    if run.exists() and not run.is_dir():
        raise InputError(run, "exists and is not a folder")
    if (run / CKPT_NAME).is_file() and not (resume or force):
        raise InputError(run, "already holds a trained model; pass --resume to go on or --force to start over")


def fit_generalizable(scenes: Sequence[Scene], run: str | Path, cfg: GeneralizableConfig, resume: bool = False,
                      force: bool = False, callback: Callable[[TrainProgress], None] | None = None,
                      where: str = "data", heldout: Sequence[Scene] | None = None) -> GeneralizableResult:
    """Train on the training split of `scenes`, evaluate on the held-out split, write RUN (module docstring).
    With `heldout`, every scene of `scenes` trains and `heldout` (disjoint ids) is evaluated. Every input check
    happens before anything is written."""
    run = Path(run)
    check_run_folder(run, resume, force)
    if heldout is not None:
        split = {"train": sorted(s.scene_id for s in scenes), "heldout": sorted(s.scene_id for s in heldout)}
        if set(split["train"]) & set(split["heldout"]) or not split["train"] or not split["heldout"]:
            raise InputError(where, "training and held-out scenes must be non-empty and disjoint")
        scenes = [*scenes, *heldout]
    else:
        split = split_scenes(scenes, cfg, where)
    size = (scenes[0].frames[0].height, scenes[0].frames[0].width)
    for s in scenes:
        check_scene(s, cfg.source_views, size)
    by_id = {s.scene_id: s for s in scenes}
    names = union_label_names([by_id[i] for i in split["train"]])
    field_cfg = dataclasses.replace(cfg.field, image_size=size, n_classes=len(names))
    device = resolve_device(cfg.device)
    ckpt, opt = start_model(run, cfg, field_cfg, names, split, resume, device)
    train_t = [load_scene_tensors(by_id[i], names).to(device) for i in split["train"]]
    held_t = [load_scene_tensors(by_id[i], names).to(device) for i in split["heldout"]]
    run.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    train(ckpt, opt, train_t, held_t, cfg, run, callback)
    save_checkpoint(run / CKPT_NAME, ckpt, opt)
    ckpt.model.eval()
    summary, per_scene = evaluate_scenes(ckpt.model, held_t, cfg.source_views, cfg.eval_views, cfg.eval_samples,
                                         choice=cfg.source_choice)
    plot_curves(run / "curves.png", ckpt.history)
    result = GeneralizableResult(run, summary, per_scene, ckpt.step, ckpt.seconds, str(device), split)
    atomic.write_json(run / "fit.json", run_record(result, cfg, field_cfg, names, ckpt, time.perf_counter() - wall))
    return result


def run_record(result: GeneralizableResult, cfg: GeneralizableConfig, field_cfg: FieldConfig,
               names: tuple[str, ...], ckpt: Checkpoint, wall: float) -> dict[str, Any]:
    """RUN/fit.json."""
    return {
        "format_version": RUN_FORMAT_VERSION, "method": "generalizable", "status": "done",
        "config": cfg.to_dict(), "field": field_cfg.to_dict(), "seed": cfg.seed, "versions": versions(),
        "device": result.device, "wall_seconds": round(wall, 3), "train_seconds": round(result.train_seconds, 3),
        "steps": result.steps, "source_views": cfg.source_views, "source_choice": cfg.source_choice,
        "label_names": list(names),
        "scenes": result.split, "metrics": result.metrics, "per_scene_psnr": result.per_scene,
        "curve": ckpt.history.get("heldout", []), "checkpoint": CKPT_NAME,
    }


def read_run(run: str | Path) -> dict[str, Any]:
    """A run's fit.json (InputError when missing or unreadable)."""
    path = Path(run) / "fit.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the run's fit.json ({exc})") from None
    if record.get("method") != "generalizable":
        raise InputError(path, "not a generalizable run (method is not generalizable)")
    return record
