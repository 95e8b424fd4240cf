"""Rendering whole views of a scene through the generalizable field, the two baselines, and the held-out
metrics of `perfdata fit --method generalizable`.

Protocol (per held-out scene): the targets are up to `n_views` of the frames other than `spread_views(k,
start=0)`, evenly spaced (`eval_targets`); their source views are those spread views (choice "spread") or, per
target, its k nearest other frames (choice "nearest"; `generalizable_data.sources_for`). On the same targets:
- psnr, ssim: the model's render (mean over all target views);
- miou, accuracy, class_accuracy: argmax of the composited logits against the label maps (one confusion matrix
  pooled over the labelled held-out scenes' target pixels; ignore = -1), each over the classes present in the
  truth, as the semantic field reports them (`semantic.label_metrics`): predicting a class the truth lacks
  costs the true class its IoU but adds no zero of its own;
- baseline_warp_psnr: the source view nearest to the target (pose distance) warped into it by the true
  depth -- each target pixel of known depth is back-projected and looked up (bilinear) in that source, unless
  it falls outside it or the source's own depth there is more than 5 % nearer (occluded); pixels without a
  colour so (holes) take the mean colour of the source views;
- baseline_mean_psnr: the mean colour of the source views everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from perfdata.models import generalizable, metrics, semantic
from perfdata.models.generalizable import GeneralizableField, Sources
from perfdata.pipelines.generalizable_data import (
    SceneTensors,
    eval_targets,
    frame_rays,
    nearest_view,
    sources_for,
    spread_views,
)


def encode_sources(model: GeneralizableField, st: SceneTensors, views: Sequence[int]) -> Sources:
    """The model's encoding of frames `views` of a scene (on the model's device)."""
    idx = torch.as_tensor(list(views), dtype=torch.long, device=st.images.device)
    return model.encode(st.images[idx], st.proj[idx], st.centres[idx])


RAY_CHUNK = 256
"""Rays rendered at once on the CPU: a chunk's per-sample tensors (256 rays x 64 samples x 3 views x 32
channels) stay in cache; 4096 at once ran one 64x64 view ~2x slower (0.87 s against 0.42 s, one thread).
A GPU takes CUDA_RAY_CHUNK (fewer kernel launches)."""
CUDA_RAY_CHUNK = 8192


@torch.inference_mode()
def render_rays_chunked(model: GeneralizableField, sources: Sources, origins: torch.Tensor, dirs: torch.Tensor,
                        z_scale: torch.Tensor, background: torch.Tensor, n_samples: int,
                        chunk: int | None = None, background_classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`generalizable.render_rays` over (n, 3) rays in chunks of `chunk` (default: RAY_CHUNK on the CPU,
    CUDA_RAY_CHUNK on a GPU; a ray's outputs do not depend on it), in inference mode; outputs on the CPU
    (weights dropped)."""
    dev = sources.images.device
    chunk = chunk or (RAY_CHUNK if dev.type == "cpu" else CUDA_RAY_CHUNK)
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, origins.shape[0], chunk):
        out = generalizable.render_rays(model, sources, origins[s : s + chunk].float().to(dev),
                                        dirs[s : s + chunk].float().to(dev), z_scale[s : s + chunk].float().to(dev),
                                        background, n_samples, background_classes=background_classes)
        for k, v in out.items():
            if k != "weights":
                parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def render_frame(model: GeneralizableField, sources: Sources, st: SceneTensors, index: int, n_samples: int,
                 chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Frame `index` of `st` rendered: rgb (H, W, 3), depth (H, W), opacity (H, W), logits (H, W, C)."""
    h, w = st.size
    o, d, zs = frame_rays(st, index)
    out = render_rays_chunked(model, sources, o, d, zs, st.background, n_samples, chunk)
    return {k: v.reshape(h, w, *v.shape[1:]) for k, v in out.items()}


def image_hw3(st: SceneTensors, index: int) -> torch.Tensor:
    """(H, W, 3) CPU colours of frame `index`."""
    return st.images[index].permute(1, 2, 0).cpu()


def warp_baseline(st: SceneTensors, target: int, source: int, fill: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) the source frame warped into the target by the true depth (see module docstring)."""
    from perfdata import camera

    assert st.depth is not None, "the warp baseline needs depth"
    h, w = st.size
    depth = st.depth[target].cpu().numpy()
    out = fill.reshape(1, 3).expand(h * w, 3).clone()
    pts, flat = camera.backproject(depth, st.K[target], st.c2w[target])
    if len(flat) == 0:
        return out.reshape(h, w, 3)
    uv, z = camera.project(pts, st.K[source], st.c2w[source])
    ok = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    src_depth = st.depth[source].cpu().numpy()
    cols, rows = np.clip(uv[:, 0].astype(int), 0, w - 1), np.clip(uv[:, 1].astype(int), 0, h - 1)
    seen = src_depth[rows, cols]
    ok &= (seen <= 0) | (seen >= 0.95 * z)
    uv_t = torch.from_numpy(uv[ok]).float()[None]
    colours = generalizable.bilinear(st.images[source : source + 1].cpu(), uv_t, (h, w))[0]
    out[torch.from_numpy(flat[ok])] = colours
    return out.reshape(h, w, 3)


@dataclass
class EvalTotals:
    """Running sums of the held-out evaluation."""

    n_classes: int
    psnr: list[float]
    ssim: list[float]
    warp: list[float]
    mean: list[float]
    confusion: torch.Tensor

    @classmethod
    def empty(cls, n_classes: int) -> EvalTotals:
        return cls(n_classes, [], [], [], [], torch.zeros((max(n_classes, 1),) * 2, dtype=torch.long))

    def summary(self) -> dict[str, float]:
        out = {"psnr": float(np.mean(self.psnr)), "ssim": float(np.mean(self.ssim)),
               "baseline_mean_psnr": float(np.mean(self.mean))}
        if self.warp:
            out["baseline_warp_psnr"] = float(np.mean(self.warp))
        if self.n_classes and int(self.confusion.sum()):
            no_prediction = torch.zeros((self.n_classes, 1), dtype=self.confusion.dtype)
            out.update(semantic.label_metrics(torch.cat([self.confusion, no_prediction], dim=1)))
        return out


def evaluate_scene(model: GeneralizableField, st: SceneTensors, k: int, n_views: int, n_samples: int,
                   totals: EvalTotals, chunk: int | None = None, choice: str = "spread") -> dict[str, float]:
    """Add one held-out scene to `totals`; returns its own psnr (mean over its targets)."""
    from perfdata.downstream.metrics import confusion_matrix

    spread = spread_views(st.centres.cpu(), st.axes.cpu(), k, start=0)
    encoded: dict[tuple[int, ...], Sources] = {}
    psnrs = []
    for t in eval_targets(st.n_frames, spread, n_views):
        src = sources_for(st, choice, k, t)
        if tuple(src) not in encoded:
            encoded[tuple(src)] = encode_sources(model, st, src)
        sources = encoded[tuple(src)]
        fill = st.images[src].mean(dim=(0, 2, 3)).cpu()
        out = render_frame(model, sources, st, t, n_samples, chunk)
        truth = image_hw3(st, t)
        pred = out["rgb"].clamp(0, 1)
        psnrs.append(metrics.psnr(pred, truth))
        totals.ssim.append(metrics.ssim(pred, truth))
        totals.mean.append(metrics.psnr(fill.expand_as(truth), truth))
        if st.depth is not None:
            near = nearest_view(st.centres.cpu(), st.axes.cpu(), t, src)
            totals.warp.append(metrics.psnr(warp_baseline(st, t, near, fill), truth))
        if st.labels is not None and totals.n_classes:
            pred_lab = out["logits"].argmax(-1)
            totals.confusion += confusion_matrix(pred_lab, st.labels[t].cpu(), totals.n_classes, ignore_index=-1)
    totals.psnr += psnrs
    return {"psnr": float(np.mean(psnrs))}


@torch.no_grad()
def evaluate_scenes(model: GeneralizableField, scenes: Sequence[SceneTensors], k: int, n_views: int,
                    n_samples: int, chunk: int | None = None,
                    choice: str = "spread") -> tuple[dict[str, float], dict[str, float]]:
    """Held-out metrics over `scenes` (module docstring) and each scene's psnr."""
    totals = EvalTotals.empty(model.cfg.n_classes)
    per_scene = {st.scene_id: evaluate_scene(model, st, k, n_views, n_samples, totals, chunk, choice)["psnr"]
                 for st in scenes}
    return totals.summary(), per_scene
