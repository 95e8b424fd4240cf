"""Sparse-convolution 3D models with spconv (the `sparse` extra: `pip install -c constraints.txt -e ".[sparse]"`).

Inputs are the occupied cells only (grids.collate_sparse): coords (M, 4) int32 (batch, x, y, z) and feats
(M, C). Submanifold convolutions keep the active set, strided sparse convolutions coarsen it, and inverse
convolutions (sharing the strided conv's indice_key) bring features back onto the finer active set, so the
segmenter predicts exactly at the input cells. Same widths and depths as the dense models in models3d.py.

spconv 2.3 on a CPU-only torch build calls torch.cuda.current_stream() in its backward pass even for CPU
tensors (traveller59/spconv#366), which raises; `import_spconv` makes that call return stream 0 when torch has no
CUDA (the CPU path never uses the stream), and leaves spconv as it is on CUDA builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from perfdata.errors import ConfigError


def import_spconv() -> Any:
    """spconv.pytorch, usable on CPU (see the module doc); a ConfigError saying how to install it if absent."""
    try:
        import spconv.pytorch as spconv
        from spconv.pytorch import ops
    except ImportError:
        raise ConfigError('--backbone sparse needs spconv: pip install -c constraints.txt -e ".[sparse]"') from None
    if not torch.cuda.is_available() and not getattr(ops.get_current_stream, "_perfdata_cpu", False):
        def cpu_stream() -> int:
            return 0

        cpu_stream._perfdata_cpu = True  # type: ignore[attr-defined]
        ops.get_current_stream = cpu_stream
    return spconv


def sparse_input(batch: dict[str, Any], device: torch.device) -> Any:
    """A collate_sparse batch -> spconv.SparseConvTensor on `device`."""
    spconv = import_spconv()
    reso = int(batch["reso"])
    return spconv.SparseConvTensor(batch["feats"].to(device), batch["coords"].to(device).int(), [reso] * 3,
                                   int(batch["batch_size"]))


def _block(spconv: Any, c_in: int, c_out: int, key: str) -> Any:
    """Submanifold 3x3x3 conv + batch norm + ReLU on the active set."""
    return spconv.SparseSequential(spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=key),
                                   nn.BatchNorm1d(c_out), nn.ReLU())


def _down(spconv: Any, c_in: int, c_out: int, key: str) -> Any:
    """Strided (2) sparse 3x3x3 conv + batch norm + ReLU: coarsens the active set."""
    return spconv.SparseSequential(spconv.SparseConv3d(c_in, c_out, 3, stride=2, padding=1, bias=False,
                                                       indice_key=key), nn.BatchNorm1d(c_out), nn.ReLU())


def _pool(features: torch.Tensor, batch_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(M, C) features of active sites, (M,) batch index -> (B, 2C): per-sample mean and max."""
    c = features.shape[1]
    counts = torch.zeros(batch_size, device=features.device).index_add_(
        0, batch_idx, torch.ones_like(batch_idx, dtype=features.dtype))
    mean = torch.zeros(batch_size, c, device=features.device).index_add_(0, batch_idx, features)
    mean = mean / counts.clamp(min=1)[:, None]
    mx = torch.full((batch_size, c), float("-inf"), device=features.device)
    mx = mx.scatter_reduce(0, batch_idx[:, None].expand(-1, c), features, reduce="amax", include_self=True)
    return torch.cat([mean, torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))], dim=1)


class SparseClassifier(nn.Module):
    """Sparse grids -> class logits (B, n_classes): per width a strided sparse conv (none for the first) and a
    submanifold conv, then per-sample mean and max pooling over the active sites and a linear head."""

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        spconv = import_spconv()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            if i == 0:
                layers.append(_block(spconv, c, w, "s0a"))
            else:
                layers.append(_down(spconv, c, w, f"d{i}"))
            layers.append(_block(spconv, w, w, f"s{i}"))
            c = w
        self.features = spconv.SparseSequential(*layers)
        self.head = nn.Linear(2 * c, n_classes)

    def forward(self, x: Any) -> torch.Tensor:
        h = self.features(x)
        return self.head(_pool(h.features, h.indices[:, 0].long(), x.batch_size))


class SparseUNet(nn.Module):
    """Sparse grids -> logits (M, n_classes) at the M input cells, in the input's row order.

    Encoder per width: two submanifold convs, a strided sparse conv between levels; decoder: an inverse conv
    back to the finer active set, concatenation with that level's skip, two submanifold convs; a linear head.
    """

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        spconv = import_spconv()
        self.down, self.pools = nn.ModuleList(), nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            if i > 0:
                self.pools.append(_down(spconv, c, w, f"d{i}"))
                c = w
            self.down.append(spconv.SparseSequential(_block(spconv, c, w, f"s{i}"), _block(spconv, w, w, f"s{i}")))
            c = w
        self.unpools, self.up = nn.ModuleList(), nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            w = widths[i - 1]
            self.unpools.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(c, w, 3, bias=False, indice_key=f"d{i}"), nn.BatchNorm1d(w), nn.ReLU()))
            self.up.append(spconv.SparseSequential(_block(spconv, 2 * w, w, f"s{i - 1}"),
                                                   _block(spconv, w, w, f"s{i - 1}")))
            c = w
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: Any) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = self.pools[i - 1](x)
            x = level(x)
            skips.append(x)
        for unpool, level, skip in zip(self.unpools, self.up, reversed(skips[:-1]), strict=True):
            x = unpool(x)
            x = level(x.replace_feature(torch.cat([x.features, skip.features], dim=1)))
        return self.head(x.features)


