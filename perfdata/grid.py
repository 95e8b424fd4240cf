"""`SparseGrid`: the exchange format of a fitted voxel field between fit, export, render and import.

Sparse rows, as PeRFception's checkpoints and the zarr store keep them: `coords` are voxel indices on a grid of
`reso` (voxel i of a resolution-R axis sits at (2i+1)/R - 1 in the normalised cube), `density` is raw sigma
(used through ReLU), `sh` holds SH coefficients laid out [R0..R8, G0..G8, B0..B8] (degree 2), and colour is
clamp(sum_k c_k Y_k(d) + 0.5, 0, 1). Units: density is sigma per unit length of the normalised cube (so
optical thickness = sigma * distance in cube units), and the SH direction d is the viewing direction expressed in
the cube frame (world directions rotated by the inverse of world_from_grid's rotation). Fit folders store it as
`grid.npz` (no pickle).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfdata.atomic import atomic_path
from perfdata.errors import FormatVersionError, InputError
from perfdata.ndc import NDC, world_points

GRID_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SparseGrid:
    """A sparse voxel field.

    Attributes:
        coords: (n, 3) int32 voxel indices (x, y, z), each in [0, reso).
        density: (n,) float32 raw density.
        sh: (n, 3 * (sh_degree + 1) ** 2) float32 SH coefficients.
        reso: (3,) grid resolution.
        world_from_grid: (4, 4) similarity from the normalised cube to the metric world frame.
        sh_degree: SH degree (2: 27 coefficients).
        logits: optional (n, n_classes) float32 semantic logits.
        labels: optional (n,) int16 class ids, -1 = ignore.
        background: optional (3,) float32 constant background colour the fit used or learned (with `msi`:
            the colour behind its outermost layer).
        msi: optional (2H, H, L, 4) float32 multi-sphere background outside the cube, raw values in svox2's
            layout (`perfdata.models.background`).
        ndc: optional (19,) float64 NDC space of a forward-facing fit (`perfdata.models.ndc.NDC.to_array`):
            the cube is that NDC box, so coords are NDC coordinates and `world_centers` maps through it.
    """

    coords: np.ndarray
    density: np.ndarray
    sh: np.ndarray
    reso: tuple[int, int, int]
    world_from_grid: np.ndarray
    sh_degree: int = 2
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    background: np.ndarray | None = None
    msi: np.ndarray | None = None
    ndc: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.coords)
        n_sh = 3 * (self.sh_degree + 1) ** 2
        assert self.coords.shape == (n, 3), f"coords must be (n, 3), got {self.coords.shape}"
        assert self.density.shape == (n,), f"density must be ({n},), got {self.density.shape}"
        assert self.sh.shape == (n, n_sh), f"sh must be ({n}, {n_sh}), got {self.sh.shape}"
        assert self.logits is None or self.logits.shape[0] == n, "logits must have one row per voxel"
        assert self.labels is None or self.labels.shape == (n,), "labels must be (n,)"
        assert self.msi is None or (self.msi.ndim == 4 and self.msi.shape[0] == 2 * self.msi.shape[1]
                                    and self.msi.shape[3] == 4), "msi must be (2H, H, L, 4)"
        assert self.ndc is None or np.shape(self.ndc) == (19,), "ndc must be (19,)"

    @property
    def n_voxels(self) -> int:
        return len(self.coords)

    def linear_index(self) -> np.ndarray:
        """(n,) int64 x * Ry * Rz + y * Rz + z (PeRFception's `links_idx`)."""
        c = self.coords.astype(np.int64)
        return (c[:, 0] * self.reso[1] + c[:, 1]) * self.reso[2] + c[:, 2]

    def sorted(self) -> SparseGrid:
        """The same grid with rows sorted by linear index."""
        order = np.argsort(self.linear_index(), kind="stable")
        return self.take(order)

    def take(self, rows: np.ndarray) -> SparseGrid:
        """The grid restricted to (and ordered by) `rows` (indices or a boolean mask)."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return dataclasses.replace(
            self, coords=self.coords[rows], density=self.density[rows], sh=self.sh[rows],
            logits=pick(self.logits), labels=pick(self.labels),
        )

    def centers(self) -> np.ndarray:
        """(n, 3) voxel centres in the normalised cube: (2i + 1) / R - 1."""
        return (2.0 * self.coords + 1.0) / np.asarray(self.reso, dtype=np.float64) - 1.0

    def world_centers(self) -> np.ndarray:
        """(n, 3) voxel centres in the metric world frame (through the NDC space when the grid has one)."""
        T = self.world_from_grid
        points = self.centers() @ T[:3, :3].T + T[:3, 3]
        if self.ndc is None:
            return points
        return world_points(NDC.from_array(self.ndc), points)

    def save(self, path: str | Path) -> None:
        """Write as an uncompressed npz (atomic; no pickled objects)."""
        arrays: dict[str, Any] = {
            "format_version": np.array(GRID_FORMAT_VERSION),
            "coords": self.coords.astype(np.int32),
            "density": self.density.astype(np.float32),
            "sh": self.sh.astype(np.float32),
            "reso": np.asarray(self.reso, dtype=np.int64),
            "world_from_grid": np.asarray(self.world_from_grid, dtype=np.float64),
            "sh_degree": np.array(self.sh_degree),
        }
        for name in ("logits", "labels", "background", "msi", "ndc"):
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> SparseGrid:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:
            raise InputError(path, f"not a readable grid file ({exc})") from None
        version = int(data.get("format_version", -1))
        if version != GRID_FORMAT_VERSION:
            raise FormatVersionError(path, version, GRID_FORMAT_VERSION)
        try:
            return cls(
                coords=data["coords"].astype(np.int32),
                density=data["density"].astype(np.float32),
                sh=data["sh"].astype(np.float32),
                reso=tuple(int(r) for r in data["reso"]),  # type: ignore[arg-type]
                world_from_grid=data["world_from_grid"],
                sh_degree=int(data["sh_degree"]),
                logits=data.get("logits"),
                labels=data.get("labels"),
                background=data.get("background"),
                msi=None if data.get("msi") is None else data["msi"].astype(np.float32),
                ndc=None if data.get("ndc") is None else data["ndc"].astype(np.float64),
            )
        except (KeyError, AssertionError) as exc:
            raise InputError(path, f"grid file is incomplete or inconsistent ({exc})") from None
