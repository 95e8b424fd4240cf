"""The training labels of a semantic fit: reading and checking label maps, and Semantic-NeRF's label regimes
(sparse frames, pixel noise, low resolution, a few clicks per class) applied to them for experiments.

Every regime is deterministic from a numpy Generator; labels are int32 (H, W) maps, -1 = ignore.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from perfdata.models.semantic import IGNORE
from perfdata.pipelines.semantic_config import UPSAMPLE, SemanticConfig

from perfdata.errors import InputError
from perfdata.scene import Frame, Scene, resize


def source_name(frame: Frame, scene_id: str) -> str:
    """The label file of a frame, or `scene/frame` for labels held in memory."""
    return str(frame.labels) if isinstance(frame.labels, (str, Path)) else f"{scene_id}/{frame.name} (labels)"


def n_classes_of(scene: Scene) -> int:
    """Classes of a scene's labels: its label names (a reader without them: InputError)."""
    if not scene.label_names:
        raise InputError(scene.source or scene.scene_id, f"scene {scene.scene_id} has no label names; "
                         "--method semantic needs a reader that gives label maps and their class names")
    return len(scene.label_names)


def read_labels(frame: Frame, scene_id: str, n_classes: int) -> np.ndarray:
    """int32 (H, W) label map of a frame, checked: present, of the frame's size (Frame.load_labels), ids in
    [-1, n_classes)."""
    labels = frame.load_labels()
    if labels is None:
        raise InputError(f"{scene_id}/{frame.name}", "frame has no label map; --method semantic needs labels on "
                         "every frame (a reader that gives label maps)")
    bad = (labels < IGNORE) | (labels >= n_classes)
    if bad.any():
        raise InputError(source_name(frame, scene_id), f"class id {int(labels[bad].flat[0])} is beyond the "
                         f"{n_classes} label names (ids 0..{n_classes - 1}, or -1 / 255 for ignore)")
    return labels


def check_scene_labels(scene: Scene) -> int:
    """Check every frame's label map (before anything is written); returns the number of classes."""
    n_classes = n_classes_of(scene)
    for frame in scene.frames:
        read_labels(frame, scene.scene_id, n_classes)
    return n_classes


def labelled_frames(n_frames: int, fraction: float) -> np.ndarray:
    """(n_frames,) bool: round(fraction * n) (at least 1) frames spread evenly, the first always among them."""
    k = max(1, int(round(fraction * n_frames)))
    keep = np.zeros(n_frames, bool)
    keep[np.unique(np.floor(np.arange(k) * n_frames / k).astype(int))] = True
    return keep


def add_noise(labels: np.ndarray, fraction: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A copy with exactly round(fraction * labelled pixels) labelled pixels set to a uniformly random *other*
    class (n_classes >= 2)."""
    out = labels.copy()
    flat = out.reshape(-1)
    idx = np.flatnonzero(flat >= 0)
    k = int(round(fraction * len(idx)))
    if k == 0 or n_classes < 2:
        return out
    pick = rng.choice(idx, size=k, replace=False)
    flat[pick] = (flat[pick] + rng.integers(1, n_classes, size=k)) % n_classes
    return out


def downscale_labels(labels: np.ndarray, factor: int, upsample: str = "nearest") -> np.ndarray:
    """Labels as given at 1/factor resolution (nearest: each coarse pixel is the label at its centre pixel),
    brought back to (H, W) for supervision. upsample: "nearest" (every pixel takes its coarse cell's label:
    wrong along every boundary), "centres" (only the centre pixel of each coarse cell, where the coarse label
    was sampled; the rest -1), "interior" (the centres, plus every pixel of a cell whose 3x3 coarse
    neighbourhood has one label)."""
    if factor <= 1:
        return labels
    if upsample not in UPSAMPLE:
        raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
    h, w = labels.shape
    small = resize(labels, (max(1, round(h / factor)), max(1, round(w / factor))), "nearest")
    up = resize(small, (h, w), "nearest")
    if upsample == "nearest":
        return up
    out = np.full_like(labels, IGNORE)
    if upsample == "interior":
        pad = np.pad(small, 1, mode="edge")
        sh, sw = small.shape
        same = np.ones(small.shape, bool)
        for dy in range(3):
            for dx in range(3):
                same &= pad[dy : dy + sh, dx : dx + sw] == small
        out = np.where(resize(same, (h, w), "nearest"), up, out)
    rows = np.minimum(((np.arange(small.shape[0]) + 0.5) * h / small.shape[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(small.shape[1]) + 0.5) * w / small.shape[1]).astype(int), w - 1)
    out[np.ix_(rows, cols)] = small  # the pixels the coarse labels were sampled at (resize's nearest rule)
    return out


def keep_clicks(labels: np.ndarray, n_clicks: int, rng: np.random.Generator) -> np.ndarray:
    """Only `n_clicks` random pixels of each class present kept (all of a class with fewer); the rest -1."""
    flat = labels.reshape(-1)
    out = np.full_like(flat, IGNORE)
    for c in np.unique(flat[flat >= 0]):
        idx = np.flatnonzero(flat == c)
        pick = rng.choice(idx, size=min(n_clicks, len(idx)), replace=False)
        out[pick] = c
    return out.reshape(labels.shape)


def degrade(maps: Sequence[np.ndarray], cfg: SemanticConfig, n_classes: int, seed: int) -> list[np.ndarray]:
    """The training labels under cfg's regimes, applied in this order: frames (unlabelled frames become all
    -1), resolution, noise, clicks."""
    rng = np.random.default_rng(seed)
    keep = labelled_frames(len(maps), cfg.label_frames)
    out = []
    for labels, kept in zip(maps, keep, strict=True):
        if not kept:
            out.append(np.full_like(labels, IGNORE))
            continue
        labels = downscale_labels(labels, cfg.label_downscale, cfg.label_upsample)
        if cfg.label_noise > 0:
            labels = add_noise(labels, cfg.label_noise, n_classes, rng)
        if cfg.label_clicks > 0:
            labels = keep_clicks(labels, cfg.label_clicks, rng)
        out.append(labels)
    return out


def check_scenes(scenes: Iterable[Scene]) -> None:
    """`check_scene_labels` of every scene: bad labels are an InputError before any fit writes anything."""
    for scene in scenes:
        check_scene_labels(scene)
