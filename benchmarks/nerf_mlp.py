"""The reference the fit benchmark compares against: a plain NeRF MLP (Mildenhall et al. 2020, shrunk for a
CPU) -- positional encoding, a small ReLU MLP, stratified samples, no hierarchical sampling -- trained on the
same cube rays as the Plenoxel grid, with the same compositing (`perfdata.models.volrend`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from perfdata.models import sampling, volrend
from torch import nn


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(n, d) -> (n, d * (1 + 2 n_freqs)): x, sin(2^k pi x), cos(2^k pi x)."""
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    xf = x[..., None] * freqs
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class NerfMLP(nn.Module):
    """Density from encoded position; colour from features and the encoded view direction."""

    def __init__(self, width: int = 128, depth: int = 4, pos_freqs: int = 10, dir_freqs: int = 4) -> None:
        super().__init__()
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        layers: list[nn.Module] = []
        d_in = 3 * (1 + 2 * pos_freqs)
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.sigma = nn.Linear(width, 1)
        self.colour = nn.Sequential(
            nn.Linear(width + 3 * (1 + 2 * dir_freqs), width // 2), nn.ReLU(), nn.Linear(width // 2, 3), nn.Sigmoid()
        )

    def forward(self, pts: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pts (n, 3) cube coordinates, dirs (n, 3) unit -> sigma (n,), rgb (n, 3)."""
        h = self.trunk(positional_encoding(pts, self.pos_freqs))
        sigma = torch.relu(self.sigma(h).squeeze(-1))
        rgb = self.colour(torch.cat([h, positional_encoding(dirs, self.dir_freqs)], -1))
        return sigma, rgb


def render_nerf(model: NerfMLP, origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor,
                n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified samples between the rays' entry and exit of the cube -> rgb (n_rays, 3)."""
    near, far = sampling.ray_box_intersect(origins, dirs)
    far = torch.maximum(far, near + 1e-4)
    n = origins.shape[0]
    edges = torch.linspace(0, 1, n_samples + 1, device=origins.device)[:-1]
    jitter = (torch.rand(n, n_samples, generator=generator, device=origins.device) if generator is not None
              else torch.full((n, n_samples), 0.5, device=origins.device))
    t = near[:, None] + (far - near)[:, None] * (edges[None] + jitter / n_samples)
    pts = origins[:, None] + t[..., None] * dirs[:, None]
    sigma, rgb = model(pts.reshape(-1, 3), dirs[:, None].expand(-1, n_samples, -1).reshape(-1, 3))
    deltas = ((far - near) / n_samples)[:, None].expand(-1, n_samples)
    weights, _ = volrend.render_weights(sigma.view(n, n_samples), deltas)
    colour = volrend.composite(weights, rgb.view(n, n_samples, 3))
    return volrend.add_background(colour, volrend.accumulate_opacity(weights), background)


@dataclass(frozen=True)
class NerfRun:
    curve: tuple[tuple[float, float], ...]
    steps: int
    rays_per_second: float


def train_nerf(
    origins: torch.Tensor, dirs: torch.Tensor, rgb: torch.Tensor, background: torch.Tensor,
    evaluate: Callable[[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], float],
    eval_at: Sequence[float], batch_rays: int = 1024, n_samples: int = 64, lr: float = 5e-4, seed: int = 0,
) -> NerfRun:
    """Train for max(eval_at) seconds (evaluation excluded); `evaluate(render)` gets a ray renderer
    (cube origins, unit dirs) -> rgb and returns held-out PSNR at each mark."""
    torch.manual_seed(seed)
    model = NerfMLP().to(origins.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=origins.device).manual_seed(seed)
    marks, curve, steps, excluded = list(eval_at), [], 0, 0.0
    start = time.perf_counter()

    @torch.no_grad()
    def render(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return torch.cat([render_nerf(model, o[i:i + 4096], d[i:i + 4096], background, n_samples)
                          for i in range(0, len(o), 4096)])

    while marks:
        idx = torch.randint(len(origins), (batch_rays,), generator=gen, device=origins.device)
        pred = render_nerf(model, origins[idx], dirs[idx], background, n_samples, gen)
        loss = torch.mean((pred - rgb[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        now = time.perf_counter() - start - excluded
        paused = time.perf_counter()
        while marks and now >= marks[0]:
            model.eval()
            curve.append((marks.pop(0), evaluate(render)))
            model.train()
        excluded += time.perf_counter() - paused
    train_seconds = time.perf_counter() - start - excluded
    return NerfRun(tuple(curve), steps, steps * batch_rays / max(train_seconds, 1e-9))
