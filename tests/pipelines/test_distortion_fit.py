"""The distortion loss in a fit: with it the fitted field's weights along the training rays are gathered into
shorter intervals (lower distortion) than without, on the same scene, steps and seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from perfdata.models import plenoxel, plenoxel_train
from perfdata.pipelines import plenoxel_fit
from perfdata.pipelines.fit import fine_object_schedule, fit_scene
from perfdata.pipelines.fitconfig import FitConfig

from perfdata.errors import ConfigError
from perfdata.synthetic import make_object_scene


def mean_distortion(scene, cfg: FitConfig, sparse) -> float:  # type: ignore[no-untyped-def]
    grid = plenoxel.PlenoxelGrid.from_sparse(sparse, torch.device("cpu"))
    prepared = plenoxel_fit.prepare_scene(scene, cfg)
    rays = plenoxel_fit.load_rays(prepared.train_frames, np.linalg.inv(prepared.world_from_grid), torch.device("cpu"))
    pick = torch.randperm(rays.origins.shape[0], generator=torch.Generator().manual_seed(0))[:4000]
    accel = plenoxel.build_accel(grid, cfg.step_size)
    with torch.no_grad():
        out = plenoxel_train.render_train(grid, accel, rays.origins[pick], rays.dirs[pick], rays.z_scale[pick],
                                          torch.ones(3), 0.5, fused=False)
    assert out.distortion is not None
    return float(out.distortion.mean())


def test_distortion_loss_gathers_the_weights() -> None:
    scene = make_object_scene(2, n_views=10, size=32)
    base = dict(resolution=(32,), steps=150, batch_rays=2048, device="cpu", background="white")
    plain_cfg, strong_cfg = FitConfig(**base), FitConfig(**base, distortion=0.5)
    plain, strong = fit_scene(scene, plain_cfg), fit_scene(scene, strong_cfg)
    assert strong.config is not None and strong.config.distortion == 0.5
    assert plain.config is not None and plain.config.distortion == 0.0  # a coarse masked object keeps none
    d_plain, d_strong = mean_distortion(scene, plain_cfg, plain.grid), mean_distortion(scene, strong_cfg, strong.grid)
    assert d_plain > 0.0 and d_strong < 0.8 * d_plain, (d_plain, d_strong)
    assert strong.metrics["psnr"] > 18.0  # still a fit of the object


def test_a_fine_masked_object_takes_a_distortion_loss_unless_set() -> None:
    assert fine_object_schedule(FitConfig(resolution=(128, 256))).distortion == 1e-2
    assert fine_object_schedule(FitConfig(resolution=(256, 512))).distortion == 1e-2
    assert fine_object_schedule(FitConfig(resolution=(64, 128))).distortion == 0.0
    assert fine_object_schedule(FitConfig(resolution=(128, 256), distortion=2e-3)).distortion == 2e-3


def test_negative_distortion_is_refused() -> None:
    with pytest.raises(ConfigError, match="distortion"):
        FitConfig(distortion=-1e-3)
    with pytest.raises(ConfigError, match="distortion"):
        FitConfig(distortion=float("nan"))
