"""What kind of capture a scene is, and the normalisation of a forward-facing one.

Readers record the kind in `Scene.meta["capture"]` (what `fit --background auto` reads):
    "object"          cameras around an object (with its surroundings unless the frames have masks / alpha)
    "forward_facing"  hand-held cameras all looking one way at a scene in front of them (LLFF)
    "room"            cameras inside the space they look at (RGB-D scans, ScanNet, Replica)
A reader that knows its format sets it; one that does not (COLMAP models, plain transforms.json) calls
`guess_capture` on its cameras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from perfdata import camera
from perfdata.scene import Frame, normalisation_from_bounds

CAPTURES = ("object", "forward_facing", "room")
FORWARD_FACING_DEG = 30.0
"""Every optical axis within this angle of their mean: forward-facing."""


def reference_pose(c2ws: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV c2w of the 'average camera' of c2ws (n, 4, 4): at the mean centre, looking along the mean
    optical axis, with the mean image-down direction made orthogonal to it (LLFF recentres poses on this)."""
    c2ws = np.asarray(c2ws, dtype=np.float64)
    forward = c2ws[:, :3, 2].mean(0)
    forward /= np.linalg.norm(forward)
    right = np.cross(c2ws[:, :3, 1].mean(0), forward)  # OpenCV: x = y cross z
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, np.cross(forward, right), forward
    pose[:3, 3] = c2ws[:, :3, 3].mean(0)
    return pose


def guess_capture(c2ws: np.ndarray) -> str:
    """"forward_facing" when every optical axis of c2ws (n, 4, 4) lies within FORWARD_FACING_DEG of their mean;
    else "object" when the axes meet in front of at least 90% of the cameras and pass, in the median, within a
    third of the camera distance of that point; else "room"."""
    c2ws = np.asarray(c2ws, dtype=np.float64)
    axes = c2ws[:, :3, 2] / np.linalg.norm(c2ws[:, :3, 2], axis=1, keepdims=True)
    centres = c2ws[:, :3, 3]
    mean = axes.mean(0)
    if np.linalg.norm(mean) > 1e-6 and np.min(axes @ (mean / np.linalg.norm(mean))) >= math.cos(
        math.radians(FORWARD_FACING_DEG)
    ):
        return "forward_facing"
    focus = camera.nearest_point_to_axes(centres, axes)
    to_focus = focus - centres
    along = np.einsum("ij,ij->i", to_focus, axes)
    across = np.linalg.norm(to_focus - along[:, None] * axes, axis=1)
    if np.mean(along > 0) >= 0.9 and np.median(across) < np.median(np.linalg.norm(to_focus, axis=1)) / 3:
        return "object"
    return "room"


def frustum_corners(frame: Frame, depths: Sequence[float]) -> np.ndarray:
    """(4 * len(depths), 3) world points of the image corners of `frame` at the given z-depths."""
    corners = np.array([[0.0, 0.0], [frame.width, 0.0], [0.0, frame.height], [frame.width, frame.height]])
    origins, dirs = camera.pixel_rays(frame.K, frame.c2w, corners)
    return np.concatenate([origins + dirs * float(z) for z in depths])


def normalisation_from_frustums(frames: Sequence[Frame], near: float, far: float, reference: np.ndarray) -> np.ndarray:
    """world_from_grid of a forward-facing capture: the smallest cube, with the axes of `reference` (a rigid
    (4, 4) c2w, e.g. `reference_pose`), that holds every camera's view frustum between z-depths near and far --
    everything the cameras see within the capture's depth bounds."""
    points = np.concatenate([frustum_corners(f, (near, far)) for f in frames])
    w2r = np.linalg.inv(reference)
    local = points @ w2r[:3, :3].T + w2r[:3, 3]
    return np.asarray(reference, dtype=np.float64) @ normalisation_from_bounds(local.min(0), local.max(0), margin=1.0)
