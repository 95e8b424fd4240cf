"""fit --method semantic: label regimes, a 2-class toy scene rendered back (joint and --from-fit), the fit ->
export -> render path on a tiny room (real zarr read back), and bad input from the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from perfdata.models import plenoxel, semantic
from perfdata.pipelines.fit import fit_scene, fit_scenes
from perfdata.pipelines.fitconfig import FitConfig
from perfdata.pipelines.semantic_config import SemanticConfig
from perfdata.pipelines.semantic_labels import (
    add_noise,
    degrade,
    downscale_labels,
    keep_clicks,
    labelled_frames,
)

from perfdata import camera, images
from perfdata.cli import main
from perfdata.errors import ConfigError, InputError
from perfdata.grid import SparseGrid
from perfdata.records.fit import read_fit
from perfdata.scene import Frame, Scene, similarity

RADIUS = 0.5
FAST = dict(resolution=(32,), steps=150, batch_rays=2048, device="cpu", holdout_every=6, tv_fraction=0.05)


def labelled_sphere(n_views: int = 18, size: int = 32) -> Scene:
    """A sphere on white whose upper half (z > 0) is class 1, lower half class 0; background pixels -1."""
    K = camera.intrinsics_from_fov(0.7, size, size)
    frames = []
    for i in range(n_views):
        theta = 2 * np.pi * i / n_views
        eye = 2.2 * np.array([np.cos(theta), np.sin(theta), 0.5 + 0.3 * np.sin(3 * theta)])
        c2w = camera.look_at(eye, np.zeros(3))
        o, d = camera.image_rays(K, c2w, size, size)
        b, c = 2 * (o * d).sum(-1), (o * o).sum(-1) - RADIUS**2
        a = (d * d).sum(-1)
        disc = b * b - 4 * a * c
        hit = disc > 0
        t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
        p = o + t[:, None] * d
        top = p[:, 2] > 0
        rgb = np.where(hit[:, None], np.where(top[:, None], [0.9, 0.3, 0.2], [0.2, 0.4, 0.9]), 1.0)
        labels = np.where(hit, top.astype(np.int32), -1)
        frames.append(Frame(f"v{i}", K, c2w, size, size, image=rgb.reshape(size, size, 3).astype(np.float32),
                            depth=t.reshape(size, size).astype(np.float32), labels=labels.reshape(size, size)))
    return Scene("sphere", tuple(frames), similarity(0.75, np.zeros(3)), label_names=("bottom", "top"),
                 background="white")


def test_label_noise_flips_exactly_the_fraction() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(40, 50)).astype(np.int32)
    labels[:5] = -1
    for fraction in (0.0, 0.3, 0.5, 0.9):
        noisy = add_noise(labels, fraction, 5, np.random.default_rng(1))
        flipped = noisy != labels
        assert flipped.sum() == round(fraction * (labels >= 0).sum())
        assert np.all(noisy[:5] == -1) and noisy.min() >= -1 and noisy.max() < 5  # ignore stays, never the same class


def test_label_regimes() -> None:
    assert labelled_frames(21, 0.1).nonzero()[0].tolist() == [0, 10]
    assert labelled_frames(10, 1.0).all() and labelled_frames(3, 0.01).sum() == 1
    lab = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 8, 0), 8, 1).astype(np.int32) % 3  # 32x32, 8x8 blocks
    assert np.array_equal(downscale_labels(lab, 8), lab)  # labels constant over the coarse pixels survive
    fine = np.indices((32, 32)).sum(0).astype(np.int32) % 2  # a checkerboard does not
    assert downscale_labels(fine, 8).shape == (32, 32) and (downscale_labels(fine, 8) != fine).mean() > 0.4
    clicks = keep_clicks(lab, 2, np.random.default_rng(0))
    assert [(clicks == c).sum() for c in range(3)] == [2, 2, 2] and np.all(lab[clicks >= 0] == clicks[clicks >= 0])
    maps = [lab] * 10
    out = degrade(maps, SemanticConfig(label_frames=0.2, label_noise=0.5), 3, seed=0)
    assert [bool((m >= 0).any()) for m in out] == [True] + [False] * 4 + [True] + [False] * 4
    assert (out[0] != lab).sum() == 512


def test_coarse_labels_supervise_their_centre_rays() -> None:
    """1/8 labels: "centres" keeps exactly the pixels the coarse labels were sampled at (exact labels);
    "interior" adds whole cells inside uniform coarse neighbourhoods; "nearest" labels every pixel."""
    truth = (np.indices((32, 32))[1] >= 13).astype(np.int32)  # a boundary inside a coarse cell
    centres = downscale_labels(truth, 8, "centres")
    assert (centres >= 0).sum() == 16 and np.array_equal(np.argwhere(centres >= 0)[:2], [[4, 4], [4, 12]])
    assert np.all(centres[centres >= 0] == truth[centres >= 0])
    interior = downscale_labels(truth, 8, "interior")
    assert np.all(interior[centres >= 0] == centres[centres >= 0])
    assert np.all(interior[:, :8] == 0) and np.all(interior[:, 24:] == 1)
    assert np.all(np.where(centres >= 0, -1, interior)[:, 8:24] == -1)  # the mixed cells: centres only
    nearest = downscale_labels(truth, 8, "nearest")
    assert (nearest >= 0).all() and (nearest != truth).sum() == 32 * 3  # columns 13..15 take cell 1's label 0
    with pytest.raises(ValueError):
        downscale_labels(truth, 8, "bilinear")
    out = degrade([truth], SemanticConfig(label_downscale=8), 2, seed=0)  # the default: centres
    assert np.array_equal(out[0], centres)


def test_semantic_config_factor_and_upsample() -> None:
    assert SemanticConfig().resolved_factor == 1 and SemanticConfig(label_noise=0.5).resolved_factor == 1
    for kw in ({"label_frames": 0.1}, {"label_downscale": 8}, {"label_clicks": 1}):
        assert SemanticConfig(**kw).resolved_factor == 2 and SemanticConfig(**kw, factor=1).resolved_factor == 1
    for bad in ({"label_upsample": "bilinear"}, {"factor": 0}, {"step_size": 0.0}, {"weight_thresh": -1.0}):
        with pytest.raises(ConfigError):
            SemanticConfig(**bad)


def test_two_class_toy_scene_renders_its_labels_back(tmp_path: Path) -> None:
    scene = labelled_sphere()
    cfg = FitConfig(method="semantic", **FAST)  # type: ignore[arg-type]
    result = fit_scene(scene, cfg)
    m = result.metrics
    assert m["miou"] > 0.9 and m["accuracy"] > 0.95 and m["class_accuracy"] > 0.9, m
    assert "input_miou" not in m and m["psnr"] > 18.0
    grid = result.grid
    assert grid.logits.shape == (grid.n_voxels, 2) and grid.labels.dtype == np.int16
    centres = grid.centers()
    solid = (grid.labels >= 0) & (np.abs(np.linalg.norm(centres * 0.75, axis=1) - RADIUS) < 0.05)
    assert solid.sum() > 100 and np.mean(grid.labels[solid] == (centres[solid, 2] > 0)) > 0.9
    # --from-fit: the same grid, logits learned alone
    plain = fit_scene(scene, dataclasses.replace(cfg, method="plenoxel"))
    plain.grid.save(tmp_path / "sphere" / "grid.npz")
    sem = dataclasses.replace(cfg.semantic, from_fit=str(tmp_path))
    logits_only = fit_scene(scene, dataclasses.replace(cfg, semantic=sem, steps=80))
    assert logits_only.metrics["miou"] > 0.9, logits_only.metrics
    assert np.array_equal(logits_only.grid.density, plain.grid.density)  # the grid did not move
    with pytest.raises(InputError, match="no fitted grid"):
        fit_scene(scene, dataclasses.replace(cfg, semantic=dataclasses.replace(sem, from_fit=str(tmp_path / "x"))))


def test_noisy_labels_are_denoised() -> None:
    sem = SemanticConfig(label_noise=0.3, tv=0.01, tv_fraction=1.0)  # a 32 px sphere needs more smoothing
    cfg = FitConfig(method="semantic", semantic=sem, **FAST)  # type: ignore[arg-type]
    m = fit_scene(labelled_sphere(), cfg).metrics
    assert m["input_miou"] < 0.7 and m["miou"] > 0.85 and m["miou"] > m["input_miou"] + 0.15, m


def tiny_room() -> Scene:
    from perfdata.synthetic import make_room_scene

    return make_room_scene(seed=1, n_views=12, size=32)


def test_fit_export_render_labels_follow_the_logits(tmp_path: Path) -> None:
    from perfdata.pipelines.export import ExportConfig, export_fits
    from perfdata.pipelines.render import RenderConfig, render_store

    from perfdata.store import open_store

    cfg = FitConfig(method="semantic", resolution=(16, 32), steps=100, batch_rays=1024, device="cpu",
                    holdout_every=6)
    (outcome,) = fit_scenes("synthetic", tmp_path, None, tmp_path / "fits", cfg, scenes=[tiny_room()])
    assert outcome.status == "done", outcome.error
    record = read_fit(tmp_path / "fits" / "room_1")
    assert record.method == "semantic" and 0.0 <= record.metrics["miou"] <= 1.0
    assert record.config["semantic"]["threshold"] == 0.5 and record.label_names[0] == "wall"
    export_fits(tmp_path / "fits", str(tmp_path / "s.zarr"), ExportConfig())
    store = open_store(str(tmp_path / "s.zarr"))
    attrs = store.scene_attrs("room_1")
    logits = store.read_array("room_1", "logits")
    labels_arr = store.array("room_1", "labels")
    assert logits.dtype == np.float16 and logits.shape == (attrs.n_voxels, 9)
    assert labels_arr.attrs["confidence_threshold"] == 0.5 and attrs.extra["label_names"][1] == "floor"
    labels = store.read_array("room_1", "labels")
    again = semantic.confident_labels(logits.astype(np.float32), 0.5)  # float16 rounding moves a few near 0.5
    assert np.mean(labels == again) > 0.995 and (labels >= 0).mean() > 0.3
    grid = store.read_scene("room_1")
    render_store(str(tmp_path / "s.zarr"), tmp_path / "r", RenderConfig(poses="train", n_views=2, size=32,
                                                                        device="cpu", what=("rgb", "label")))
    meta = json.loads((tmp_path / "r" / "room_1" / "cameras.json").read_text())
    field_grid = plenoxel.PlenoxelGrid.from_sparse(grid)
    field = semantic.SemanticField(field_grid.links, torch.from_numpy(grid.logits))
    accel = plenoxel.build_accel(field_grid)
    for v in meta["views"]:
        drawn = images.read_labels(tmp_path / "r" / "room_1" / f"{v['name']}.label.png")
        lg, op = semantic.render_camera_logits(field_grid, accel, field, np.array(v["K"]), np.array(v["c2w"]),
                                               v["width"], v["height"])
        argmax = lg.argmax(-1).numpy()
        solid = op.numpy() > 0.5
        assert solid.mean() > 0.9 and np.mean(drawn[solid] == argmax[solid]) > 0.99


def write_room(tmp_path: Path) -> Path:
    from perfdata.synthetic import write_scene

    return write_scene(make_small_room(), tmp_path / "data" / "room")


def make_small_room() -> Scene:
    from perfdata.synthetic import make_room_scene

    return make_room_scene(seed=2, n_views=4, size=16)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code), capsys.readouterr().err


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_room(tmp_path)
    out = tmp_path / "out"
    base = ["fit", "--method", "semantic", "--reader", "synthetic", "--data", str(folder), "--out", str(out)]
    label = folder / "labels" / "0001.png"
    if not label.is_file():
        label = sorted((folder / "labels").iterdir())[1]
    original = label.read_bytes()
    images.write_png(label, np.full((16, 16), 12, np.uint8))
    code, err = run_cli(base, capsys)
    assert code == 2 and str(label) in err and "beyond the 9 label names" in err and not out.exists()
    images.write_png(label, np.zeros((8, 16), np.uint8))
    code, err = run_cli(base, capsys)
    assert code == 2 and str(label) in err and "16x8" in err and not out.exists()
    label.write_bytes(original)
    doc = json.loads((folder / "transforms.json").read_text())
    for f in doc["frames"]:
        f.pop("label_path")
    (folder / "transforms.json").write_text(json.dumps(doc))
    code, err = run_cli(base, capsys)
    assert code == 2 and "no label map" in err and not out.exists()
    code, err = run_cli(["fit", "--reader", "synthetic", "--data", str(folder), "--out", str(out),
                         "--label-noise", "0.5"], capsys)
    assert code == 2 and "options of --method semantic" in err
    with pytest.raises(ConfigError, match="label-noise"):
        SemanticConfig(label_noise=1.5)
    assert FitConfig.from_dict({"method": "semantic", "semantic": {"label_noise": 0.2}}).semantic.label_noise == 0.2


def test_cli_fit_semantic_with_label_regime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_room(tmp_path)
    out = tmp_path / "out"
    main_args = ["fit", "--method", "semantic", "--reader", "synthetic", "--data", str(folder), "--out", str(out),
                 "--resolution", "16", "--steps", "20", "--holdout-every", "4", "--device", "cpu",
                 "--label-noise", "0.5", "--label-frames", "0.5"]
    main(main_args)
    record = read_fit(out / "room")
    assert record.config["semantic"]["label_noise"] == 0.5 and record.config["semantic"]["label_frames"] == 0.5
    assert {"miou", "accuracy", "class_accuracy", "input_miou"} <= set(record.metrics)
    grid = SparseGrid.load(out / "room" / "grid.npz")
    assert grid.logits is not None and grid.logits.shape[1] == 9
