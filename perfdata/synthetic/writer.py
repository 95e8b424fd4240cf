"""Synthetic scenes on disk: the transforms.json form the `blender` reader (alias `synthetic`) reads, and the
`synthesize` stage behind `perfdata synth`.

One scene folder holds images/NNNN.png (RGB uint8), depth/NNNN.npy (float32 z-depth metres, 0 = nothing hit),
masks/NNNN.png (uint8 0 / 255; not for a textured backdrop, whose frames have no masks and no mask_path),
labels/NNNN.png (uint8, 255 = ignore) and transforms.json (nerfstudio keys, OpenGL c2w, plus a "perfdata" block
with kind, class_name, label_names, bounds, background, background_color, seed, and for a textured backdrop
backdrop and capture). The folder is written under a temporary name and renamed, so a folder that exists is complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perfdata import camera, images
from perfdata.atomic import atomic_dir, write_json
from perfdata.errors import ConfigError, InputError
from perfdata.scene import Scene

FORMAT_VERSION = 1
Kind = Literal["objects", "rooms"]


def transforms_json(scene: Scene) -> dict[str, Any]:
    """The transforms.json content of an in-memory synthetic scene (all frames share one K and size)."""
    f0 = scene.frames[0]
    frames = []
    for f in scene.frames:
        if f.width != f0.width or f.height != f0.height or not np.array_equal(f.K, f0.K):
            raise ConfigError(f"scene {scene.scene_id}: frames must share one camera to write transforms.json")
        frames.append({
            "file_path": f"images/{f.name}.png",
            "transform_matrix": camera.opencv_to_opengl(f.c2w).tolist(),
            "depth_file_path": f"depth/{f.name}.npy",
            **({"mask_path": f"masks/{f.name}.png"} if f.mask is not None else {}),
            "label_path": f"labels/{f.name}.png",
        })
    meta = scene.meta
    extras = {"backdrop": meta["backdrop"], "capture": meta["capture"]} if "backdrop" in meta else {}
    return {
        "camera_model": "OPENCV",
        "fl_x": float(f0.K[0, 0]),
        "fl_y": float(f0.K[1, 1]),
        "cx": float(f0.K[0, 2]),
        "cy": float(f0.K[1, 2]),
        "w": int(f0.width),
        "h": int(f0.height),
        "depth_unit_scale_factor": 1.0,
        "frames": frames,
        "perfdata": {
            "format_version": FORMAT_VERSION,
            "kind": meta["kind"],
            "class_name": scene.class_name,
            "label_names": list(scene.label_names or ()),
            "bounds": meta["bounds"],
            "background": scene.background,
            "background_color": meta["background_color"],
            "seed": meta["seed"],
            **extras,
        },
    }


def write_scene(scene: Scene, out_dir: str | Path) -> Path:
    """Write an in-memory synthetic scene (from make_object_scene / make_room_scene) to `out_dir`, atomically:
    the folder appears complete or not at all (an existing one is replaced). Returns the folder."""
    out_dir = Path(out_dir)
    doc = transforms_json(scene)
    with atomic_dir(out_dir) as tmp:
        for sub in ("images", "depth", "labels") + (("masks",) if scene.has_masks else ()):
            (tmp / sub).mkdir()
        for f in scene.frames:
            depth, mask, labels = f.load_depth(), f.load_mask(), f.load_labels()
            assert depth is not None and labels is not None, "synthetic frames have depth and labels"
            images.write_png(tmp / "images" / f"{f.name}.png", f.load_image())
            np.save(tmp / "depth" / f"{f.name}.npy", depth.astype(np.float32), allow_pickle=False)
            if mask is not None:
                images.write_png(tmp / "masks" / f"{f.name}.png", np.where(mask, 255, 0).astype(np.uint8))
            images.write_png(tmp / "labels" / f"{f.name}.png", images.labels_to_png(labels))
        write_json(tmp / "transforms.json", doc)
    return out_dir


def scene_seed(seed: int, index: int, kind: Kind = "objects") -> int:
    """The seed of scene `index` of a `kind` run with `seed`: a fixed function of the three (numpy SeedSequence)."""
    kind_code = ("objects", "rooms").index(kind)
    return int(np.random.SeedSequence([int(seed), int(index), kind_code]).generate_state(1)[0])


@dataclass(frozen=True)
class SynthConfig:
    """What `perfdata synth` makes."""

    kind: Kind
    """"objects" (CO3D-like) or "rooms" (ScanNet-like)."""
    out: Path
    """Dataset root: one folder per scene is written under it."""
    n_scenes: int = 5
    """Number of scenes; object scenes cycle through the shape classes so every class appears."""
    n_views: int = 24
    """Cameras per scene."""
    size: int = 64
    """Image width = height in pixels."""
    seed: int = 0
    """Run seed; scene i uses scene_seed(seed, i, kind)."""
    backdrop: str = "plain"
    """Object scenes: "plain" (constant background, masks) or "textured" (a textured dome and ground, no masks;
    see `ObjectSceneConfig.backdrop`)."""


@dataclass(frozen=True)
class SceneSpec:
    """One planned scene: its folder name, index in the run, seed and (objects) shape class."""

    name: str
    index: int
    seed: int
    shape: str | None


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one planned scene: "written" or "skipped" (already there)."""

    spec: SceneSpec
    path: Path
    status: str
    seconds: float


def plan_scenes(cfg: SynthConfig) -> list[SceneSpec]:
    """The scenes a run makes, in order (names like obj_0000_torus, room_0000)."""
    from perfdata.synthetic.objects import SHAPE_CLASSES

    if cfg.kind not in ("objects", "rooms"):
        raise ConfigError(f"unknown kind {cfg.kind!r}; use objects or rooms")
    if cfg.backdrop != "plain" and cfg.kind != "objects":
        raise ConfigError(f"--backdrop {cfg.backdrop} is for object scenes (kind objects), not {cfg.kind}")
    if cfg.n_scenes < 0 or cfg.n_views < 1 or cfg.size < 1:
        raise ConfigError(f"need scenes >= 0, views >= 1, size >= 1 (got {cfg.n_scenes}, {cfg.n_views}, {cfg.size})")
    specs = []
    for i in range(cfg.n_scenes):
        shape = SHAPE_CLASSES[i % len(SHAPE_CLASSES)] if cfg.kind == "objects" else None
        name = f"obj_{i:04d}_{shape}" if shape else f"room_{i:04d}"
        specs.append(SceneSpec(name, i, scene_seed(cfg.seed, i, cfg.kind), shape))
    return specs


def build_planned(spec: SceneSpec, n_views: int, size: int, backdrop: str = "plain") -> Scene:
    """The in-memory scene of one planned scene (identical every time)."""
    from perfdata.synthetic.objects import ObjectSceneConfig, make_object_scene
    from perfdata.synthetic.rooms import make_room_scene

    if spec.shape is not None:
        return make_object_scene(spec.seed, n_views, size, shape=spec.shape, scene_id=spec.name,
                                 config=ObjectSceneConfig(backdrop=backdrop))
    return make_room_scene(spec.seed, n_views, size, scene_id=spec.name)


def synthesize(cfg: SynthConfig, on_scene: Callable[[SceneOutcome], None] | None = None) -> list[SceneOutcome]:
    """Write the planned scenes under cfg.out, skipping folders that already hold a transforms.json (the atomic
    write makes an existing folder a complete one). `on_scene` is called after each scene (progress)."""
    specs = plan_scenes(cfg)
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise InputError(cfg.out, "output exists and is not a folder")
    outcomes = []
    for spec in specs:
        folder = Path(cfg.out) / spec.name
        start = time.perf_counter()
        status = "skipped"
        if not (folder / "transforms.json").is_file():
            write_scene(build_planned(spec, cfg.n_views, cfg.size, cfg.backdrop), folder)
            status = "written"
        outcome = SceneOutcome(spec, folder, status, time.perf_counter() - start)
        outcomes.append(outcome)
        if on_scene is not None:
            on_scene(outcome)
    return outcomes
