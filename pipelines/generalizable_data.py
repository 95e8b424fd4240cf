"""Scenes as the generalizable field sees them: every frame's image, projection and camera centre in the scene's
cube frame, depth and labels (mapped into the model's label space), the background colour, and the choice of
source views.

Source views are chosen one of two ways (`SOURCE_CHOICES`), by distance between camera poses (centre in the
cube frame and viewing axis):
- spread: farthest-point sampling from one frame, one set for the whole scene (pixelNeRF's protocol): on a ring
  of cameras they come out evenly spread, in a room they look in different directions. Evaluation starts at
  frame 0; training at a random frame.
- nearest: per target view, the k other frames nearest to it (IBRNet's, GNT's and GSN's protocol for rooms):
  what the target sees is mostly in its sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from perfdata import camera
from perfdata.errors import InputError
from perfdata.scene import Frame, Scene


@dataclass(frozen=True)
class SceneTensors:
    """One scene, loaded (n frames of H x W).

    Attributes:
        images: (n, 3, H, W) float32 colours in [0, 1].
        proj: (n, 3, 4) cube point -> pixel projection (uvz = proj @ [x, 1]).
        centres: (n, 3) camera centres, cube frame. axes: (n, 3) unit viewing axes, cube frame.
        K, c2w: (n, 3, 3) and (n, 4, 4) float64 numpy cameras in the metric world frame.
        world_from_grid: (4, 4) numpy similarity.
        depth: (n, H, W) float32 z-depth (0 = unknown) or None. labels: (n, H, W) int64 model class ids
            (-1 = ignore) or None.
        background: (3,) colour behind the cube.
    """

    scene_id: str
    images: torch.Tensor
    proj: torch.Tensor
    centres: torch.Tensor
    axes: torch.Tensor
    K: np.ndarray
    c2w: np.ndarray
    world_from_grid: np.ndarray
    depth: torch.Tensor | None
    labels: torch.Tensor | None
    background: torch.Tensor
    where: str

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def to(self, device: torch.device) -> SceneTensors:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SceneTensors(self.scene_id, self.images.to(device), self.proj.to(device), self.centres.to(device),
                            self.axes.to(device), self.K, self.c2w, self.world_from_grid, move(self.depth),
                            move(self.labels), self.background.to(device), self.where)


def frame_where(frame: Frame, scene: Scene) -> str:
    """What names a frame in an error: its image file, else the scene's source and the frame name."""
    if isinstance(frame.image, (str, Path)):
        return str(frame.image)
    return f"{scene.source or scene.scene_id}:{frame.name}"


def check_scene(scene: Scene, n_source: int, image_size: tuple[int, int] | None) -> None:
    """InputError unless the scene has at least n_source + 1 frames, all of `image_size` (H, W) when given."""
    if len(scene.frames) < n_source + 1:
        where = scene.source or scene.scene_id
        raise InputError(where, f"scene {scene.scene_id} has {len(scene.frames)} views; --source-views {n_source} "
                                f"needs at least {n_source + 1} (sources and a target)")
    for f in scene.frames:
        if image_size is not None and (f.height, f.width) != tuple(image_size):
            raise InputError(frame_where(f, scene), f"image is {f.width}x{f.height} but the model takes "
                                                    f"{image_size[1]}x{image_size[0]} images")


def label_map(scene_names: Sequence[str] | None, model_names: Sequence[str]) -> np.ndarray | None:
    """(len(scene_names),) int64 model id of each scene label id (-1 where the model lacks the name)."""
    if scene_names is None:
        return None
    index = {n: i for i, n in enumerate(model_names)}
    return np.array([index.get(n, -1) for n in scene_names], dtype=np.int64)


def union_label_names(scenes: Sequence[Scene]) -> tuple[str, ...]:
    """Label names of all labelled scenes, in order of first appearance."""
    names: list[str] = []
    for s in scenes:
        if s.has_labels and s.label_names is not None:
            names += [n for n in s.label_names if n not in names]
    return tuple(names)


def projection(K: np.ndarray, c2w: np.ndarray, world_from_grid: np.ndarray) -> np.ndarray:
    """(3, 4) pixel projection of cube points for a camera K (3, 3), c2w (4, 4)."""
    return K @ (np.linalg.inv(c2w) @ world_from_grid)[:3]


def known_background(scene: Scene) -> np.ndarray | None:
    """(3,) background colour the scene declares (white / black, or meta background_color), else None."""
    if scene.background in ("white", "black"):
        return np.full(3, 1.0 if scene.background == "white" else 0.0)
    colour = scene.meta.get("background_color") if isinstance(scene.meta, dict) else None
    return None if colour is None else np.asarray(colour, dtype=np.float64)


def pose_in_cube(c2w: np.ndarray, grid_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A camera's centre and unit viewing axis (3,) each in the cube frame, from its c2w (4, 4)."""
    axis = grid_from_world[:3, :3] @ c2w[:3, 2]
    return grid_from_world[:3, :3] @ c2w[:3, 3] + grid_from_world[:3, 3], axis / np.linalg.norm(axis)


def load_scene_tensors(scene: Scene, model_names: Sequence[str], labels: bool = True) -> SceneTensors:
    """Load every frame of `scene` (sizes must agree; check first with `check_scene`)."""
    grid_from_world = np.linalg.inv(scene.world_from_grid)
    imgs, projs, centres, axes, depths, labs = [], [], [], [], [], []
    mapping = label_map(scene.label_names, model_names) if labels and scene.has_labels else None
    with_depth = scene.has_depth
    for f in scene.frames:
        imgs.append(np.ascontiguousarray(f.load_image().transpose(2, 0, 1)))
        projs.append(projection(f.K, f.c2w, scene.world_from_grid))
        centre, axis = pose_in_cube(f.c2w, grid_from_world)
        centres.append(centre)
        axes.append(axis)
        if with_depth:
            depth = f.load_depth()
            assert depth is not None  # scene.has_depth: every frame has one
            depths.append(depth)
        if mapping is not None:
            lab = f.load_labels()
            assert lab is not None
            ok = (lab >= 0) & (lab < len(mapping))
            labs.append(np.where(ok, mapping[np.clip(lab, 0, len(mapping) - 1)], -1))
    images = torch.from_numpy(np.stack(imgs)).float()
    bg = known_background(scene)
    return SceneTensors(
        scene.scene_id, images, torch.from_numpy(np.stack(projs)).float(),
        torch.from_numpy(np.stack(centres)).float(), torch.from_numpy(np.stack(axes)).float(),
        np.stack([f.K for f in scene.frames]).astype(np.float64), np.stack([f.c2w for f in scene.frames]).astype(np.float64),
        np.asarray(scene.world_from_grid, dtype=np.float64),
        torch.from_numpy(np.stack(depths)).float() if with_depth else None,
        torch.from_numpy(np.stack(labs)).long() if labs else None,
        torch.from_numpy(bg).float() if bg is not None else border_colour(images), scene.source or scene.scene_id,
    )


def border_colour(images: torch.Tensor) -> torch.Tensor:
    """(3,) median colour of the image borders (n, 3, H, W): the background guess of a scene that declares none."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=-1)
    return border.permute(1, 0, 2).reshape(3, -1).median(dim=1).values


def spread_views(centres: torch.Tensor, axes: torch.Tensor, k: int, start: int = 0,
                 exclude: Sequence[int] = ()) -> list[int]:
    """k frame indices by farthest-point sampling over (centre, axis) (n, 3) each, starting at `start`."""
    feats = torch.cat([centres, axes], dim=-1).double()
    allowed = torch.ones(len(feats), dtype=torch.bool)
    allowed[list(exclude)] = False
    chosen = [start]
    dist = (feats - feats[start]).norm(dim=-1)
    while len(chosen) < k:
        dist = dist.masked_fill(~allowed, -1.0)
        dist[chosen] = -1.0
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (feats - feats[nxt]).norm(dim=-1))
    return chosen


def nearest_to_pose(centres: torch.Tensor, axes: torch.Tensor, centre: torch.Tensor, axis: torch.Tensor, k: int,
                    exclude: Sequence[int] = ()) -> list[int]:
    """The k frames whose (centre, axis) are nearest to (centre, axis), nearest first; never `exclude` nor a
    frame at that very pose (a view is not its own source)."""
    feats = torch.cat([centres, axes], dim=-1).double()
    d = (feats - torch.cat([centre, axis]).double()).norm(dim=-1)
    d[list(exclude)] = float("inf")
    d[d < 1e-6] = float("inf")
    return [int(i) for i in torch.argsort(d, stable=True)[:k]]


def nearest_views(centres: torch.Tensor, axes: torch.Tensor, target: int, k: int) -> list[int]:
    """The k frames nearest to frame `target` (`nearest_to_pose`), never `target` itself."""
    return nearest_to_pose(centres, axes, centres[target], axes[target], k, exclude=[target])


def nearest_view(centres: torch.Tensor, axes: torch.Tensor, target: int, among: Sequence[int]) -> int:
    """The frame of `among` whose (centre, axis) is nearest to frame `target`'s."""
    feats = torch.cat([centres, axes], dim=-1)
    d = (feats[list(among)] - feats[target]).norm(dim=-1)
    return int(among[int(d.argmin())])


SOURCE_CHOICES = ("spread", "nearest")


def sources_for(st: SceneTensors, choice: str, k: int, target: int, start: int = 0) -> list[int]:
    """The k source frames of `st` for rendering frame `target` (module docstring; `start`: spread's first)."""
    if choice == "nearest":
        return nearest_views(st.centres.cpu(), st.axes.cpu(), target, k)
    return spread_views(st.centres.cpu(), st.axes.cpu(), k, start)


def eval_targets(n_frames: int, sources: Sequence[int], n_views: int) -> list[int]:
    """Up to n_views target frames, evenly spaced over the frames that are not sources."""
    rest = [i for i in range(n_frames) if i not in set(sources)]
    if len(rest) <= n_views:
        return rest
    return [rest[int(i)] for i in np.linspace(0, len(rest) - 1, n_views).round().astype(int)]


def frame_rays(st: SceneTensors, index: int, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Cube rays of frame `index` (all pixels, row-major, or the flat pixel ids `pixels`): origins (m, 3),
    unit dirs (m, 3), z_scale (m,) on the CPU."""
    from perfdata.models.plenoxel import rays_to_cube

    h, w = st.size
    uv = camera.pixel_grid(w, h)
    if pixels is not None:
        uv = uv[pixels.cpu().numpy()]
    o, d = camera.pixel_rays(st.K[index], st.c2w[index], uv)
    return rays_to_cube(np.linalg.inv(st.world_from_grid), torch.from_numpy(o), torch.from_numpy(d))
