"""What a fit puts behind its grid, chosen from the kind of capture (`perfdata.readers.capture`).

`fit --background auto` (the default) decides, and fit.json records the choice (`fit_background`):
    a known colour (masked / alpha frames, a synthetic scene's own) -> white or black, composited in the images;
    an object with its surroundings (CO3D, a phone video)          -> msi (the surroundings lie outside the cube);
    a forward-facing capture (LLFF)                                -> ndc (the grid in the NDC space of the
                                                                      average camera reaches to infinity);
    a room (the cameras inside what they see)                      -> learned (one colour for rays that escape);
    no kind known                                                  -> learned.
Two more automatic settings come from the capture here: an NDC fit's margin (`auto_ndc_margin`) and whether
density's RMSProp is bias-corrected (`auto_density_bias_correction`).
Measured on the analytic object-in-surroundings scene (tests/pipelines/test_background_fit.py) and in
benchmarks/real.py; README "Real captures".
"""

from __future__ import annotations

import dataclasses

import numpy as np
from perfdata.pipelines.fitconfig import FitConfig

from perfdata import camera
from perfdata.errors import InputError
from perfdata.ndc import NDC, ndc_points
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


FOG_DISTANCE = 2.5
"""Cameras nearer than this many cube half-sizes to the cube's centre can fog a grid that starts full
(`auto_density_bias_correction`): RGB-only synthetic objects on their ground fogged with cameras 1.6 and 2.01
half-sizes out; lego, 2.78 out, fits without the correction and loses 0.5 dB with it (README "Density's first
steps")."""


def auto_density_bias_correction(scene: Scene, cfg: FitConfig) -> bool:
    """FitConfig.density_bias_correction for None, on the scene as fitted (`plenoxel_fit.prepare_scene`): True
    where the grid starts full or from a model's prediction (cfg.init_from: a blurred hull that reaches towards
    the lenses) -- no depth to start it from (or init_from_depth off), not an NDC fit -- and a training camera
    lies within FOG_DISTANCE cube half-sizes of the cube's centre.
    Fog near a lens is seen by few views, so it can hold each view's mean colour without the other views
    contradicting it; RMSProp's uncorrected first steps (4.5 lr_density) make that fog at once."""
    if scene.meta.get("fit_background") == "ndc":
        return False
    if scene.has_depth and cfg.init_from_depth and not cfg.init_from:  # a model's start ignores the depth
        return False
    frames = scene.train_frames or scene.frames
    if not frames:
        return False
    in_grid = scene.world_to_grid(np.stack([f.c2w[:3, 3] for f in frames]))
    return bool(np.linalg.norm(in_grid, axis=1).min() < FOG_DISTANCE)


NDC_NEAR_FRACTION = 0.75
"""The NDC near plane sits at this fraction of the nearest depth bound (NeRF's LLFF set-up: bounds scaled so the
nearest is 1 / 0.75, near plane at 1), so nothing seen lies in front of it."""


def ndc_space(scene: Scene, margin: float = 0.0) -> NDC:
    """The NDC space a forward-facing fit of `scene` lies in: the reference camera (meta["reference_c2w"], else
    the average training camera) with the first training frame's intrinsics, its view widened by `margin` (a
    fraction of the half width and height, FitConfig.ndc_margin), the near plane at NDC_NEAR_FRACTION of the
    nearest depth bound (`depth_bounds`)."""
    frames = scene.train_frames or scene.frames
    reference = scene.meta.get("reference_c2w")
    c2w = np.asarray(reference, dtype=np.float64) if reference is not None else \
        reference_pose(np.stack([f.c2w for f in frames]))
    f = frames[0]
    ndc = NDC.from_camera(f.K, f.width, f.height, c2w, NDC_NEAR_FRACTION * depth_bounds(scene, c2w)[0])
    return dataclasses.replace(ndc, sx=ndc.sx / (1.0 + margin), sy=ndc.sy / (1.0 + margin))


def depth_bounds(scene: Scene, c2w: np.ndarray) -> tuple[float, float]:
    """(near, far) depths of what a forward-facing capture sees: meta["bounds"], else the 1st and 99th
    percentiles of the scene's points' z-depths in the camera c2w."""
    bounds = scene.meta.get("bounds")
    if bounds is not None:
        return float(bounds[0]), float(bounds[1])
    if scene.points is not None and len(scene.points):
        w2c = np.linalg.inv(c2w)
        z = np.asarray(scene.points, dtype=np.float64) @ w2c[2, :3] + w2c[2, 3]
        if np.any(z > 0):
            return float(np.percentile(z[z > 0], 1.0)), float(np.percentile(z[z > 0], 99.0))
        raise InputError(scene.source or scene.scene_id, "NDC: no scene point lies in front of the cameras")
    raise InputError(scene.source or scene.scene_id, "NDC needs near depth bounds (meta 'bounds') or scene "
                     "points; fit with --background msi or learned instead")


NDC_MARGIN_QUANTILE = 0.99
"""The automatic NDC margin (FitConfig.ndc_margin None) keeps this fraction of the training rays inside the NDC
box between the depth bounds (`auto_ndc_margin`)."""
NDC_MARGIN_MAX = 1.0
"""The largest automatic NDC margin (a box twice the reference view's width)."""


def auto_ndc_margin(scene: Scene) -> float:
    """The smallest margin (rounded up to 0.01, at most NDC_MARGIN_MAX) that keeps NDC_MARGIN_QUANTILE of the
    training rays inside the NDC box between the depth bounds (`ndc_excursion`). Without one, 18 % of fern's
    training rays and 22 % of its held-out rays left the box sideways for the one background colour (fern, 300 s:
    23.2 dB held-out; margin 0.15: 24.8, 0.25: 24.7; its automatic margin, 0.19: 24.77 in benchmarks/real.py)."""
    excursion = ndc_excursion(scene, ndc_space(scene))
    if not len(excursion):
        return 0.0
    return float(min(np.ceil(np.quantile(excursion, NDC_MARGIN_QUANTILE) * 100.0) / 100.0, NDC_MARGIN_MAX))


def ndc_excursion(scene: Scene, ndc: NDC, pixels: int = 48, n_depths: int = 8) -> np.ndarray:
    """How far each training ray strays outside the NDC box between the capture's depth bounds: per ray (a
    pixels x pixels lattice over every training frame), max(|u|, |v|) - 1 over n_depths depths from the near to
    the far bound (z-depth in its own camera), clipped at 0. `ndc_space(scene, m)` keeps a ray inside the box
    there when this is <= m (for the box of `ndc`, margin 0)."""
    frames = scene.train_frames or scene.frames
    near, far = depth_bounds(scene, ndc.c2w)
    depths = np.geomspace(near, far, n_depths)
    out = []
    lattice = camera.pixel_grid(pixels, pixels)
    for f in frames:
        origins, dirs = camera.pixel_rays(f.K, f.c2w, lattice * [f.width / pixels, f.height / pixels])
        worst = np.zeros(len(dirs))
        for z in depths:  # pixel_rays' directions have z-depth 1 in the frame's own camera
            q = ndc_points(ndc, origins + dirs * z)
            worst = np.maximum(worst, np.maximum(np.abs(q[:, 0]), np.abs(q[:, 1])))
        out.append(worst - 1.0)
    return np.clip(np.concatenate(out), 0.0, None) if out else np.zeros(0)
