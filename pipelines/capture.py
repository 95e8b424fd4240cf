"""What a fit puts behind its grid, chosen from the kind of capture (`perfdata.readers.capture`).

`fit --background auto` (the default) decides, and fit.json records the choice (`fit_background`):
    a known colour (masked / alpha frames, a synthetic scene's own) -> white or black, composited in the images;
    an object with its surroundings (CO3D, a phone video)          -> msi (the surroundings lie outside the cube);
    a forward-facing capture (LLFF)                                -> ndc (the grid in the NDC space of the
                                                                      average camera reaches to infinity);
    a room (the cameras inside what they see)                      -> learned (one colour for rays that escape);
    no kind known                                                  -> learned.
Measured on the analytic object-in-surroundings scene (tests/pipelines/test_background_fit.py) and in
benchmarks/real.py; README "Real captures".
"""

from __future__ import annotations

import numpy as np
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.errors import InputError
from perfdata.ndc import NDC
from perfdata.readers.capture import reference_pose
from perfdata.scene import Scene, decompose_similarity, similarity

KNOWN_COLOURS = ("white", "black")


def choose_background(scene: Scene, cfg: FitConfig) -> str:
    """The background a fit of `scene` uses: cfg.background, or for "auto" the capture's (module doc)."""
    if cfg.background != "auto":
        return cfg.background
    if scene.background in KNOWN_COLOURS:
        return str(scene.background)
    capture = scene.meta.get("capture")
    if capture == "object":
        return "msi"
    if capture == "forward_facing":
        return "ndc"
    return "learned"


def cleared_cube(world_from_grid: np.ndarray, camera_centres: np.ndarray, clearance: float) -> np.ndarray:
    """world_from_grid shrunk about its centre (never grown) so that every camera centre (n, 3) is at least
    `clearance` cube half-sizes from the centre (the cube then never reaches in front of a lens)."""
    scale, rotation, centre = decompose_similarity(world_from_grid)
    if len(camera_centres) == 0 or clearance <= 0:
        return np.asarray(world_from_grid, dtype=np.float64)
    nearest = float(np.min(np.linalg.norm(np.asarray(camera_centres, dtype=np.float64) - centre, axis=1)))
    return similarity(min(scale, nearest / clearance), centre, rotation)


NDC_NEAR_FRACTION = 0.75
"""The NDC near plane sits at this fraction of the nearest depth bound (NeRF's LLFF set-up: bounds scaled so the
nearest is 1 / 0.75, near plane at 1), so nothing seen lies in front of it."""


def ndc_space(scene: Scene) -> NDC:
    """The NDC space a forward-facing fit of `scene` lies in: the reference camera (meta["reference_c2w"], else
    the average training camera) with the first training frame's intrinsics, the near plane at
    NDC_NEAR_FRACTION of the nearest depth bound (meta["bounds"], else of the 1st percentile of the scene's
    points' depths)."""
    frames = scene.train_frames or scene.frames
    reference = scene.meta.get("reference_c2w")
    c2w = np.asarray(reference, dtype=np.float64) if reference is not None else \
        reference_pose(np.stack([f.c2w for f in frames]))
    bounds = scene.meta.get("bounds")
    if bounds is not None:
        nearest = float(bounds[0])
    elif scene.points is not None and len(scene.points):
        w2c = np.linalg.inv(c2w)
        z = np.asarray(scene.points, dtype=np.float64) @ w2c[2, :3] + w2c[2, 3]
        if not np.any(z > 0):
            raise InputError(scene.source or scene.scene_id, "NDC: no scene point lies in front of the cameras")
        nearest = float(np.percentile(z[z > 0], 1.0))
    else:
        raise InputError(scene.source or scene.scene_id, "NDC needs near depth bounds (meta 'bounds') or scene "
                         "points; fit with --background msi or learned instead")
    f = frames[0]
    return NDC.from_camera(f.K, f.width, f.height, c2w, NDC_NEAR_FRACTION * nearest)
