"""The scene format every reader returns and every field fits (DESIGN.md section 3).

A `Scene` holds frames (posed images with optional depth, mask and label map), the train / held-out split, an
optional point cloud, the class name and the normalisation `world_from_grid`: the similarity (rotation, uniform
scale, translation) that maps the fit's cube [-1, 1]^3 to the source's metric world frame.

Frames load lazily: a frame's image, depth, mask and labels are each a `Source` -- a path, an array, or a
callable returning an array -- decoded only when `load_*` is called.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perfdata import camera, images
from perfdata.errors import FormatVersionError, InputError
from perfdata.names import check_scene_id

SCENE_FORMAT_VERSION = 1

Source = str | Path | np.ndarray | Callable[[], np.ndarray] | None
Split = Literal["train", "test"]


def _load(source: Source, path_loader: Callable[[Path], np.ndarray]) -> np.ndarray | None:
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, (str, Path)):
        return path_loader(Path(source))
    return source()


def _source_name(source: Source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


@dataclass(frozen=True)
class Prescaled:
    """The colour image of a frame already stored at a smaller size (LLFF's images_4/, images_8/): `factor` is
    the nominal 1/factor of the frame's size, `width` x `height` the file's real size."""

    factor: float
    width: int
    height: int
    image: Source

    def load(self) -> np.ndarray:
        img = _load(self.image, lambda p: images.read_rgba(p)[0])
        assert img is not None
        if img.shape[:2] != (self.height, self.width):
            raise InputError(_source_name(self.image), f"image is {img.shape[1]}x{img.shape[0]}, expected "
                             f"{self.width}x{self.height} (1/{self.factor:g} of the full size)")
        return img


@dataclass(frozen=True)
class Frame:
    """One posed image.

    Attributes:
        name: a name unique within the scene (usually the image file's stem).
        K: (3, 3) intrinsics in pixels for an image of `width` x `height`.
        c2w: (4, 4) camera-to-world, OpenCV axes, metres.
        image: colour source; files decode to float32 (H, W, 3) in [0, 1].
        depth: optional z-depth source, float32 (H, W) metres, 0 = unknown. Path sources: `.npy` float metres, or a uint16
            image in millimetres unless `depth_scale` says otherwise (units per metre).
        mask: optional foreground mask source, bool (H, W). For RGBA images, alpha is the mask.
        labels: optional label map source, int32 (H, W), -1 = ignore.
        split: "train" or "test" (held out).
        prescaled: smaller stored copies of the colour image; `downscaled(f)` starts from the one with the
            largest factor <= f instead of resampling `image` (which may then be absent: a loader that raises).
    """

    name: str
    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    image: Source
    depth: Source = None
    mask: Source = None
    labels: Source = None
    split: Split = "train"
    depth_scale: float = 1000.0
    prescaled: tuple[Prescaled, ...] = ()

    def load_image(self) -> np.ndarray:
        """float32 (H, W, 3) in [0, 1]; an RGBA file is returned as its RGB (see `load_mask`)."""
        img = _load(self.image, lambda p: images.read_rgba(p)[0])
        assert img is not None
        return self._check_size(img, self.image, "image")

    def load_depth(self) -> np.ndarray | None:
        """float32 (H, W) z-depth in metres, 0 = unknown; None when the frame has no depth."""
        depth = _load(self.depth, functools.partial(images.read_depth, scale=self.depth_scale))
        return None if depth is None else self._check_size(depth.astype(np.float32), self.depth, "depth")

    def load_mask(self) -> np.ndarray | None:
        """bool (H, W) foreground mask; None when the frame has none."""
        mask = _load(self.mask, images.read_mask)
        return None if mask is None else self._check_size(mask.astype(bool), self.mask, "mask")

    def load_labels(self) -> np.ndarray | None:
        """int32 (H, W) class ids, -1 = ignore; None when the frame has none."""
        labels = _load(self.labels, images.read_labels)
        return None if labels is None else self._check_size(labels.astype(np.int32), self.labels, "labels")

    def _check_size(self, arr: np.ndarray, source: Source, what: str) -> np.ndarray:
        if arr.shape[:2] != (self.height, self.width):
            raise InputError(
                _source_name(source),
                f"{what} is {arr.shape[1]}x{arr.shape[0]} but the intrinsics are for {self.width}x{self.height}",
            )
        return arr

    def downscaled(self, factor: float) -> Frame:
        """The same camera with images resized by 1/factor (area averaging for colour and depth, nearest for
        masks and labels), starting from a `prescaled` copy when there is one (its real size is kept when its
        factor is `factor` exactly). Lazy: nothing is decoded until a `load_*` call."""
        if factor == 1:
            return self
        width, height = max(1, round(self.width / factor)), max(1, round(self.height / factor))
        fits = [p for p in self.prescaled if p.factor <= factor * (1 + 1e-9)]
        pre = max(fits, key=lambda p: p.factor) if fits else None
        if pre is not None and np.isclose(pre.factor, factor):
            width, height = pre.width, pre.height
        K = camera.scale_intrinsics(self.K, width / self.width, height / self.height)

        def resized(loader: Callable[[], np.ndarray | None], kind: str) -> Callable[[], np.ndarray] | None:
            if loader is None:
                return None
            return functools.partial(_resize_loaded, loader, (height, width), kind)

        return dataclasses.replace(
            self,
            K=K,
            width=width,
            height=height,
            image=resized(self.load_image if pre is None else pre.load, "area"),
            depth=None if self.depth is None else resized(self.load_depth, "depth"),
            mask=None if self.mask is None else resized(self.load_mask, "nearest"),
            labels=None if self.labels is None else resized(self.load_labels, "nearest"),
            prescaled=(),
        )


def _resize_loaded(loader: Callable[[], np.ndarray | None], size: tuple[int, int], kind: str) -> np.ndarray:
    arr = loader()
    assert arr is not None
    return resize(arr, size, kind)


def resize(arr: np.ndarray, size: tuple[int, int], kind: str = "area") -> np.ndarray:
    """Resize (H, W[, C]) to size (h, w). kind: "area" (box average, any ratio), "depth" (average of the
    known values only, so unknown zeros do not drag depth towards the camera) or "nearest"."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    if kind == "nearest":
        rows = np.minimum(((np.arange(h) + 0.5) * arr.shape[0] / h).astype(int), arr.shape[0] - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * arr.shape[1] / w).astype(int), arr.shape[1] - 1)
        return arr[rows][:, cols]
    import torch  # only the averaging kinds need it (a slow first import)
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if kind == "depth":
        valid = (t > 0).float()
        num = F.adaptive_avg_pool2d(t * valid, (h, w))
        den = F.adaptive_avg_pool2d(valid, (h, w))
        out = torch.where(den > 0.5, num / den.clamp_min(1e-8), torch.zeros_like(num))
    else:
        out = F.adaptive_avg_pool2d(t, (h, w))
    out = out[0, 0] if arr.ndim == 2 else out[0].permute(1, 2, 0)
    return out.numpy().astype(arr.dtype if arr.dtype.kind == "f" else np.float32)


@dataclass(frozen=True)
class Scene:
    """A posed capture, ready to fit.

    Attributes:
        scene_id: id unique within its dataset root (folder name unless the source names scenes).
        frames: the frames, in capture order.
        world_from_grid: (4, 4) similarity mapping the fit cube [-1, 1]^3 to the metric world frame.
        class_name: the scene's object class (object-centric datasets), else None.
        label_names: names of the label ids used by the frames' label maps (index = id), else None.
        points: optional (n, 3) world points (sparse reconstruction or mesh vertices).
        point_labels: optional (n,) int labels of `points`, -1 = ignore.
        background: "white", "black" or None (unknown: a fit learns it).
        source: where the scene came from, e.g. "blender:/data/lego".
        meta: reader-specific extras, JSON-serialisable.
    """

    scene_id: str
    frames: tuple[Frame, ...]
    world_from_grid: np.ndarray
    class_name: str | None = None
    label_names: tuple[str, ...] | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    background: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    format_version: int = SCENE_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != SCENE_FORMAT_VERSION:
            raise FormatVersionError(self.source or self.scene_id, self.format_version, SCENE_FORMAT_VERSION)
        if not self.frames:
            raise InputError(self.source or self.scene_id, "scene has no frames")
        check_scene_id(self.scene_id, self.source or None)  # ids come from the data: one safe-name rule

    @property
    def train_frames(self) -> tuple[Frame, ...]:
        return tuple(f for f in self.frames if f.split == "train")

    @property
    def heldout_frames(self) -> tuple[Frame, ...]:
        return tuple(f for f in self.frames if f.split == "test")

    @property
    def has_depth(self) -> bool:
        return all(f.depth is not None for f in self.frames)

    @property
    def has_labels(self) -> bool:
        return all(f.labels is not None for f in self.frames)

    @property
    def has_masks(self) -> bool:
        return all(f.mask is not None for f in self.frames)

    def with_holdout(self, every: int) -> Scene:
        """Frame i is held out when i % every == 0 (the LLFF / PeRFception convention); every <= 0: none."""
        frames = tuple(
            dataclasses.replace(f, split="test" if every > 0 and i % every == 0 else "train")
            for i, f in enumerate(self.frames)
        )
        return dataclasses.replace(self, frames=frames)

    def downscaled(self, factor: float) -> Scene:
        return dataclasses.replace(self, frames=tuple(f.downscaled(factor) for f in self.frames))

    def select(self, indices: Sequence[int]) -> Scene:
        return dataclasses.replace(self, frames=tuple(self.frames[i] for i in indices))

    def grid_to_world(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) grid coordinates -> (n, 3) world coordinates."""
        return apply_transform(self.world_from_grid, points)

    def world_to_grid(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) world coordinates -> (n, 3) grid coordinates."""
        return apply_transform(np.linalg.inv(self.world_from_grid), points)

    def summary(self) -> dict[str, Any]:
        """What `perfdata scenes inspect` prints: counts, sizes, intrinsics, what is available, normalisation."""
        f0 = self.frames[0]
        sizes = sorted({(f.width, f.height) for f in self.frames})
        scale, _, translation = decompose_similarity(self.world_from_grid)
        return {
            "scene_id": self.scene_id,
            "source": self.source,
            "frames": len(self.frames),
            "train": len(self.train_frames),
            "heldout": len(self.heldout_frames),
            "resolution": [list(s) for s in sizes],
            "fx": float(f0.K[0, 0]),
            "fy": float(f0.K[1, 1]),
            "cx": float(f0.K[0, 2]),
            "cy": float(f0.K[1, 2]),
            "depth": self.has_depth,
            "masks": self.has_masks,
            "labels": self.has_labels,
            "points": 0 if self.points is None else len(self.points),
            "class_name": self.class_name,
            "capture": self.meta.get("capture"),
            "grid_scale": scale,
            "grid_center": translation.tolist(),
        }


def apply_transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine transform to (n, 3) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


def similarity(scale: float, translation: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) world_from_grid = [s R | t]."""
    T = np.eye(4)
    T[:3, :3] = scale * (np.eye(3) if rotation is None else np.asarray(rotation))
    T[:3, 3] = translation
    return T


def decompose_similarity(T: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(4, 4) similarity -> (scale, rotation (3, 3), translation (3,)); raises if T is not a similarity."""
    A = np.asarray(T, dtype=np.float64)[:3, :3]
    scale = float(np.cbrt(np.linalg.det(A)))
    if scale <= 0 or not np.allclose(A @ A.T, scale**2 * np.eye(3), rtol=1e-4, atol=1e-8 * scale**2):
        raise ValueError("world_from_grid is not a similarity (rotation, uniform scale, translation)")
    return scale, A / scale, np.asarray(T, dtype=np.float64)[:3, 3].copy()


def normalisation_from_bounds(lo: np.ndarray, hi: np.ndarray, margin: float = 1.1) -> np.ndarray:
    """world_from_grid whose cube [-1, 1]^3 covers the box [lo, hi] (grown by `margin`) as a cube."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    half = 0.5 * float(np.max(hi - lo)) * margin
    return similarity(max(half, 1e-6), 0.5 * (lo + hi))


def normalisation_from_points(points: np.ndarray, margin: float = 1.1, percentile: float = 0.5) -> np.ndarray:
    """Normalisation covering a point cloud; `percentile` trims outliers at each end of each axis."""
    points = np.asarray(points, dtype=np.float64)
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) == 0:
        raise ValueError("no finite points to normalise from")
    lo = np.percentile(points, percentile, axis=0)
    hi = np.percentile(points, 100 - percentile, axis=0)
    return normalisation_from_bounds(lo, hi, margin)


def normalisation_from_cameras(frames: Sequence[Frame]) -> np.ndarray:
    """Normalisation for an inward-looking capture without depth: the centre is the point nearest to all optical
    axes (least squares); the half-size is the half-width of the view frustum at that point, i.e. what fills
    the images (for lego: 4.03 m away, 0.69 rad field of view -> 1.45)."""
    centres = np.stack([f.c2w[:3, 3] for f in frames])
    centre = camera.nearest_point_to_axes(centres, np.stack([f.c2w[:3, 2] for f in frames]))
    dist = np.linalg.norm(centres - centre, axis=1)
    half_fov = np.array([np.arctan(0.5 * min(f.width / f.K[0, 0], f.height / f.K[1, 1])) for f in frames])
    half = float(np.median(dist * np.tan(half_fov)))
    return similarity(half, centre)


def normalisation_from_depth(frames: Sequence[Frame], max_frames: int = 16, stride: int = 4) -> np.ndarray:
    """Normalisation covering the back-projected depth of up to `max_frames` frames (every `stride`-th pixel)."""
    picks = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    pts = []
    for i in picks:
        f = frames[i]
        depth = f.load_depth()
        if depth is None:
            continue
        sub = np.zeros_like(depth)
        sub[::stride, ::stride] = depth[::stride, ::stride]
        pts.append(camera.backproject(sub, f.K, f.c2w)[0])
    if not pts:
        raise ValueError("no frame has depth")
    return normalisation_from_points(np.concatenate(pts), margin=1.05, percentile=1.0)


def normalise(frames: Sequence[Frame], points: np.ndarray | None = None) -> np.ndarray:
    """Choose world_from_grid: from points if given, else from depth if every frame has it, else from cameras."""
    if points is not None and len(points) > 0:
        return normalisation_from_points(points)
    if all(f.depth is not None for f in frames):
        return normalisation_from_depth(frames)
    return normalisation_from_cameras(frames)


def check_format_version(found: Any, path: str | Path) -> None:
    if found != SCENE_FORMAT_VERSION:
        raise FormatVersionError(path, found, SCENE_FORMAT_VERSION)
