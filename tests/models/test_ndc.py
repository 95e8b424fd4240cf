"""NDC for forward-facing captures: the projective map against hand computations, rays that stay on their
world rays, depths back in world units, and fern's real cameras and points in the NDC box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from perfdata.models import ndc as ndc_rays
from perfdata.models import plenoxel, plenoxel_train

from perfdata.ndc import NDC, ndc_points, world_points


def _space() -> NDC:
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # a turn about z
    c2w[:3, 3] = [0.5, -0.25, 1.0]
    K = np.array([[200.0, 0.0, 80.0], [0.0, 220.0, 60.0], [0.0, 0.0, 1.0]])
    return NDC.from_camera(K, 160, 120, c2w, near=2.0)


def test_the_map_by_hand():
    space = _space()
    assert space.sx == pytest.approx(2.5) and space.sy == pytest.approx(220.0 / 60.0)
    # a point 4 units in front of the reference camera, 1 right and 0.5 down of its axis (camera frame)
    cam = np.array([1.0, 0.5, 4.0])
    world = space.c2w[:3, :3] @ cam + space.c2w[:3, 3]
    u, v, w = ndc_points(space, world[None])[0]
    assert (u, v, w) == pytest.approx((2.5 * 1.0 / 4.0, (220.0 / 60.0) * 0.5 / 4.0, 1.0 - 2.0 * 2.0 / 4.0))
    assert world_points(space, np.array([[u, v, w]]))[0] == pytest.approx(world)
    # the near plane is w = -1, infinity w -> 1; the image corners are u, v = +-1
    corner = space.c2w[:3, :3] @ np.array([80.0 / 200.0 * 2.0, -60.0 / 220.0 * 2.0, 2.0]) + space.c2w[:3, 3]
    assert ndc_points(space, corner[None])[0] == pytest.approx((1.0, -1.0, -1.0))
    assert np.array_equal(NDC.from_array(space.to_array()).to_array(), space.to_array())


def test_rays_stay_on_their_world_rays_and_depths_come_back():
    space = _space()
    gen = np.random.default_rng(1)
    centre = space.c2w[:3, 3]
    o = centre + gen.normal(size=(64, 3)) * 0.2
    d = space.c2w[:3, :3] @ np.vstack([gen.uniform(-0.3, 0.3, (2, 64)), np.ones((1, 64))])
    r = ndc_rays.rays(space, torch.from_numpy(o), torch.from_numpy(d.T))
    assert torch.allclose(r.dirs.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(r.origins[:, 2], torch.full((64,), -1.0, dtype=torch.float64))  # on the near plane
    for s in (2.5, 7.0, 40.0):
        world = o + s * d.T
        q = torch.from_numpy(ndc_points(space, world))
        t = ((q - r.origins) * r.dirs).sum(-1)  # distance along the NDC ray to the mapped point
        assert torch.allclose(r.origins + t[:, None] * r.dirs, q, atol=1e-9)  # straight lines stay straight
        assert torch.allclose(r.world_parameter(t), torch.full((64,), s, dtype=torch.float64), rtol=1e-9)


def test_a_wall_in_ndc_renders_at_its_world_depth():
    """A grid in NDC with one opaque slab at w = 0.5 (z = 4 n): render_camera from the reference camera gives
    the slab's z-depth in world units and full opacity."""
    space = _space()
    reso = (16, 12, 32)
    mask = torch.zeros(reso, dtype=torch.bool)
    k = int((0.5 + 1.0) / 2.0 * reso[2])
    mask[:, :, k] = True
    grid = plenoxel_train.make_grid(mask, 2000.0, np.eye(4), torch.zeros(3))
    grid.ndc = space
    K = np.array([[space.sx * 40.0 / 2.0, 0.0, 20.0], [0.0, space.sy * 30.0 / 2.0, 15.0], [0.0, 0.0, 1.0]])
    out = plenoxel.render_camera(grid, K, space.c2w, 40, 30, step=0.5)
    w_slab = (2.0 * k + 1.0) / reso[2] - 1.0  # its voxel centre; the density ramps up from the voxel before
    z_front, z_slab = (2.0 * space.near / (1.0 - w) for w in (w_slab - 2.0 / reso[2], w_slab))
    inner = out["opacity"][5:-5, 5:-5]
    assert float(inner.min()) > 0.99
    depth = out["depth"][5:-5, 5:-5] / inner  # z-depth: the reference camera looks along its z axis
    assert z_front <= float(depth.min()) and float(depth.max()) <= z_slab


def test_fern_points_lie_in_the_ndc_box(shared_data):
    from perfdata.pipelines.capture import NDC_NEAR_FRACTION, ndc_space

    from perfdata.readers import llff

    fern = llff.load_scene(shared_data / "fern", "fern")
    space = ndc_space(fern)
    assert space.near == pytest.approx(NDC_NEAR_FRACTION * fern.meta["bounds"][0])
    q = ndc_points(space, fern.points)
    inside = np.all(np.abs(q) <= 1.0, axis=1)
    assert inside.mean() > 0.95  # the reference camera sees (almost) everything the capture triangulated
    w_far = 1.0 - 2.0 * space.near / fern.meta["bounds"][1]  # the farthest bound
    assert np.percentile(q[:, 2], 1) > -1.0 and np.percentile(q[:, 2], 99) < w_far


def test_the_automatic_margin_keeps_fern_cameras_rays_inside_the_ndc_box(shared_data):
    import dataclasses

    from perfdata.pipelines.capture import auto_ndc_margin, ndc_excursion, ndc_space

    from perfdata.readers import llff

    fern = llff.load_scene(shared_data / "fern", "fern").with_holdout(8)
    held = dataclasses.replace(fern, frames=tuple(dataclasses.replace(f, split="train") for f in fern.heldout_frames))
    bare = ndc_space(fern)
    # the reference camera's own view is too narrow for the others: many rays leave it between the bounds
    assert (ndc_excursion(fern, bare) > 0).mean() > 0.1 and (ndc_excursion(held, bare) > 0).mean() > 0.1
    margin = auto_ndc_margin(fern)
    assert 0.1 < margin < 0.3
    wide = ndc_space(fern, margin)
    assert wide.sx == pytest.approx(bare.sx / (1 + margin)) and wide.near == bare.near
    assert (ndc_excursion(fern, wide) > 0).mean() <= 0.01  # the quantile it was chosen for
    assert (ndc_excursion(held, wide) > 0).mean() < 0.02  # and the held-out cameras, which it never saw
    # a point at u = 1.1 of the reference camera's own box lies inside the box widened by 0.2 (u = 1.1 / 1.2)
    c2w = bare.c2w
    x_edge = c2w[:3, 3] + c2w[:3, 2] * 40.0 + c2w[:3, 0] * 40.0 * 1.1 / bare.sx
    assert abs(ndc_points(bare, x_edge[None])[0, 0]) > 1.0 and abs(ndc_points(ndc_space(fern, 0.2), x_edge[None])[0, 0]) < 1.0
