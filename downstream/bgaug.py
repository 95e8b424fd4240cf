"""Background augmentation (PeRFception's, for 2D classification on renders).

With probability p a training view's object (its rgb where mask.png says foreground) is cut out at its mask's
bounding box (less its one-pixel rim, `paste_alpha`), rescaled by a factor drawn uniformly from [0.5, 1.5] (capped so it fits the frame), and pasted at a
uniformly drawn position that keeps it inside the frame onto a background-only render (`bg.png`) of another
scene of the same split, drawn uniformly among the split's other scenes; the label stays. Only the `bg.png` and
`mask.png` members of other scenes are ever read (the `BackgroundBank`), never their rgb, so no other scene's
foreground can leak in; and the part of a background render where its own object stood (its mask, grown by a
pixel) is filled from the surrounding background (`fill_hole`): the field behind an object was never observed,
so a background render keeps a grey ghost of the object there -- another scene's silhouette, with that scene's
class, which the classifier would otherwise learn as noise on every augmented view. Every draw comes from `numpy.random.default_rng([seed, epoch, rank, worker])`, so a run is reproducible.
A view with an empty mask is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from perfdata.downstream.loaders import IGNORE_2D, ShardData, decode_png, image_tensor, sample_meta, where_of

from perfdata.errors import ConfigError, InputError

SCALE_RANGE = (0.5, 1.5)


@dataclass(frozen=True)
class BackgroundBank:
    """Background-only renders of a split's scenes: scene id -> (k, 3, S, S) float32 in [0, 1]."""

    images: dict[str, torch.Tensor]

    @property
    def scene_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.images))


def fill_hole(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Onion-peel fill: image (3, H, W), hole (H, W) bool -> a new image whose hole pixels are, ring by ring
    from the hole's edge, the mean of their already known 3 x 3 neighbours. No hole (or no known pixel):
    a copy."""
    known = (~hole).float()[None, None]
    if bool(known.all()) or not bool(known.any()):
        return image.clone()
    out = image.clone()[None] * known
    kernel = torch.ones(1, 1, 3, 3)
    while not bool(known.all()):
        count = F.conv2d(known, kernel, padding=1)
        total = F.conv2d(out.view(3, 1, *out.shape[2:]), kernel, padding=1).view(1, 3, *out.shape[2:])
        ring = (count > 0) & (known == 0)
        out = torch.where(ring, total / count.clamp(min=1), out)
        known = torch.where(ring, torch.ones_like(known), known)
    return out[0]


def background_image(sample: dict[str, Any], where: str, size: int | None) -> torch.Tensor:
    """A sample's bg.png (3, S, S) with its own object's region (mask.png > 0.5, grown by one pixel) filled
    from the surrounding background (fill_hole); a sample lacking either member is an InputError."""
    for member in ("bg.png", "mask.png"):
        if member not in sample:
            raise InputError(where, f"sample lacks member {member!r} (background augmentation needs bg and mask renders)")
    bg = image_tensor(decode_png(sample["bg.png"], f"{where}.bg.png"), size)
    mask = decode_png(sample["mask.png"], f"{where}.mask.png")
    mask = image_tensor(mask if mask.ndim == 2 else mask[..., 0], size)[0]
    hole = F.max_pool2d((mask > 0.5).float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
    return fill_hole(bg, hole)


def load_backgrounds(data: ShardData, split: str, size: int | None, per_scene: int,
                     scenes: Iterable[str] = ()) -> BackgroundBank:
    """The first `per_scene` background images (background_image: bg.png with the scene's own object region
    filled) of each scene of `split` (only those in `scenes` when given), read from every shard of the split.
    Fewer than two scenes, or a scene without bg.png / mask.png, is an error."""
    import webdataset as wds

    keep = frozenset(scenes)
    found: dict[str, list[torch.Tensor]] = {}
    pipe = wds.DataPipeline(wds.SimpleShardList(data.urls(split)), data.sample_stage())
    for sample in pipe:
        where = where_of(sample)
        scene = str(sample_meta(sample, where).get("scene_id", ""))
        if (keep and scene not in keep) or len(found.setdefault(scene, [])) >= per_scene:
            continue
        found[scene].append(background_image(sample, where, size))
    if len(found) < 2:
        raise ConfigError(f"background augmentation needs at least two scenes in split {split!r} of {data.root}, "
                          f"found {len(found)}")
    return BackgroundBank({k: torch.stack(v) for k, v in found.items()})


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding box of mask > 0.5 in a (H, W) mask; None when empty."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if len(ys) == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, h, w) -> (C, nh, nw)."""
    if mode == "nearest":
        return F.interpolate(t[None].float(), size=size, mode="nearest")[0].to(t.dtype)
    shrink = size[0] < t.shape[1] or size[1] < t.shape[2]
    return F.interpolate(t[None], size=size, mode="bilinear", antialias=shrink, align_corners=False)[0]


def paste_object(rgb: torch.Tensor, mask: torch.Tensor, bg: torch.Tensor, scale: float,
                 pos: tuple[float, float], seg: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Paste the masked object of `rgb` onto `bg`.

    rgb, bg: (3, H, W) float32; mask: (H, W) in [0, 1]; scale: factor of the object's box (capped to fit);
    pos: (fy, fx) in [0, 1], where the box goes within the free range; seg: optional (H, W) int64 label map.
    Returns (image (3, H, W), pasted mask (H, W), seg with the pasted labels and IGNORE_2D elsewhere, or None).
    A view with an empty mask comes back unchanged.
    """
    assert rgb.shape == bg.shape and rgb.shape[1:] == mask.shape, (
        f"rgb {tuple(rgb.shape)}, bg {tuple(bg.shape)} and mask {tuple(mask.shape)} must agree")
    box = mask_box(mask)
    if box is None:
        return rgb.clone(), mask.clone(), None if seg is None else seg.clone()
    y0, y1, x0, x1 = box
    height, width = mask.shape
    s = min(scale, height / (y1 - y0), width / (x1 - x0))
    nh, nw = max(1, min(height, round((y1 - y0) * s))), max(1, min(width, round((x1 - x0) * s)))
    crop = _resize(rgb[:, y0:y1, x0:x1], (nh, nw), "bilinear")
    alpha = _resize(mask[None, y0:y1, x0:x1], (nh, nw), "bilinear")[0].clamp(0.0, 1.0)
    top, left = round(pos[0] * (height - nh)), round(pos[1] * (width - nw))
    out = bg.clone()
    region = out[:, top:top + nh, left:left + nw]
    out[:, top:top + nh, left:left + nw] = alpha * crop + (1.0 - alpha) * region
    pasted = torch.zeros_like(mask)
    pasted[top:top + nh, left:left + nw] = alpha
    new_seg = None
    if seg is not None:
        new_seg = torch.full_like(seg, IGNORE_2D)
        labels = _resize(seg[None, y0:y1, x0:x1], (nh, nw), "nearest")[0]
        new_seg[top:top + nh, left:left + nw] = torch.where(alpha > 0.5, labels, IGNORE_2D)
    return out, pasted, new_seg


def paste_alpha(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) mask in [0, 1] -> the part of the object that is pasted: the mask eroded by one pixel (3 x 3 min),
    or the mask itself when erosion would leave nothing. A rendered view's boundary pixels blend the object with
    its own background; pasted, they would carry that background's colour (in the train split, the class's
    ground tint) onto the other scene's background, a shortcut around the augmentation."""
    eroded = -F.max_pool2d(-mask[None, None], 3, stride=1, padding=1)[0, 0]
    return eroded if bool((eroded > 0.5).any()) else mask


def augment_stage(src: Iterable[dict[str, Any]], bank: BackgroundBank, p: float, seed: int,
                  epoch: int) -> Iterator[dict[str, Any]]:
    """Decoded training views (with "mask" and "scene") -> views where, with probability p, the object sits on
    another scene's background ("bg_from" names that scene; "" when not augmented). Draws are made for every
    view, so the stream of draws does not depend on the outcome."""
    import webdataset as wds

    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    rng = np.random.default_rng([seed, epoch, rank, worker])
    ids = bank.scene_ids
    for item in src:
        if "x" not in item:
            yield item
            continue
        u, pick, view, scale, fy, fx = rng.random(), rng.random(), rng.random(), *rng.uniform(0, 1, 3)
        others = [s for s in ids if s != item["scene"]]
        item = dict(item)
        mask = paste_alpha(item.pop("mask"))
        item["bg_from"] = ""
        if u < p and others and mask_box(mask) is not None:
            other = others[int(pick * len(others))]
            bgs = bank.images[other]
            scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * float(scale)
            item["x"], _, seg = paste_object(item["x"], mask, bgs[int(view * len(bgs))], scale, (fy, fx),
                                             item.get("seg"))
            if seg is not None:
                item["seg"] = seg
            item["bg_from"] = other
        yield item
