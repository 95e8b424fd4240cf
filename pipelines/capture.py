"""What a fit puts behind its grid, chosen from the kind of capture (`perfdata.readers.capture`).

`fit --background auto` (the default) decides, and fit.json records the choice (`fit_background`):
    a known colour (masked / alpha frames, a synthetic scene's own) -> white or black, composited in the images;
    an object with its surroundings (CO3D, a phone video)          -> msi (the surroundings lie outside the cube);
    a forward-facing capture (LLFF)                                -> msi (the far scene lies behind the cube);
    a room (the cameras inside what they see)                      -> learned (one colour for rays that escape);
    no kind known                                                  -> learned.
Measured on the analytic object-in-surroundings scene (tests/pipelines/test_background_fit.py) and in
benchmarks/real.py; README "Real captures".
"""

from __future__ import annotations

import numpy as np
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.scene import Scene, decompose_similarity, similarity

KNOWN_COLOURS = ("white", "black")


def choose_background(scene: Scene, cfg: FitConfig) -> str:
    """The background a fit of `scene` uses: cfg.background, or for "auto" the capture's (module doc)."""
    if cfg.background != "auto":
        return cfg.background
    if scene.background in KNOWN_COLOURS:
        return str(scene.background)
    capture = scene.meta.get("capture")
    if capture in ("object", "forward_facing"):
        return "msi"
    return "learned"


def cleared_cube(world_from_grid: np.ndarray, camera_centres: np.ndarray, clearance: float) -> np.ndarray:
    """world_from_grid shrunk about its centre (never grown) so that every camera centre (n, 3) is at least
    `clearance` cube half-sizes from the centre (the cube then never reaches in front of a lens)."""
    scale, rotation, centre = decompose_similarity(world_from_grid)
    if len(camera_centres) == 0 or clearance <= 0:
        return np.asarray(world_from_grid, dtype=np.float64)
    nearest = float(np.min(np.linalg.norm(np.asarray(camera_centres, dtype=np.float64) - centre, axis=1)))
    return similarity(min(scale, nearest / clearance), centre, rotation)
