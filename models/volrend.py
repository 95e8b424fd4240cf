"""Alpha compositing, shared by every field (Plenoxel, semantic, generalizable).

Two layouts of the samples along rays:
- dense: `(n_rays, n_samples)` tensors, every ray the same number of samples (the slow, plain reference);
- packed: `(n,)` tensors of only the samples that matter, with `ray_indices (n,)` naming each sample's ray;
  samples of one ray are contiguous and in front-to-back order (the empty-space-skipping path).
Both compute, for optical thickness tau_i = sigma_i * delta_i:
    alpha_i = 1 - exp(-tau_i),  T_i = exp(-sum_{j<i} tau_j),  w_i = T_i * alpha_i,
and any per-sample feature (colour, z-depth, semantic logits) composites as sum_i w_i * f_i.
"""

from __future__ import annotations

import torch


def render_weights(sigmas: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights of dense samples.

    Args:
        sigmas: (n_rays, n_samples) non-negative densities.
        deltas: (n_rays, n_samples) or broadcastable: sample lengths along the ray.
    Returns:
        weights (n_rays, n_samples) and transmittance (n_rays, n_samples) in front of each sample.
    """
    assert sigmas.ndim == 2, f"sigmas must be (n_rays, n_samples), got {tuple(sigmas.shape)}"
    tau = sigmas * deltas
    excl = torch.cumsum(tau, dim=-1) - tau
    trans = torch.exp(-excl)
    weights = trans * (1.0 - torch.exp(-tau))
    return weights, trans


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * f_i over dense samples.

    Args:
        weights: (n_rays, n_samples).
        values: (n_rays, n_samples, C) features or (n_rays, n_samples) scalars.
    Returns:
        (n_rays, C) or (n_rays,).
    """
    assert values.shape[:2] == weights.shape, f"values {tuple(values.shape)} do not match weights {tuple(weights.shape)}"
    if values.ndim == 2:
        return (weights * values).sum(-1)
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1)


def ray_starts(ray_indices: torch.Tensor, n_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First packed position and sample count of every ray.

    Args:
        ray_indices: (n,) int64 ray of each sample, non-decreasing.
    Returns:
        starts (n_rays,) and counts (n_rays,) int64 (a ray without samples has count 0).
    """
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return torch.cumsum(counts, 0) - counts, counts


def exclusive_cumsum_packed(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive prefix sums of packed samples (n,) (non-decreasing ray_indices), in float64: a global
    cumulative sum minus its value at the ray's first sample, so long batches lose no precision."""
    v = values.double()
    excl_all = torch.cumsum(v, 0) - v
    starts, _ = ray_starts(ray_indices, n_rays)
    return excl_all - excl_all[starts[ray_indices]]


def render_weights_packed(
    sigmas: torch.Tensor, deltas: torch.Tensor | float, ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights of packed samples (same maths as `render_weights`).

    The per-ray exclusive prefix sum is a global cumulative sum minus its value at the ray's first sample,
    taken in float64 so long batches lose no precision.

    Args:
        sigmas: (n,) non-negative densities. deltas: (n,) or scalar sample lengths.
        ray_indices: (n,) int64, non-decreasing (samples of a ray contiguous, front to back).
        n_rays: number of rays.
    Returns:
        weights (n,) and transmittance (n,) in front of each sample.
    """
    assert sigmas.ndim == 1 and ray_indices.shape == sigmas.shape, "sigmas and ray_indices must be (n,)"
    tau = sigmas * deltas
    if tau.numel() == 0:
        return tau, tau
    trans = torch.exp(-exclusive_cumsum_packed(tau, ray_indices, n_rays).to(tau.dtype))
    weights = trans * (1.0 - torch.exp(-tau))
    return weights, trans


def composite_packed(weights: torch.Tensor, values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """sum_i w_i * f_i per ray over packed samples.

    Args:
        weights: (n,). values: (n, C) or (n,). ray_indices: (n,) int64. n_rays: number of rays.
    Returns:
        (n_rays, C) or (n_rays,); rays without samples get 0.
    """
    assert values.shape[0] == weights.shape[0] == ray_indices.shape[0], "weights, values, ray_indices disagree"
    contrib = weights * values if values.ndim == 1 else weights.unsqueeze(-1) * values
    out = torch.zeros((n_rays, *values.shape[1:]), dtype=contrib.dtype, device=contrib.device)
    return out.index_add(0, ray_indices, contrib)


def distortion_packed(weights: torch.Tensor, t: torch.Tensor, step: float, ray_indices: torch.Tensor,
                      n_rays: int) -> torch.Tensor:
    """mip-NeRF 360's distortion loss per ray over packed samples of equal length `step` at positions t:
    sum_ij w_i w_j |t_i - t_j| + (step / 3) sum_i w_i^2, the first term as 2 sum_i w_i (t_i W_<i - (w t)_<i)
    with the per-ray exclusive prefix sums W_<i of w and (w t)_<i of w t (`exclusive_cumsum_packed`).

    Args:
        weights: (n,). t: (n,) non-decreasing within each ray. ray_indices: (n,) int64, non-decreasing.
    Returns:
        (n_rays,); rays without samples get 0.
    """
    if weights.numel() == 0:
        return torch.zeros(n_rays, dtype=weights.dtype, device=weights.device)
    w = weights.double()
    w_before = exclusive_cumsum_packed(w, ray_indices, n_rays)
    wt_before = exclusive_cumsum_packed(w * t.double(), ray_indices, n_rays)
    per_sample = 2.0 * w * (t.double() * w_before - wt_before) + w * w * (step / 3.0)
    out = torch.zeros(n_rays, dtype=torch.float64, device=weights.device)
    return out.index_add(0, ray_indices, per_sample).to(weights.dtype)


def accumulate_opacity(weights: torch.Tensor, ray_indices: torch.Tensor | None = None, n_rays: int = 0) -> torch.Tensor:
    """Opacity 1 - T_final = sum_i w_i: dense (n_rays, n_samples) -> (n_rays,), or packed (n,) with ray_indices."""
    if ray_indices is None:
        return weights.sum(-1)
    return composite_packed(weights, torch.ones_like(weights), ray_indices, n_rays)


def add_background(rgb: torch.Tensor, opacity: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Composite over a background: rgb (n_rays, 3) + (1 - opacity (n_rays,)) * background (3,) or (n_rays, 3)."""
    return rgb + (1.0 - opacity).unsqueeze(-1) * background
