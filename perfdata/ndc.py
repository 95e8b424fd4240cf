"""The NDC space of a forward-facing fit (numpy; the ray map for rendering is `perfdata.models.ndc`).

NDC maps the frustum of one reference camera, from its near plane z = n to infinity, onto the box [-1, 1]^3:
u = sx * x / z, v = sy * y / z, w = 1 - 2 n / z (x, y, z in the reference camera's OpenCV axes; sx = 2 fx / W,
sy = 2 fy / H, or less where a fit widens the box past the reference view: `pipelines.capture.ndc_space`'s
margin). A grid fitted in NDC holds its cube in that box; its voxel coordinates are NDC coordinates, and
`world_points` maps them back to the world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_Z = 1e-6
"""Smallest reference-camera z (and ray z component) the maps divide by."""

NDC_ARRAY_SIZE = 19
"""Length of `NDC.to_array`: the 4x4 reference c2w (row-major), sx, sy, near."""


@dataclass(frozen=True)
class NDC:
    """The NDC space of a reference camera.

    Attributes:
        c2w: (4, 4) float64 reference camera-to-world, OpenCV axes (x right, y down, z forward).
        sx, sy: 2 fx / W and 2 fy / H of the reference camera (any image scale: the ratios are the same),
            divided by 1 + margin for a box wider than its view.
        near: the near plane's z-depth in world units (w = -1 there).
    """

    c2w: np.ndarray
    sx: float
    sy: float
    near: float

    def __post_init__(self) -> None:
        assert np.asarray(self.c2w).shape == (4, 4), "c2w must be (4, 4)"
        assert self.sx > 0 and self.sy > 0 and self.near > 0, "sx, sy and near must be positive"

    @classmethod
    def from_camera(cls, K: np.ndarray, width: int, height: int, c2w: np.ndarray, near: float) -> NDC:
        """The NDC space of a pinhole camera (K (3, 3) pixels for a width x height image)."""
        return cls(np.asarray(c2w, dtype=np.float64), 2.0 * float(K[0, 0]) / width, 2.0 * float(K[1, 1]) / height,
                   float(near))

    def to_array(self) -> np.ndarray:
        """(19,) float64: c2w row-major, sx, sy, near (grid.npz's and the store's `ndc`)."""
        return np.concatenate([np.asarray(self.c2w, dtype=np.float64).reshape(-1), [self.sx, self.sy, self.near]])

    @classmethod
    def from_array(cls, values: np.ndarray | list[float]) -> NDC:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
        if a.shape != (NDC_ARRAY_SIZE,):
            raise ValueError(f"an NDC array holds {NDC_ARRAY_SIZE} values, got {a.shape[0]}")
        return cls(a[:16].reshape(4, 4), float(a[16]), float(a[17]), float(a[18]))


def ndc_points(ndc: NDC, points: np.ndarray) -> np.ndarray:
    """World points (n, 3) -> NDC coordinates (n, 3) (in front of the reference camera)."""
    w2c = np.linalg.inv(ndc.c2w)
    p = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = np.maximum(p[:, 2], MIN_Z)
    return np.stack([ndc.sx * p[:, 0] / z, ndc.sy * p[:, 1] / z, 1.0 - 2.0 * ndc.near / z], axis=-1)


def world_points(ndc: NDC, coords: np.ndarray) -> np.ndarray:
    """NDC coordinates (n, 3) with w < 1 -> world points (n, 3) (the inverse of `ndc_points`)."""
    c = np.asarray(coords, dtype=np.float64)
    z = 2.0 * ndc.near / np.maximum(1.0 - c[:, 2], 1e-9)
    p = np.stack([c[:, 0] * z / ndc.sx, c[:, 1] * z / ndc.sy, z], axis=-1)
    return p @ ndc.c2w[:3, :3].T + ndc.c2w[:3, 3]
