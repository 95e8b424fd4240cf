"""The multi-sphere image (MSI) background of Plenoxels / PeRFception: what a capture sees outside the cube.

The foreground grid covers the normalised cube [-1, 1]^3; an object captured with its surroundings (CO3D, a
phone video) or a forward-facing scene (LLFF) also sees things far outside it. The MSI holds them: `L`
concentric spheres around the cube's centre (cube frame, unit = the cube's half-size), layer k at inverse radius
1 - (k + 0.5) / L (radii ~1.03 ... 2L: dense near the cube, sparse far away), each an equirectangular texture
of (2H, H) texels (longitude x latitude) holding 4 raw values: the colour as an SH DC coefficient
(colour = max(raw * SH_C0 + 0.5, 0)) and a density per cube unit (through ReLU). This is svox2's layout
(`background_data` (2H * H, L, 4) with dense `background_links` (2H, H)), so PeRFception's checkpoints import
as they are (`perfdata.store.background`).

Rendering a ray (cube frame, unit direction): it meets layer k at its far intersection t_k, and the layer counts
when its radius is at least max(1, the ray's distance to the centre) -- the ray then crosses that sphere on its
way out. Layers composite inner to outer with `volrend.render_weights`, each over the stretch from the previous
layer's hit (the first from the hit of the innermost counted radius): alpha_k = 1 - exp(-relu(sigma_k) * dt_k).
Light left behind the outermost layer takes the constant colour `behind`. Texels are read bilinearly (longitude
wraps, latitude clamps) at the hit's direction from the centre. The foreground composites in front:
rgb = rgb_fg + (1 - opacity_fg) * msi_colour(ray) (`volrend.add_background` with a per-ray colour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from perfdata.models import volrend
from perfdata.models.sh import C0 as SH_C0


@dataclass
class MSI:
    """Multi-sphere background (tensors on one device).

    Attributes:
        data: (2H, H, L, 4) float32 raw [colour DC coefficient x 3, density], longitude x latitude x layer.
        behind: (3,) float32 colour behind the outermost layer.
    """

    data: torch.Tensor
    behind: torch.Tensor

    def __post_init__(self) -> None:
        w, h, n, c = self.data.shape
        assert w == 2 * h and h >= 2 and n >= 1 and c == 4, f"MSI data must be (2H, H, L, 4), got {tuple(self.data.shape)}"

    def to_numpy(self) -> np.ndarray:
        return self.data.detach().cpu().numpy().astype(np.float32)


def layer_radii(n_layers: int) -> np.ndarray:
    """(L,) float64 radius of each layer (cube units): 1 / (1 - (k + 0.5) / L)."""
    k = np.arange(n_layers, dtype=np.float64)
    return 1.0 / (1.0 - (k + 0.5) / n_layers)


def far_hits(origins: torch.Tensor, dirs: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where cube rays (origins (n, 3), unit dirs (n, 3)) leave each layer's sphere.

    Returns:
        t (n, L) ray distance of the far intersection with every layer, and dt (n, L) the stretch each counted
        layer composites over (0 for layers the ray does not cross on its way out).
    """
    radii = torch.as_tensor(layer_radii(n_layers), dtype=origins.dtype, device=origins.device)
    b = (origins * dirs).sum(-1, keepdim=True)
    oo = (origins * origins).sum(-1, keepdim=True)
    line = torch.linalg.cross(origins, dirs, dim=-1).norm(dim=-1, keepdim=True)  # distance of the line to 0
    inner = line.clamp_min(1.0)
    disc = b * b - oo + radii * radii
    t = -b + torch.sqrt(disc.clamp_min(0.0))
    counted = (radii >= inner) & (t > 0)
    t0 = (-b + torch.sqrt((b * b - oo + inner * inner).clamp_min(0.0))).clamp_min(0.0)
    t_eff = torch.cummax(torch.where(counted, t, t0), dim=1).values
    prev = torch.cat([t0, t_eff[:, :-1]], dim=1)
    return t, (t_eff - prev).clamp_min(0.0) * counted


def equirect_coords(points: torch.Tensor, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texel coordinates (u longitude in [0, 2H), v latitude in [0, H]) of the directions of points (..., 3)
    from the centre, as svox2 lays them out: lon = atan2(x, z), lat = asin(y); texel i sits at coordinate i."""
    unit = points / points.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lat = torch.asin(unit[..., 1].clamp(-1.0, 1.0))
    lon = torch.atan2(unit[..., 0], unit[..., 2])
    u = (2 * height) * (0.5 + lon / (2 * math.pi))
    v = height * (0.5 - lat / math.pi)
    return u, v


def sample_layers(data: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear read of every layer: data (2H, H, L, C), u, v (n, L) texel coordinates -> (n, L, C)
    (longitude wraps, latitude clamps; differentiable in data). One `grid_sample` over the L layers, on the
    texture padded by one wrapped longitude column at each side."""
    w, h, n_layers, c = data.shape
    tex = data.permute(2, 3, 1, 0)  # (L, C, H lat, 2H lon)
    tex = torch.cat([tex[..., -1:], tex, tex[..., :1]], dim=-1)  # padded column j holds longitude j - 1
    x = (torch.remainder(u, w) + 1.0) / (w + 1) * 2.0 - 1.0
    y = v.clamp(0.0, h - 1.0) / (h - 1) * 2.0 - 1.0
    grid = torch.stack([x, y], dim=-1).transpose(0, 1).unsqueeze(2)  # (L, n, 1, 2)
    out = torch.nn.functional.grid_sample(tex, grid.to(tex.dtype), mode="bilinear", padding_mode="border",
                                          align_corners=True)  # (L, C, n, 1)
    return out[..., 0].permute(2, 0, 1)


def render(msi: MSI, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """(n, 3) colour of the background along cube rays (origins (n, 3), unit dirs (n, 3)); differentiable in
    msi.data and msi.behind."""
    data = msi.data
    n_layers = int(data.shape[2])
    t, dt = far_hits(origins, dirs, n_layers)
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    u, v = equirect_coords(points, int(data.shape[1]))
    raw = sample_layers(data, u, v)
    weights, _ = volrend.render_weights(torch.relu(raw[..., 3]), dt)
    colour = (raw[..., :3] * SH_C0 + 0.5).clamp_min(0.0)
    rgb = volrend.composite(weights, colour)
    left = 1.0 - weights.sum(-1, keepdim=True)
    return (rgb + left * msi.behind.to(rgb)).clamp(0.0, 1.0)


def tv_loss(data: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring texels (longitude wrapping, latitude), per channel summed."""
    du = data - torch.roll(data, 1, dims=0)
    dv = data[:, 1:] - data[:, :-1]
    return (du * du).sum(-1).mean() + (dv * dv).sum(-1).mean()
