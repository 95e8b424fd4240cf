"""Rendering one view of a fitted scene: colour, z-depth, foreground mask, background-only colour and labels
(definitions in `perfdata.pipelines.render`), and encoding the outputs as the bytes of the files / members."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from perfdata.models import background as background_model
from perfdata.models import plenoxel, sampling, volrend
from perfdata.pipelines.poses import Camera

from perfdata import camera
from perfdata.grid import SparseGrid
from perfdata.images import depth_to_png, labels_to_png


@dataclass(frozen=True)
class SceneFields:
    """Everything needed to render views of one scene, on one device.

    Attributes:
        grid, accel: the field and its acceleration structure.
        features: (n_voxels, 2 + C) float32: ones (the coverage of allocated corners), foreground indicator,
            then C label channels (one-hot labels or logits); None when the scene has no labels.
        logits: whether the label channels are logits (else one-hot labels).
        bg_grid, bg_accel: the field without its foreground voxels, with the MSI behind them if the scene has one
            (None: the MSI alone, else the background colour).
        background: (3,) background colour (with an MSI: behind its last layer).
    """

    grid: plenoxel.PlenoxelGrid
    accel: plenoxel.Accel
    features: torch.Tensor | None
    logits: bool
    bg_grid: plenoxel.PlenoxelGrid | None
    bg_accel: plenoxel.Accel | None
    background: torch.Tensor

    @property
    def n_classes(self) -> int:
        return 0 if self.features is None else self.features.shape[1] - 2


def voxel_labels(grid: SparseGrid) -> np.ndarray | None:
    """(n,) int labels of the voxels (labels, else argmax of logits), -1 = ignore; None without either."""
    if grid.labels is not None:
        return grid.labels.astype(np.int64)
    if grid.logits is not None:
        return np.argmax(grid.logits, axis=1).astype(np.int64)
    return None


def foreground_voxels(labels: np.ndarray, label_names: tuple[str, ...] | None, background: tuple[str, ...]) -> np.ndarray:
    """(n,) bool: label >= 0 and its class name not in `background` (without names: id 0 is background)."""
    if label_names is None:
        bg_ids = np.array([0])
    else:
        bg_ids = np.array([i for i, n in enumerate(label_names) if n in background], dtype=np.int64)
    return (labels >= 0) & ~np.isin(labels, bg_ids)


def prepare_fields(
    grid: SparseGrid, label_names: tuple[str, ...] | None, background_labels: tuple[str, ...], step: float,
    device: str, need_bg: bool,
) -> SceneFields:
    """Move a scene to `device` and build what `render_view` uses."""
    field = plenoxel.PlenoxelGrid.from_sparse(grid, device)
    accel = plenoxel.build_accel(field, step)
    bg_colour = plenoxel.default_background(field)
    labels = voxel_labels(grid)
    if labels is None:
        return SceneFields(field, accel, None, False, None, None, bg_colour)
    fg = foreground_voxels(labels, label_names, background_labels)
    if grid.logits is not None:
        chans = np.asarray(grid.logits, dtype=np.float32)
    else:
        n_classes = max(int(labels.max()) + 1, len(label_names or ()), 1)
        chans = np.zeros((len(labels), n_classes), np.float32)
        ok = labels >= 0
        chans[np.flatnonzero(ok), labels[ok]] = 1.0
    ones = np.ones((len(labels), 1), np.float32)
    feats = torch.from_numpy(np.concatenate([ones, fg[:, None].astype(np.float32), chans], axis=1)).to(device)
    bg_grid = bg_accel = None
    if need_bg and fg.any():
        bg_grid = plenoxel.PlenoxelGrid.from_sparse(grid.take(~fg), device)
        bg_accel = plenoxel.build_accel(bg_grid, step)
    return SceneFields(field, accel, feats, grid.logits is not None, bg_grid, bg_accel, bg_colour)


@torch.no_grad()
def composite_features(
    fields: SceneFields, origins: torch.Tensor, dirs: torch.Tensor, weight_thresh: float = 1e-4
) -> torch.Tensor:
    """Per-voxel `fields.features` composited along world rays origins, dirs (n, 3) -> (n, 1 + C): foreground
    then label channels. Each sample's features are the trilinear average over its allocated corners only
    (divided by the interpolated ones channel), so empty neighbours do not fade labels near surfaces."""
    assert fields.features is not None
    grid, accel = fields.grid, fields.accel
    n = origins.shape[0]
    cube = plenoxel.grid_rays(grid, origins, dirs)
    o, d = cube.origins, cube.dirs
    ray_idx, _, u = plenoxel.march(accel, o, d)
    ids, w = plenoxel.lookup(accel, u)
    sigma = sampling.trilinear_gather(grid.density, ids.clamp_min(0), w).squeeze(-1).clamp_min(0.0)
    weights, _ = volrend.render_weights_packed(sigma, accel.step_cube, ray_idx, n)
    sel = weights > weight_thresh
    feats = sampling.trilinear_gather(fields.features, ids[sel].clamp_min(0), w[sel])
    feats = feats[:, 1:] / feats[:, :1].clamp_min(1e-6)
    return volrend.composite_packed(weights[sel], feats, ray_idx[sel], n)


def render_features(fields: SceneFields, cam: Camera, chunk: int) -> np.ndarray:
    """(H, W, 1 + C) composited features of a camera, in chunks of rays."""
    uv = camera.pixel_grid(cam.width, cam.height)
    dev = fields.grid.device
    parts = []
    for s in range(0, len(uv), chunk):
        o, d = camera.pixel_rays(cam.K, cam.c2w, uv[s : s + chunk])
        t = composite_features(fields, torch.from_numpy(o).float().to(dev), torch.from_numpy(d).float().to(dev))
        parts.append(t.cpu().numpy())
    return np.concatenate(parts).reshape(cam.height, cam.width, -1)


def render_view(fields: SceneFields, cam: Camera, what: tuple[str, ...], step: float, chunk: int) -> dict[str, np.ndarray]:
    """One view's outputs (those in `what`): rgb (H, W, 3) float32, depth (H, W) float32 metres, mask (H, W)
    bool, bg (H, W, 3) float32, label (H, W) int32 (-1 = ignore; only when the scene has labels)."""
    out = plenoxel.render_camera(fields.grid, cam.K, cam.c2w, cam.width, cam.height, step, chunk=chunk,
                                 accel=fields.accel)
    rgb, depth, opacity = (out[k].cpu().numpy() for k in ("rgb", "depth", "opacity"))
    res: dict[str, np.ndarray] = {"rgb": rgb}
    solid = opacity > 0.5
    res["depth"] = np.where(solid, depth / np.maximum(opacity, 1e-6), 0.0).astype(np.float32)
    res["mask"] = solid
    if fields.features is not None and ("mask" in what or "label" in what):
        feats = render_features(fields, cam, chunk)
        res["mask"] = feats[..., 0] > 0.5
        chans = feats[..., 1:]
        valid = solid if fields.logits else chans.sum(-1) > 0.5
        res["label"] = np.where(valid, np.argmax(chans, axis=-1), -1).astype(np.int32)
    if "bg" in what:
        if fields.bg_grid is not None:  # the background-class voxels in front of what lies behind the grid
            bg = plenoxel.render_camera(fields.bg_grid, cam.K, cam.c2w, cam.width, cam.height, step,
                                        chunk=chunk, accel=fields.bg_accel)
            res["bg"] = bg["rgb"].cpu().numpy()
        elif fields.grid.msi is not None:  # the surroundings alone: no voxel of the object
            res["bg"] = msi_image(fields.grid, cam, chunk)
        else:
            colour = fields.background.cpu().numpy().astype(np.float32)
            res["bg"] = np.broadcast_to(colour, rgb.shape).copy()
    return {k: v for k, v in res.items() if k in what}


@torch.no_grad()
def msi_image(grid: plenoxel.PlenoxelGrid, cam: Camera, chunk: int) -> np.ndarray:
    """(H, W, 3) float32 of the grid's MSI background alone, seen by a camera."""
    assert grid.msi is not None
    uv = camera.pixel_grid(cam.width, cam.height)
    parts = []
    for s in range(0, len(uv), chunk):
        o, d = camera.pixel_rays(cam.K, cam.c2w, uv[s : s + chunk])
        cube = plenoxel.grid_rays(grid, torch.from_numpy(o).float(), torch.from_numpy(d).float())
        parts.append(background_model.render(grid.msi, cube.origins, cube.dirs).cpu().numpy())
    return np.concatenate(parts).reshape(cam.height, cam.width, 3).astype(np.float32)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of uint8 / uint16 (H, W) or (H, W, C); float input in [0, 1] becomes uint8."""
    import imageio.v3 as iio

    if image.dtype.kind == "f":
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return bytes(iio.imwrite("<bytes>", image, extension=".png"))


def encode_view(outputs: dict[str, np.ndarray], depth_format: str) -> dict[str, bytes]:
    """Outputs of `render_view` -> member extension ("rgb.png", ...) -> file bytes."""
    files: dict[str, bytes] = {}
    if "rgb" in outputs:
        files["rgb.png"] = png_bytes(outputs["rgb"])
    if "depth" in outputs and depth_format in ("png", "both"):
        files["depth.png"] = png_bytes(depth_to_png(outputs["depth"]))
    if "depth" in outputs and depth_format in ("npy", "both"):
        buf = io.BytesIO()
        np.save(buf, outputs["depth"].astype(np.float32), allow_pickle=False)
        files["depth.npy"] = buf.getvalue()
    if "mask" in outputs:
        files["mask.png"] = png_bytes(outputs["mask"].astype(np.uint8) * 255)
    if "bg" in outputs:
        files["bg.png"] = png_bytes(outputs["bg"])
    if "label" in outputs:
        files["label.png"] = png_bytes(labels_to_png(outputs["label"]))
    return files
