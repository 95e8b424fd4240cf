"""Readers turn a source layout into `Scene`s. Each is a module with two functions:

    list_scenes(root: Path) -> list[str]          ids of the scenes under a dataset root
    load_scene(root: Path, scene_id: str) -> Scene

A root that is itself one scene lists that one scene (its folder name), so `--data ROOT --scenes ID...` works the
same for every source. Modules are imported lazily, by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

from perfdata.errors import ConfigError, InputError
from perfdata.names import check_scene_id
from perfdata.scene import Scene

READERS: dict[str, str] = {
    "blender": "perfdata.readers.blender",
    "synthetic": "perfdata.readers.blender",  # perfdata synth writes transforms.json scenes
    "rgbd": "perfdata.readers.rgbd",
    "scannet": "perfdata.readers.scannet",
    "replica": "perfdata.readers.replica",
    "co3d": "perfdata.readers.co3d",
}


def get_reader(name: str) -> ModuleType:
    """The reader module called `name`; an unknown name is a ConfigError listing the known ones."""
    if name not in READERS:
        raise ConfigError(f"unknown reader {name!r}; known readers: {', '.join(sorted(READERS))}")
    return importlib.import_module(READERS[name])


def list_scenes(reader: str, root: str | Path) -> list[str]:
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    ids = get_reader(reader).list_scenes(root)
    if not ids:
        raise InputError(root, f"no {reader} scenes found here")
    return [check_scene_id(i, root) for i in ids]  # ids come from the data: one safe-name rule


def load_scenes(reader: str, root: str | Path, scene_ids: Sequence[str] | None = None) -> Iterator[Scene]:
    """Load the chosen scenes (all when `scene_ids` is empty) one at a time; an unknown id is an InputError."""
    root = Path(root)
    known = list_scenes(reader, root)
    wanted = list(scene_ids) if scene_ids else known
    missing = [s for s in wanted if s not in known]
    if missing:
        raise InputError(root, f"no scene {', '.join(missing)} (found: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''})")
    module = get_reader(reader)
    for scene_id in wanted:
        yield module.load_scene(root, scene_id)


def scene_dirs(root: Path, is_scene: Callable[[Path], bool]) -> dict[str, Path]:
    """Map scene id -> folder for a root that is one scene or holds scene folders (one level down, sorted)."""
    if is_scene(root):
        return {root.resolve().name: root}
    if not root.is_dir():
        raise InputError(root, "not a folder")
    return {p.name: p for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.is_dir() and is_scene(p)}


def scene_dir(root: Path, scene_id: str, is_scene: Callable[[Path], bool]) -> Path:
    """The folder of one scene under `root` (see `scene_dirs`)."""
    dirs = scene_dirs(root, is_scene)
    if scene_id not in dirs:
        raise InputError(root, f"no scene {scene_id!r} here")
    return dirs[scene_id]
