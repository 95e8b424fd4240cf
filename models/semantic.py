"""Semantic fields on the Plenoxel grid: Semantic-NeRF's idea (Zhi et al., ICCV 2021) on explicit voxels.

A `SemanticField` holds class logits on a sparse grid in the same cube as a `PlenoxelGrid`: `links`
(int32 [X', Y', Z'], -1 = empty) index rows of `logits` (m, C). Its resolution is the density grid's divided
by `factor` (1: the same voxels and rows as the density grid; 2: one logit row per 2^3 voxels, allocated where
any of them is). Logits of a sample are the trilinear average over the allocated corners only (the
interpolated weights divided by their sum, as `pipelines.render_view.composite_features` does for stored
logits), and composite along each ray with the colour's weights through `models.volrend`:
    logits(ray) = sum_i w_i * l(x_i),  w_i = T_i * alpha_i.
The ray's class is the argmax; training uses softmax cross-entropy against label maps, label -1 ignored.

The density is not changed by the label loss: the weights are computed without grad (colour alone shapes the
geometry, so noisy labels cannot move surfaces). Pure maths: tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.models import sampling, volrend
from perfdata.models.plenoxel import Accel, PlenoxelGrid, grid_rays, lookup, march

IGNORE = -1
"""The void / ignore label of label maps."""


@dataclass
class SemanticField:
    """Class logits on a sparse grid `factor` times coarser than the density grid it belongs to.

    Attributes:
        links: (X', Y', Z') int32 row of each semantic voxel, -1 = not allocated.
        logits: (m, C) float32 raw class logits.
        factor: density-grid voxels per semantic voxel along each axis (1: the density grid's own voxels).
    """

    links: torch.Tensor
    logits: torch.Tensor
    factor: int = 1

    def __post_init__(self) -> None:
        assert self.links.ndim == 3, f"links must be (X, Y, Z), got {tuple(self.links.shape)}"
        assert self.logits.ndim == 2, f"logits must be (m, C), got {tuple(self.logits.shape)}"

    @property
    def reso(self) -> tuple[int, int, int]:
        return tuple(int(r) for r in self.links.shape)  # type: ignore[return-value]

    @property
    def n_rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.logits.shape[1])


def field_links(links: torch.Tensor, factor: int) -> torch.Tensor:
    """(X/f, Y/f, Z/f) int32 links (rounded up) allocating a semantic voxel wherever a density voxel of the
    (X, Y, Z) int32 `links` falls in it; factor 1 returns `links` itself (rows shared with the density grid)."""
    if factor == 1:
        return links
    occ = (links >= 0).float()[None, None]
    coarse = F.max_pool3d(occ, factor, factor, ceil_mode=True)[0, 0] > 0
    out = torch.full(coarse.shape, -1, dtype=torch.int32, device=links.device)
    out[coarse] = torch.arange(int(coarse.sum()), dtype=torch.int32, device=links.device)
    return out


def link_coords(links: torch.Tensor) -> torch.Tensor:
    """(m, 3) int64 voxel index of every row of (X, Y, Z) int32 links (the inverse of links)."""
    coords = torch.nonzero(links >= 0)
    out = torch.empty_like(coords)
    out[links[coords[:, 0], coords[:, 1], coords[:, 2]].long()] = coords
    return out


def make_field(grid: PlenoxelGrid, n_classes: int, factor: int = 1) -> SemanticField:
    """Zero logits (uniform class probabilities) for `grid`'s voxels at 1/factor of its resolution."""
    assert n_classes >= 1 and factor >= 1, f"need n_classes >= 1 and factor >= 1, got {n_classes}, {factor}"
    links = field_links(grid.links, factor)
    n = int((links >= 0).sum())
    return SemanticField(links, torch.zeros((n, n_classes), dtype=torch.float32, device=grid.device), factor)


def field_corners(field: SemanticField, u: torch.Tensor, grid_reso: tuple[int, int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner rows (n, 8) int64 (-1 empty) and trilinear weights (n, 8) (empty corners zeroed) of points u (n, 3)
    given in index coordinates of the density grid of resolution `grid_reso`."""
    f = field.factor
    assert f == 1 or all(-(-r // f) == s for r, s in zip(grid_reso, field.reso, strict=True)), "field and grid disagree"
    uc = u if f == 1 else (u + 0.5) / f - 0.5  # semantic voxel j spans density voxels j f .. j f + f - 1
    flat, w = sampling.trilinear_corners(uc, field.reso)
    ids = sampling.pad_links(field.links)[flat]
    return ids, w * (ids >= 0).to(w.dtype)


def sample_logits(values: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Trilinear average over allocated corners: values (m, C), ids (n, 8) rows (>= 0), w (n, 8) weights with
    empty corners zeroed -> (n, C); a point without allocated corners gets 0."""
    return sampling.trilinear_gather(values, ids, w) / w.sum(-1, keepdim=True).clamp_min(1e-6)


@dataclass
class SemanticRender:
    """Output of `render_logits_train` on n_rays rays.

    Attributes:
        logits: (n_rays, C) composited logits (differentiable in `leaf`).
        opacity: (n_rays,) sum of the weights (no grad).
        rows: (k,) int64 field rows behind `leaf` (those the samples touch, and any `extra_rows`); leaf: (k, C)
            those rows as a leaf tensor.
        n_samples: composited samples.
        row_map: (n_rows,) int32 position of each field row in `rows`, -1 for rows not there (with extra_rows
            only, for adding another loss's gradient into the leaf's: `plenoxel_train.tv_grads_into`).
    """

    logits: torch.Tensor
    opacity: torch.Tensor
    rows: torch.Tensor
    leaf: torch.Tensor
    n_samples: int
    row_map: torch.Tensor | None = None


def render_logits_train(
    grid: PlenoxelGrid, accel: Accel, field: SemanticField, origins: torch.Tensor, dirs: torch.Tensor,
    offset: torch.Tensor | float = 0.5, weight_thresh: float = 1e-4, extra_rows: torch.Tensor | None = None,
) -> SemanticRender:
    """Composited logits of cube rays (origins (n_rays, 3), unit dirs (n_rays, 3)), differentiable in the rows
    of `field.logits` they touch only (a compact leaf, as `plenoxel_train.render_train` does for SH); the
    compositing weights carry no grad. Samples with weight <= weight_thresh are skipped. `extra_rows` (int64,
    repeats allowed; e.g. `plenoxel_train.tv_rows_touched`) join the leaf's rows, and `row_map` is returned."""
    n_rays = origins.shape[0]
    with torch.no_grad():
        ray_idx, _, u = march(accel, origins, dirs, offset)
        ids, w = lookup(accel, u)
        sigma = sampling.trilinear_gather(grid.density, ids.clamp_min(0), w).squeeze(-1).clamp_min(0.0)
        weights, _ = volrend.render_weights_packed(sigma, accel.step_cube, ray_idx, n_rays)
        opacity = volrend.accumulate_opacity(weights, ray_idx, n_rays)
        sel = torch.nonzero(weights > weight_thresh).squeeze(-1)
        if field.factor == 1:
            f_ids, f_w = ids[sel], w[sel]
        else:
            f_ids, f_w = field_corners(field, u[sel], grid.reso)
    row_map = None
    if extra_rows is None:
        rows, local = sampling.compact_rows(f_ids, field.n_rows)
    else:
        rows, local_all = sampling.compact_rows(torch.cat([f_ids.reshape(-1), extra_rows]), field.n_rows)
        local = local_all[: f_ids.numel()].view_as(f_ids)
        row_map = torch.full((field.n_rows,), -1, dtype=torch.int32, device=rows.device)
        row_map[rows] = torch.arange(rows.numel(), dtype=torch.int32, device=rows.device)
    leaf = field.logits.index_select(0, rows).requires_grad_(True)
    values = sample_logits(leaf, local, f_w)
    logits = volrend.composite_packed(weights[sel], values, ray_idx[sel], n_rays)
    return SemanticRender(logits, opacity, rows, leaf, int(sel.numel()), row_map)


def semantic_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of logits (n, C) against labels (n,) int64 over the labelled rays; rays with
    label -1 contribute nothing (0 when none is labelled). Raises on labels >= C."""
    assert logits.ndim == 2 and labels.shape == logits.shape[:1], "logits must be (n, C) beside labels (n,)"
    keep = labels != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    if int(labels[keep].max()) >= logits.shape[1] or int(labels[keep].min()) < 0:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) or be {IGNORE}")
    return F.cross_entropy(logits[keep], labels[keep])


@torch.no_grad()
def render_logits(
    grid: PlenoxelGrid, accel: Accel, field: SemanticField, origins: torch.Tensor, dirs: torch.Tensor,
    weight_thresh: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composited logits (n, C) and opacity (n,) of world rays origins, dirs (n, 3) (no grad)."""
    cube = grid_rays(grid, origins, dirs)
    o, d = cube.origins, cube.dirs
    out = render_logits_train(grid, accel, field, o, d, 0.5, weight_thresh)
    return out.logits.detach(), out.opacity


@torch.no_grad()
def render_camera_logits(
    grid: PlenoxelGrid, accel: Accel, field: SemanticField, K: np.ndarray, c2w: np.ndarray, width: int,
    height: int, chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composited logits (H, W, C) and opacity (H, W) of a pinhole camera (K (3, 3), c2w (4, 4), world frame),
    in chunks of rays."""
    from perfdata import camera

    uv = camera.pixel_grid(width, height)
    logits, opacity = [], []
    for start in range(0, len(uv), chunk):
        o, d = camera.pixel_rays(K, c2w, uv[start : start + chunk])
        lg, op = render_logits(grid, accel, field, torch.from_numpy(o).float(), torch.from_numpy(d).float())
        logits.append(lg)
        opacity.append(op)
    return torch.cat(logits).reshape(height, width, -1), torch.cat(opacity).reshape(height, width)


@torch.no_grad()
def resample_field(field: SemanticField, grid: PlenoxelGrid, old_reso: tuple[int, int, int],
                   chunk: int = 131072) -> SemanticField:
    """The field moved onto a new density grid (after an upsample): logits averaged trilinearly from the old
    field (whose density grid had resolution `old_reso`) at the new semantic voxels' centres."""
    new_links = field_links(grid.links, field.factor)
    coords = torch.nonzero(new_links >= 0)
    rows = new_links[coords[:, 0], coords[:, 1], coords[:, 2]].long()
    out = torch.zeros((coords.shape[0], field.n_classes), dtype=torch.float32, device=grid.device)
    f, new_reso = field.factor, grid.reso
    for start in range(0, coords.shape[0], chunk):
        c = coords[start : start + chunk].float()
        centre_u = (c + 0.5) * f - 0.5  # index coordinates of the centre in the new density grid
        cube = (centre_u + 0.5) * 2.0 / torch.tensor(new_reso, device=c.device) - 1.0
        u_old = sampling.cube_to_index(cube, torch.tensor(old_reso, dtype=torch.float32, device=c.device))
        ids, w = field_corners(field, u_old, old_reso)
        out[rows[start : start + chunk]] = sample_logits(field.logits, ids.clamp_min(0), w)
    return SemanticField(new_links, out, f)


@torch.no_grad()
def voxel_logits(field: SemanticField, grid: PlenoxelGrid, coords: torch.Tensor) -> torch.Tensor:
    """(n, C) logits at the centres of the density voxels coords (n, 3) int64 (factor 1: their own rows)."""
    if field.factor == 1:
        return field.logits[field.links[coords[:, 0], coords[:, 1], coords[:, 2]].long()]
    ids, w = field_corners(field, coords.float(), grid.reso)
    return sample_logits(field.logits, ids.clamp_min(0), w)


def confident_labels(logits: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) int16 argmax of logits (n, C), -1 where the softmax probability of the argmax is below threshold."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    best = prob.argmax(axis=1)
    return np.where(prob[np.arange(len(best)), best] >= threshold, best, IGNORE).astype(np.int16)


def label_confusion(pred: torch.Tensor, truth: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C + 1) int64 counts [t, p] over pixels with truth t >= 0; prediction -1 (no label) counts in column C.
    pred, truth: same shape, int."""
    assert pred.shape == truth.shape, f"pred {tuple(pred.shape)} and truth {tuple(truth.shape)} differ"
    t, p = truth.reshape(-1).long(), pred.reshape(-1).long()
    keep = t != IGNORE
    t, p = t[keep], p[keep]
    p = torch.where(p < 0, torch.full_like(p, n_classes), p)
    if len(t) and (int(t.max()) >= n_classes or int(p.max()) > n_classes):
        raise ValueError(f"class ids must lie in [0, {n_classes}) or be {IGNORE}")
    return torch.bincount(t * (n_classes + 1) + p, minlength=n_classes * (n_classes + 1)).view(n_classes, n_classes + 1)


def label_metrics(conf: torch.Tensor) -> dict[str, float]:
    """Semantic-NeRF's three from a `label_confusion` (C, C + 1), each over the classes present in the truth (as
    Semantic-NeRF computes them): miou (mean IoU; a pixel without a prediction is wrong), accuracy (total) and
    class_accuracy (mean per-class recall). nan when the truth has no labelled pixel."""
    conf = conf.double()
    n = conf.shape[0]
    tp = conf[:, :n].diag()
    truth, predicted = conf.sum(1), conf[:, :n].sum(0)
    union = truth + predicted - tp
    in_truth = truth > 0
    total = float(truth.sum())
    nan = float("nan")
    return {
        "miou": float((tp[in_truth] / union[in_truth]).mean()) if bool(in_truth.any()) else nan,
        "accuracy": float(tp.sum()) / total if total else nan,
        "class_accuracy": float((tp[in_truth] / truth[in_truth]).mean()) if bool(in_truth.any()) else nan,
    }
