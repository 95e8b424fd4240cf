"""A generalizable radiance field (pixelNeRF / IBRNet-like): one network, trained across scenes, that predicts
density, colour and class logits of any point of an unseen scene from a few posed source views.

Pipeline for a point x (cube frame of the scene, [-1, 1]^3) seen along a unit direction d:
1. `ImageEncoder`: a small CNN turns each source image (V, 3, H, W) into features (V, C, H/2, W/2) from three
   scales (1/2, 1/4, 1/8) and the image's global average of the coarsest: context a 15-pixel receptive field
   lacks (a room's wall or a table, an object's shape class).
2. `project`: x is projected into every source view; the mask is 0 when x falls outside the image or behind
   the camera.
3. `sample_views`: bilinear features and colours at the projections; with the distance from the view's centre
   (cube units) they form a per-view input.
4. A per-view MLP, then `aggregate`: masked mean and variance over the views and the fraction of views that see
   x -- symmetric in the views, so the result does not depend on their order.
5. The decoder MLP (aggregate + positional encoding of x) gives density (direction-independent), class logits and
   a prior colour; colour is a softmax blend of the source colours (scored per view from its features and the
   angle between d and the view's ray), mixed with the prior colour by a learned gate. A point no view sees
   has a zero mask everywhere and gets the prior alone.
Compositing goes through `perfdata.models.volrend` (`render_rays`).

With classes, a 2D head (`source_logits`) also reads each source pixel's class from its encoder features; in
training it is supervised by the source views' own labels (dense: every pixel of every source, against the
few hundred rays of the 3D loss), which makes the features the views share carry the classes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from perfdata.models import sampling, volrend
from torch import nn

ARCH_VERSION = 3


@dataclass(frozen=True)
class FieldConfig:
    """Architecture of the generalizable field (saved with every checkpoint; a different one cannot load)."""

    image_size: tuple[int, int] = (64, 64)
    """(height, width) of the source images the model takes."""
    n_classes: int = 0
    """Class logits per point (0: no semantics)."""
    feat_channels: int = 32
    """Channels of the encoder's feature map."""
    view_hidden: int = 32
    """Width of the per-view MLP (and of the aggregated mean / variance)."""
    hidden: int = 64
    """Width of the decoder MLP."""
    semantic_hidden: int = 64
    """Width of the class-logit branch: its own MLP on the decoder's input, so labels do not compete with
    density and colour for the decoder's 64 features (0: logits from the decoder's last layer)."""
    label_head_2d: bool = True
    """With classes: the 2D head on the encoder's features (`GeneralizableField.source_logits`)."""
    n_freqs: int = 4
    """Frequencies of the positional encoding of the cube position."""
    sigma_scale: float = 20.0
    """density = sigma_scale * softplus(raw), per cube unit."""
    arch_version: int = ARCH_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldConfig:
        fixed = dict(data)
        fixed["image_size"] = tuple(int(v) for v in fixed.get("image_size", (64, 64)))
        return cls(**fixed)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Images (V, 3, H, W) in [0, 1] -> features (V, C, H/2, W/2): three scales, the coarse ones upsampled, and
    the global average of the coarsest (per image) broadcast to every pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True))
        self.down2 = nn.Sequential(nn.Conv2d(32, 48, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(16 + 32 + 48 + 48, channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3, f"images must be (V, 3, H, W), got {tuple(images.shape)}"
        f1 = self.stem(images * 2.0 - 1.0)
        f2 = self.down(f1)
        f3 = self.down2(f2)
        size = f1.shape[-2:]
        up = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in (f2, f3)]
        glob = f3.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *size)
        return self.out(torch.cat([f1, *up, glob], dim=1))


@dataclass(frozen=True)
class Sources:
    """Encoded source views of one scene, in its cube frame.

    Attributes:
        images: (V, 3, H, W) colours in [0, 1].
        features: (V, hv, h, w) encoder features through the feature part of the per-view MLP's first layer
            (with its bias): a linear map commutes with bilinear sampling (its weights sum to 1), so applying it
            once per pixel here, not once per sample and view, changes nothing but the cost.
        proj: (V, 3, 4) pixel projection of cube points: uvz = proj @ [x, 1], uv = uvz[:2] / uvz[2].
        centres: (V, 3) camera centres in the cube frame.
    """

    images: torch.Tensor
    features: torch.Tensor
    proj: torch.Tensor
    centres: torch.Tensor

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])


def project(points: torch.Tensor, proj: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions of cube points in every view, and whether each is in the image and in front.

    Args:
        points: (n, 3). proj: (V, 3, 4). size: (H, W).
    Returns:
        uv (V, n, 2) pixel coordinates (pixel centres at integer + 0.5), mask (V, n) float 0 / 1.
    """
    assert points.ndim == 2 and points.shape[1] == 3, f"points must be (n, 3), got {tuple(points.shape)}"
    uvz = torch.einsum("vij,nj->vni", proj[:, :, :3], points) + proj[:, None, :, 3]
    z = uvz[..., 2]
    uv = uvz[..., :2] / z.clamp_min(1e-6)[..., None]
    h, w = size
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h)
    return uv, inside.to(points.dtype)


def bilinear(maps: torch.Tensor, uv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of per-view maps (V, C, h, w) at pixel positions uv (V, n, 2) of an (H, W) image -> (V, n, C)."""
    h, w = size
    grid = torch.stack([uv[..., 0] / w * 2.0 - 1.0, uv[..., 1] / h * 2.0 - 1.0], dim=-1)[:, None]
    out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1)


def aggregate(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Order-independent pooling over views: masked mean, masked variance and the visible fraction.

    Args:
        values: (V, n, D). mask: (V, n) 0 / 1.
    Returns:
        (n, 2 D + 1); a point no view sees gets zeros.
    """
    weight = mask[..., None]
    count = weight.sum(0)
    inv = 1.0 / count.clamp_min(1.0)
    masked = values * weight  # one pass over the (V, n, D) values; the variance is E[x^2] - E[x]^2 per point
    mean = masked.sum(0) * inv
    var = ((masked * values).sum(0) * inv - mean * mean).clamp_min(0.0)
    return torch.cat([mean, var, count / values.shape[0]], dim=-1)


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(n, 3) -> (n, 3 + 6 n_freqs): x, sin and cos of 2^k pi x."""
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    ang = x[..., None] * freqs
    return torch.cat([x, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)


class GeneralizableField(nn.Module):
    """The shared network (see module docstring). `encode` once per scene, then query points."""

    def __init__(self, cfg: FieldConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, hv, hd = cfg.feat_channels, cfg.view_hidden, cfg.hidden
        self.encoder = ImageEncoder(c)
        self.view_mlp = mlp([c + 3 + 1, hv, hv])
        self.trunk = mlp([2 * hv + 1 + 3 + 6 * cfg.n_freqs, hd, hd])
        k = cfg.n_classes
        in_dec = 2 * hv + 1 + 3 + 6 * cfg.n_freqs
        self.semantic = mlp([in_dec, cfg.semantic_hidden, k]) if cfg.semantic_hidden and k else None
        self.heads = nn.Linear(hd, 1 + (0 if self.semantic is not None else k) + 3 + 1)
        self.score = mlp([hv + 4, 16, 1])
        self.head_2d = (nn.Sequential(nn.ReLU(), nn.Conv2d(hv, k, 1)) if cfg.label_head_2d and k else None)

    @property
    def view_first(self) -> nn.Linear:
        """The per-view MLP's first layer (applied in parts: features once per view, colour and distance per sample)."""
        first = self.view_mlp[0]
        assert isinstance(first, nn.Linear)
        return first

    def encode(self, images: torch.Tensor, proj: torch.Tensor, centres: torch.Tensor) -> Sources:
        """Sources from images (V, 3, H, W), projections (V, 3, 4) and centres (V, 3) in the cube frame."""
        assert tuple(images.shape[-2:]) == tuple(self.cfg.image_size), (
            f"images are {tuple(images.shape[-2:])}, the model takes {tuple(self.cfg.image_size)}")
        first = self.view_first
        w_feat = first.weight[:, : self.cfg.feat_channels]
        feats = F.conv2d(self.encoder(images), w_feat[:, :, None, None], first.bias)
        return Sources(images, feats, proj, centres)

    def source_logits(self, sources: Sources) -> torch.Tensor:
        """(V, n_classes, H, W) class logits of every source pixel from its encoder features (the 2D head;
        bilinear up to the image size)."""
        assert self.head_2d is not None, "the model has no 2D label head"
        return F.interpolate(self.head_2d(sources.features), size=tuple(self.cfg.image_size), mode="bilinear",
                             align_corners=False)

    def point_features(self, sources: Sources, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Direction-independent part at points (n, 3): sigma (n,), logits (n, n_classes), and what the colour
        needs (per-view hidden (V, n, hv), colours (V, n, 3), mask (V, n), prior (n, 3), gate (n,))."""
        size = self.cfg.image_size
        uv, mask = project(points, sources.proj, size)
        rgb = bilinear(sources.images, uv, size)
        dist = (points[None] - sources.centres[:, None]).norm(dim=-1, keepdim=True)
        w_rgb, w_dist = self.view_first.weight[:, self.cfg.feat_channels :].split([3, 1], dim=1)
        first = torch.baddbmm(bilinear(sources.features, uv, size), rgb, w_rgb.T.expand(rgb.shape[0], -1, -1))
        h_view = self.view_mlp[1:](first + dist * w_dist[:, 0])
        dec_in = torch.cat([aggregate(h_view, mask), positional_encoding(points, self.cfg.n_freqs)], -1)
        out = self.heads(self.trunk(dec_in))
        if self.semantic is not None:
            logits, k = self.semantic(dec_in), 0
        else:
            k = self.cfg.n_classes
            logits = out[:, 1 : 1 + k]
        return {
            "sigma": self.cfg.sigma_scale * F.softplus(out[:, 0] - 2.0), "logits": logits,
            "prior": torch.sigmoid(out[:, 1 + k : 4 + k]), "gate": torch.sigmoid(out[:, 4 + k]),
            "h_view": h_view, "rgb_view": rgb, "mask": mask,
        }

    def colour(self, sources: Sources, points: torch.Tensor, dirs: torch.Tensor, pf: dict[str, torch.Tensor]) -> torch.Tensor:
        """View-dependent colour (n, 3) at points (n, 3) seen along unit dirs (n, 3), from `point_features`."""
        to_pt = points[None] - sources.centres[:, None]
        src_dir = to_pt / to_pt.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        diff = dirs[None] - src_dir
        dot = (dirs[None] * src_dir).sum(-1, keepdim=True)
        score = self.score(torch.cat([pf["h_view"], diff, dot], dim=-1))[..., 0]
        mask = pf["mask"]
        score = score.masked_fill(mask <= 0, -1e4)
        w = torch.softmax(score, dim=0) * mask
        blend = (w[..., None] * pf["rgb_view"]).sum(0)
        gate = pf["gate"] * (mask.sum(0) > 0).to(points.dtype)
        return gate[:, None] * blend + (1.0 - gate[:, None]) * pf["prior"]

    def forward(self, sources: Sources, points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        """sigma (n,), rgb (n, 3), logits (n, n_classes) at points (n, 3) along unit dirs (n, 3)."""
        pf = self.point_features(sources, points)
        return {"sigma": pf["sigma"], "rgb": self.colour(sources, points, dirs, pf), "logits": pf["logits"]}


def stratified_t(t_near: torch.Tensor, t_far: torch.Tensor, n_samples: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample distances between t_near and t_far (n_rays,): one per equal bin, jittered when a generator is
    given (else bin centres). Returns t (n_rays, n_samples) and deltas (n_rays, 1); rays that miss get delta 0."""
    span = (t_far - t_near).clamp_min(0.0)
    if generator is None:
        u = torch.full((t_near.shape[0], n_samples), 0.5, device=t_near.device, dtype=t_near.dtype)
    else:
        u = torch.rand((t_near.shape[0], n_samples), generator=generator, device=t_near.device, dtype=t_near.dtype)
    bins = torch.arange(n_samples, device=t_near.device, dtype=t_near.dtype)
    t = t_near[:, None] + (bins[None] + u) / n_samples * span[:, None]
    return t, (span / n_samples)[:, None]


def render_rays(model: GeneralizableField, sources: Sources, origins: torch.Tensor, dirs: torch.Tensor,
                z_scale: torch.Tensor, background: torch.Tensor, n_samples: int,
                generator: torch.Generator | None = None,
                background_classes: torch.Tensor | None = None,
                detach_label_weights: bool = False) -> dict[str, torch.Tensor]:
    """Composite cube rays through the field.

    Args:
        origins: (n_rays, 3) cube origins. dirs: (n_rays, 3) unit cube directions. z_scale: (n_rays,) cube
            distance -> z-depth factor (`plenoxel.rays_to_cube`). background: (3,) colour behind the cube.
        n_samples: samples per ray between its cube entry and exit. generator: jitters them (training).
        background_classes: (b,) class ids counted as background; when given, also composite the foreground
            probability and the background-only colour (density scaled by each sample's background probability).
        detach_label_weights: composite the logits with weights that carry no gradient (training: a label loss
            then cannot move density; geometry comes from colour and depth, as in the semantic field).
    Returns:
        rgb (n_rays, 3), depth (n_rays,) z-depth (opacity-weighted, world units), opacity (n_rays,),
        logits (n_rays, n_classes) composited, weights (n_rays, n_samples); with background_classes also
        foreground (n_rays,) and rgb_bg (n_rays, 3).
    """
    assert origins.shape == dirs.shape and origins.ndim == 2, "rays must be (n_rays, 3)"
    n_rays = origins.shape[0]
    t_near, t_far = sampling.ray_box_intersect(origins, dirs)
    t, deltas = stratified_t(t_near, t_far, n_samples, generator)
    points = (origins[:, None] + t[..., None] * dirs[:, None]).reshape(-1, 3)
    ray_dirs = dirs[:, None].expand(-1, n_samples, -1).reshape(-1, 3)
    out = model(sources, points, ray_dirs)
    sigma = out["sigma"].reshape(n_rays, n_samples)
    weights, _ = volrend.render_weights(sigma, deltas)
    opacity = volrend.accumulate_opacity(weights)
    rgb = volrend.composite(weights, out["rgb"].reshape(n_rays, n_samples, 3))
    label_w = weights.detach() if detach_label_weights else weights
    logits = volrend.composite(label_w, out["logits"].reshape(n_rays, n_samples, -1))
    res = {"rgb": volrend.add_background(rgb, opacity, background), "depth": volrend.composite(weights, t) * z_scale,
           "opacity": opacity, "logits": logits, "weights": weights}
    if background_classes is not None:
        p_bg = torch.softmax(out["logits"], dim=-1)[:, background_classes].sum(-1).reshape(n_rays, n_samples)
        res["foreground"] = volrend.composite(weights, 1.0 - p_bg)
        w_bg, _ = volrend.render_weights(sigma * p_bg, deltas)
        rgb_bg = volrend.composite(w_bg, out["rgb"].reshape(n_rays, n_samples, 3))
        res["rgb_bg"] = volrend.add_background(rgb_bg, volrend.accumulate_opacity(w_bg), background)
    return res


def fibonacci_directions(n: int) -> torch.Tensor:
    """(n, 3) unit directions spread evenly over the sphere."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = (1.0 - z * z).clamp_min(0.0).sqrt()
    phi = math.pi * (1.0 + 5.0**0.5) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1).float()


def fit_sh(basis: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Least-squares SH coefficients of colours seen in several directions.

    Args:
        basis: (m, 9) SH basis at the m directions (`sh.eval_sh_basis`).
        colours: (n, m, 3) colour of each of n points in each direction.
    Returns:
        (n, 27) coefficients [R0..R8, G0..G8, B0..B8] minimising sum_m |sum_k c_k Y_k(d_m) + 0.5 - colour|^2.
    """
    assert basis.ndim == 2 and colours.shape[1] == basis.shape[0], "colours must be (n, m, 3) for (m, 9) basis"
    pinv = torch.linalg.pinv(basis.double()).to(colours.dtype)  # (9, m)
    coeffs = torch.einsum("km,nmc->nck", pinv, colours - 0.5)
    return coeffs.reshape(colours.shape[0], 3 * basis.shape[1])
