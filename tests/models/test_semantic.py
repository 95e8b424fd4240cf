"""models.semantic: logit compositing against a hand computation, the ignore label, metrics, coarser fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from perfdata.models import plenoxel, semantic
from perfdata.models.plenoxel_train import make_grid

from perfdata.scene import similarity

R = 8
SIGMA = 3.0


def uniform_grid(reso: int = R) -> plenoxel.PlenoxelGrid:
    return make_grid(torch.ones((reso,) * 3, dtype=torch.bool), SIGMA, similarity(1.0, np.zeros(3)))


def x_ray() -> tuple[torch.Tensor, torch.Tensor]:
    """One cube ray along +x through y = z = 0 (between voxels 3 and 4 of both axes)."""
    return torch.tensor([[-2.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])


def hand_samples() -> tuple[np.ndarray, np.ndarray, float]:
    """x index coordinates u of the samples (step 1/2 voxel, offset 1/2: u = -1/4, 1/4, ..., 29/4), their
    densities (corners beyond the cube are empty, so sigma fades linearly in the outer half voxels) and delta."""
    u = -0.5 + (np.arange(16) + 0.5) * 0.5
    inside = np.clip(np.minimum(u + 1.0, R - u), 0.0, 1.0)
    return u, SIGMA * inside, 0.5 * 2.0 / R


def test_constant_logits_composite_to_opacity_times_logits() -> None:
    grid, (o, d) = uniform_grid(), x_ray()
    logits = torch.tensor([1.0, -2.0, 0.5])
    field = semantic.SemanticField(grid.links, logits.expand(grid.n_voxels, 3).clone())
    out = semantic.render_logits_train(grid, plenoxel.build_accel(grid), field, o, d, 0.5, weight_thresh=0.0)
    _, sig, delta = hand_samples()
    assert np.isclose(sig.sum(), 15.5 * SIGMA)  # 14 full samples and two at 3/4
    opacity = 1.0 - np.exp(-delta * sig.sum())
    assert torch.allclose(out.opacity, torch.tensor([opacity], dtype=torch.float32), atol=1e-5)
    assert torch.allclose(out.logits[0], torch.tensor(opacity, dtype=torch.float32) * logits, atol=1e-5)


def test_two_valued_logits_composite_as_by_hand() -> None:
    grid, (o, d) = uniform_grid(), x_ray()
    la, lb = np.array([2.0, 0.0]), np.array([-1.0, 3.0])
    coords = semantic.link_coords(grid.links)
    values = torch.from_numpy(np.where((coords[:, :1] < 4).numpy(), la, lb)).float()
    field = semantic.SemanticField(grid.links, values)
    out = semantic.render_logits_train(grid, plenoxel.build_accel(grid), field, o, d, 0.5, weight_thresh=0.0)
    u, sig, delta = hand_samples()
    tau = delta * sig
    w = np.exp(-(np.cumsum(tau) - tau)) * (1.0 - np.exp(-tau))
    frac_b = np.clip(u - 3.0, 0.0, 1.0)  # between voxel centres 3 and 4 the logits blend linearly
    expected = (w[:, None] * ((1 - frac_b)[:, None] * la + frac_b[:, None] * lb)).sum(0)
    assert np.allclose(out.logits[0].detach().numpy(), expected, atol=1e-5)
    loss = semantic.semantic_loss(out.logits, torch.tensor([1]))
    loss.backward()
    assert out.leaf.grad is not None and out.leaf.grad.abs().sum() > 0  # rows the ray touched get gradient


def test_ignore_label_contributes_nothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, -1, 3, -1, 2, 1])
    loss = semantic.semantic_loss(logits, labels)
    keep = labels >= 0
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(logits[keep], labels[keep]))
    loss.backward()
    assert torch.all(logits.grad[~keep] == 0) and torch.all(logits.grad[keep].abs().sum(1) > 0)
    none = semantic.semantic_loss(logits, torch.full((6,), -1))
    assert float(none.detach()) == 0.0
    with pytest.raises(ValueError, match="labels must lie"):
        semantic.semantic_loss(logits, torch.tensor([0, 4, 0, 0, 0, 0]))


def test_metrics_by_hand_and_ignore() -> None:
    truth = torch.tensor([0, 0, 0, 1, 1, -1, -1, 2])
    pred = torch.tensor([0, 0, 1, 1, -1, 2, 0, 2])  # truth -1: ignored whatever predicted; pred -1: a miss
    conf = semantic.label_confusion(pred, truth, 3)
    assert conf.sum() == 6 and conf[1, 3] == 1
    m = semantic.label_metrics(conf)
    iou = [2 / 3, 1 / 3, 1.0]  # class 0: tp 2, fn 1; class 1: tp 1, fp 1, fn 1 (the miss); class 2: tp 1
    assert np.isclose(m["miou"], np.mean(iou)) and np.isclose(m["accuracy"], 4 / 6)
    assert np.isclose(m["class_accuracy"], np.mean([2 / 3, 1 / 2, 1.0]))
    only_ignored = semantic.label_metrics(semantic.label_confusion(pred, torch.full_like(truth, -1), 3))
    assert np.isnan(only_ignored["miou"])


def test_confident_labels_threshold() -> None:
    logits = np.array([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    assert semantic.confident_labels(logits, 0.5).tolist() == [0, -1, -1]
    assert semantic.confident_labels(logits, 0.0).tolist() == [0, 0, 0]


def test_coarse_field_resamples_and_samples_a_constant() -> None:
    grid = uniform_grid()
    field = semantic.make_field(grid, 3, factor=2)
    assert field.reso == (4, 4, 4) and field.n_rows == 64
    field.logits[:] = torch.tensor([0.5, 1.0, -1.0])
    up = plenoxel_train_upsample(grid)
    moved = semantic.resample_field(field, up, grid.reso)
    assert moved.reso == (8, 8, 8) and torch.allclose(moved.logits, field.logits[:1].expand(512, 3))
    at_voxels = semantic.voxel_logits(moved, up, semantic.link_coords(up.links))
    assert torch.allclose(at_voxels, field.logits[:1].expand(up.n_voxels, 3), atol=1e-6)


def plenoxel_train_upsample(grid: plenoxel.PlenoxelGrid) -> plenoxel.PlenoxelGrid:
    from perfdata.models.plenoxel_train import resample

    return resample(grid, 2 * grid.reso[0], torch.ones(grid.n_voxels, dtype=torch.bool))


def test_sparse_adam_updates_only_its_rows_as_by_hand() -> None:
    from perfdata.models.optim import SparseAdam

    param = torch.zeros(4, 2)
    opt = SparseAdam(4, 2, betas=(0.9, 0.99), eps=1e-12)
    g = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    opt.step_(param, torch.tensor([1, 3]), g, lr=0.1)
    m, v = 0.1 * g, 0.01 * g * g
    expected = torch.where(v > 0, -0.1 * m / v.sqrt(), torch.zeros_like(v))
    assert torch.all(param[[0, 2]] == 0) and torch.allclose(param[[1, 3]], expected)


def test_tv_rows_in_the_leaf_give_the_merged_gradient() -> None:
    # the label step's route (TV rows joined to the render's leaf, TV added in place) against the render's
    # gradient merged with tv_grads' sparse one
    from perfdata.models.optim import merge_sparse
    from perfdata.models.plenoxel_train import tv_grads, tv_grads_into, tv_rows_touched

    grid = uniform_grid()
    rng = torch.Generator().manual_seed(0)
    field = semantic.SemanticField(grid.links, torch.randn(grid.n_voxels, 4, generator=rng))
    coords = semantic.link_coords(field.links)
    o = torch.tensor([[-2.0, 0.1, -0.3], [-2.0, -0.4, 0.2]])
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.05], [1.0, -0.2, 0.1]]), dim=-1)
    labels = torch.tensor([1, 3])
    tv_rows = torch.tensor([0, 9, 100, 300, 511])
    plain = semantic.render_logits_train(grid, plenoxel.build_accel(grid), field, o, d, 0.5, 1e-4)
    semantic.semantic_loss(plain.logits, labels).backward()
    rows_a, g_a = merge_sparse([(plain.rows, plain.leaf.grad), tv_grads(field.logits, field.links, coords, tv_rows, 0.1)],
                               field.n_rows)
    touched = tv_rows_touched(field.links, coords, tv_rows)
    joined = semantic.render_logits_train(grid, plenoxel.build_accel(grid), field, o, d, 0.5, 1e-4, touched)
    assert torch.allclose(joined.logits, plain.logits)
    semantic.semantic_loss(joined.logits, labels).backward()
    assert joined.row_map is not None and torch.equal(joined.row_map[joined.rows].long(), torch.arange(len(joined.rows)))
    g_b = joined.leaf.grad.clone()
    tv_grads_into(field.logits, field.links, coords, tv_rows, 0.1, joined.row_map, g_b)
    assert torch.equal(joined.rows, rows_a) and torch.allclose(g_b, g_a, atol=1e-6)
