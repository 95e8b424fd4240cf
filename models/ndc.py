"""Normalised device coordinates (NDC) for forward-facing captures, as NeRF and Plenoxels fit LLFF scenes.

A forward-facing capture sees a scene that reaches from a near plane to the horizon; a bounded cube either
misses the far part or spends its voxels on it evenly. NDC maps the frustum of one reference camera, from its
near plane z = n to infinity, onto the box [-1, 1]^3 by a projective map (so rays stay straight lines):

    u = sx * x / z,   v = sy * y / z,   w = 1 - 2 n / z        (x, y, z: reference camera, OpenCV axes)

with sx = 2 fx / W and sy = 2 fy / H, so u, v in [-1, 1] is the reference image and w grows from -1 at the near
plane to 1 at infinity; voxels are spread evenly in inverse depth. A fit in NDC holds its grid in that box (the
cube of `perfdata.models.plenoxel` is the NDC box, `world_from_grid` the identity on it): voxel coordinates are
NDC coordinates, not metric ones (`world_points` maps them back).

A world ray o + s d is first moved to where it crosses the near plane (s0), then mapped: its NDC origin o' and
direction d' follow NeRF's formulas, and the NDC ray parameter t' in [0, 1) runs from the near plane to infinity,
with s = s0 + n t' / (dz (1 - t')) (dz: the ray direction's reference-camera z component). Rays are marched
along d' / |d'|, so a cube distance t is t' = t / |d'|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perfdata.ndc import MIN_Z, NDC


@dataclass(frozen=True)
class NDCRays:
    """World rays in NDC: origins (n, 3) on the near plane, unit directions (n, 3), and what maps a cube
    distance t along them back to the world ray parameter: t' = t * t_scale, s = s0 + near t' / (dz (1 - t'))."""

    origins: torch.Tensor
    dirs: torch.Tensor
    t_scale: torch.Tensor
    s0: torch.Tensor
    dz: torch.Tensor
    near: float

    def world_parameter(self, t: torch.Tensor) -> torch.Tensor:
        """(n,) world ray parameter s (z-depth for directions with camera-z 1) of cube distances t (n,)."""
        tp = (t * self.t_scale).clamp(0.0, 1.0 - 1e-6)
        return self.s0 + self.near * tp / (self.dz * (1.0 - tp))



def rays(ndc: NDC, origins: torch.Tensor, dirs: torch.Tensor) -> NDCRays:
    """World rays origins, dirs (n, 3) -> NDC rays (module docstring). Rays must point away from the reference
    camera's image plane (dz > 0), as every ray of a forward-facing capture does; others are clamped to dz 1e-6."""
    w2c = torch.as_tensor(np.linalg.inv(ndc.c2w), dtype=origins.dtype, device=origins.device)
    o = origins @ w2c[:3, :3].T + w2c[:3, 3]
    d = dirs @ w2c[:3, :3].T
    dz = d[:, 2].clamp_min(MIN_Z)
    s0 = (ndc.near - o[:, 2]) / dz
    o = o + s0[:, None] * d
    oz = o[:, 2].clamp_min(MIN_Z)
    ox, oy = o[:, 0] / oz, o[:, 1] / oz
    o_ndc = torch.stack([ndc.sx * ox, ndc.sy * oy, 1.0 - 2.0 * ndc.near / oz], dim=-1)
    d_ndc = torch.stack([ndc.sx * (d[:, 0] / dz - ox), ndc.sy * (d[:, 1] / dz - oy), 2.0 * ndc.near / oz], dim=-1)
    norm = d_ndc.norm(dim=-1).clamp_min(1e-12)
    return NDCRays(o_ndc, d_ndc / norm[:, None], 1.0 / norm, s0, dz, ndc.near)


