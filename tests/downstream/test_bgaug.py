"""Background augmentation: the label stays, only other same-split scenes' bg renders are used (never their
foreground), the object is rescaled within [0.5, 1.5] and kept inside the frame, and draws are seeded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from perfdata.downstream import bgaug
from perfdata.downstream import loaders as L
from perfdata.pipelines.pack import PackConfig, pack_renders

from perfdata.errors import ConfigError
from perfdata.images import write_png

SIZE = 24
GHOST = np.array([0.5, 0.5, 0.5])


def colours(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene i: foreground (r_i, 0, 0) and background (0, g_i, 1); no two scenes share either."""
    return np.array([0.3 + 0.1 * i, 0.0, 0.0]), np.array([0.0, 0.2 + 0.1 * i, 1.0])


@pytest.fixture(scope="module")
def coded_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 scenes x 4 views whose foreground and background colours name the scene (square objects)."""
    tmp = tmp_path_factory.mktemp("bgaug")
    renders = tmp / "renders"
    rng = np.random.default_rng(0)
    for i in range(6):
        fg, bg = colours(i)
        sid, views = f"s{i}", []
        (renders / sid).mkdir(parents=True)
        for v in range(4):
            mask = np.zeros((SIZE, SIZE), bool)
            y, x, h = *rng.integers(2, 10, 2), int(rng.integers(5, 12))
            mask[y:y + h, x:x + h] = True
            rgb = np.where(mask[..., None], fg, bg)
            name = f"{v:05d}"
            write_png(renders / sid / f"{name}.rgb.png", (rgb * 255 + 0.5).astype(np.uint8))
            write_png(renders / sid / f"{name}.mask.png", mask.astype(np.uint8) * 255)
            ghost = np.where(mask[..., None], GHOST, bg)  # what a bg render keeps where its own object stood
            write_png(renders / sid / f"{name}.bg.png", (ghost * 255 + 0.5).astype(np.uint8))
            views.append({"name": name, "K": np.eye(3).tolist(), "c2w": np.eye(4).tolist(), "width": SIZE,
                          "height": SIZE})
        meta = {"format_version": 1, "scene_id": sid, "class_name": "ab"[i % 2], "views": views,
                "members": ["rgb.png", "mask.png", "bg.png"], "world_from_grid": np.eye(4).tolist()}
        (renders / sid / "cameras.json").write_text(json.dumps(meta))
        (renders / sid / "DONE").write_text("")
    pack_renders(renders, tmp / "shards", PackConfig(maxcount=8, val_fraction=0.34, seed=1))
    return tmp / "shards"


def batches(data: L.ShardData, p: float, seed: int = 0, epoch: int = 0) -> list[dict]:
    cfg = L.ShardLoaderConfig("train", batch_size=100, shuffle_buffer=8, seed=seed, bg_aug=p)
    bank = bgaug.load_backgrounds(data, "train", None, 8)
    pipe = L.shard_pipeline(data, cfg, epoch, bank)
    stages = pipe.pipeline[:-1]  # up to the augmentation: items, not batches
    items = stages[0]
    for stage in stages[1:]:
        items = stage(items) if callable(stage) else items
    return list(items)


def test_augmented_views_keep_label_and_never_use_other_foregrounds(coded_shards: Path) -> None:
    data = L.ShardData.open(coded_shards)
    train, val = set(data.scenes["train"]), set(data.scenes["val"])
    items = batches(data, p=1.0)
    assert len(items) == 4 * len(train) and all(it["bg_from"] for it in items)
    plain = {it["key"]: it for it in batches(data, p=0.0)}
    for it in items:
        own = int(it["scene"][1:])
        other = it["bg_from"]
        assert other in train and other != it["scene"]  # another scene of the same split
        assert it["y"] == plain[it["key"]]["y"]  # the label stays
        img = it["x"].permute(1, 2, 0).numpy().reshape(-1, 3)
        fg_own, _ = colours(own)
        _, bg_other = colours(int(other[1:]))
        # each pixel blends the own foreground with the other scene's background (own bg only at the object's
        # rim through bilinear resizing): never the colour of any other scene's foreground
        for k in range(6):
            if k != own:
                assert np.abs(img - colours(k)[0]).max(axis=1).min() > 0.05
        assert (np.abs(img - bg_other).max(axis=1) < 2 / 255).mean() > 0.3  # mostly the other background
        assert (np.abs(img - fg_own).max(axis=1) < 2 / 255).any()  # the object is there
        assert np.abs(img - GHOST).max(axis=1).min() > 0.05  # the other scene's object region was filled
        assert not any(it["scene"] in val for it in items)


def test_augmentation_is_seeded_and_probability_respected(coded_shards: Path) -> None:
    data = L.ShardData.open(coded_shards)
    a, b, c = batches(data, 0.5), batches(data, 0.5), batches(data, 0.5, seed=1)
    assert all(torch.equal(x["x"], y["x"]) and x["bg_from"] == y["bg_from"] for x, y in zip(a, b, strict=True))
    assert [x["bg_from"] for x in a] != [x["bg_from"] for x in c]
    n_aug = sum(bool(x["bg_from"]) for x in a)
    assert 0 < n_aug < len(a)


def test_paste_alpha_drops_the_rim() -> None:
    mask = torch.zeros(8, 8)
    mask[2:7, 1:6] = 1.0  # 5 x 5
    alpha = bgaug.paste_alpha(mask)
    assert bgaug.mask_box(alpha) == (3, 6, 2, 5) and int(alpha.sum()) == 9
    thin = torch.zeros(8, 8)
    thin[3, 2:6] = 1.0  # a line erodes to nothing: kept as it is
    assert torch.equal(bgaug.paste_alpha(thin), thin)


def test_fill_hole_from_the_surroundings() -> None:
    img = torch.zeros(3, 9, 9)
    img[:, :, :4] = 1.0  # left part white, right part black
    hole = torch.zeros(9, 9, dtype=torch.bool)
    hole[3:6, 1:3] = True  # inside the white part
    img[:, hole] = 0.5
    out = bgaug.fill_hole(img, hole)
    assert torch.allclose(out[:, hole], torch.tensor(1.0)) and torch.equal(out[:, ~hole], img[:, ~hole])
    assert torch.equal(bgaug.fill_hole(img, torch.zeros(9, 9, dtype=torch.bool)), img)


def test_paste_object_scale_and_frame() -> None:
    rgb = torch.zeros(3, 20, 20)
    mask = torch.zeros(20, 20)
    mask[5:15, 6:12] = 1.0  # a 10 x 6 box
    rgb[0][mask > 0] = 1.0
    bg = torch.full((3, 20, 20), 0.5)
    for scale, pos in ((0.5, (0.0, 0.0)), (1.5, (1.0, 1.0)), (3.0, (0.3, 0.9))):
        out, pasted, _ = bgaug.paste_object(rgb, mask, bg, scale, pos)
        box = bgaug.mask_box(pasted)
        assert box is not None
        y0, y1, x0, x1 = box
        s = min(scale, 2.0)  # capped to fit the frame: 10 * 2 = 20 rows
        assert (y1 - y0, x1 - x0) == (round(10 * s), round(6 * s))
        assert 0 <= y0 and y1 <= 20 and 0 <= x0 and x1 <= 20
        assert torch.allclose(out[:, pasted == 0], torch.tensor(0.5))
    empty = torch.zeros(20, 20)
    assert torch.equal(bgaug.paste_object(rgb, empty, bg, 1.0, (0.5, 0.5))[0], rgb)


def test_bank_needs_two_scenes_and_bg_members(shard_dir: Path, coded_shards: Path) -> None:
    data = L.ShardData.open(coded_shards)
    with pytest.raises(ConfigError, match="at least two scenes"):
        bgaug.load_backgrounds(data, "train", None, 8, scenes=[data.scenes["train"][0]])
    cfg = dataclasses.replace(L.ShardLoaderConfig(), bg_aug=0.5)
    with pytest.raises(ConfigError, match="background bank"):
        L.shard_pipeline(data, cfg)
