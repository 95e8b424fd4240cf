"""Readers turn a source layout into `Scene`s. Each is a module with two functions:

    list_scenes(root: Path) -> list[str]          ids of the scenes under a dataset root
    load_scene(root: Path, scene_id: str) -> Scene

A root that is itself one scene lists that one scene (its folder name), so `--data ROOT --scenes ID...` works the
same for every source. Modules are imported lazily, by name.

Reader options: a reader spec is `NAME` or `NAME:KEY=VALUE,KEY=VALUE` (e.g. `co3d:min_quality=0.5,depth=off`).
A reader that takes options defines a frozen dataclass `Options` (defaults = plain `NAME`); its two functions
then take it as `options=`. Values are parsed by the field's type: numbers, `on/off/true/false/yes/no/1/0` for
booleans, text otherwise; an unknown key or a bad value is a ConfigError listing what the reader accepts. The
spec string travels as it is (picklable, to executors) and is parsed where a reader is used.

Listing a scene also checks its index files (pose files, camera models, image counts), so malformed input stops
`fit` and `scenes inspect` before anything is written; per-image problems surface when a frame loads.

Scene ids come from the data (folder names, CO3D sequence names) and are untrusted: every id a reader yields
passes `check_scene_id` (`perfdata.names`, the one rule: no separators, no `..`, not absolute, no NUL or control
characters, at most 200 bytes, no leading dot).
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from perfdata.errors import ConfigError, InputError
from perfdata.names import check_scene_id  # re-exported: readers import it from here
from perfdata.scene import Scene

READERS: dict[str, str] = {
    "blender": "perfdata.readers.blender",
    "synthetic": "perfdata.readers.blender",  # perfdata synth writes transforms.json scenes
    "rgbd": "perfdata.readers.rgbd",
    "scannet": "perfdata.readers.scannet",
    "replica": "perfdata.readers.replica",
    "co3d": "perfdata.readers.co3d",
    "llff": "perfdata.readers.llff",
    "colmap": "perfdata.readers.colmap",
}
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def parse_reader_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME[:KEY=VALUE,...]` -> (name, {key: value}); a malformed spec is a ConfigError."""
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"reader option {item!r} in {spec!r} must be KEY=VALUE")
        options[key.strip()] = value.strip()
    return name.strip(), options


def _coerce(value: str, kind: Any, key: str, spec: str) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    kind = args[0] if args else kind
    if kind is bool:
        if value.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"reader option {key}={value!r} in {spec!r}: expected on or off")
        return value.lower() in _TRUE
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"reader option {key}={value!r} in {spec!r}: expected a {kind.__name__}") from None


def _options(module: ModuleType, name: str, raw: dict[str, str], spec: str) -> Any:
    cls = getattr(module, "Options", None)
    if cls is None:
        if raw:
            raise ConfigError(f"reader {name!r} takes no options (got {', '.join(raw)})")
        return None
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ConfigError(f"reader {name!r} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    return cls(**{k: _coerce(v, hints[k], k, spec) for k, v in raw.items()})


@dataclass(frozen=True)
class Reader:
    """A reader module with its parsed options; `list_scenes` / `load_scene` pass the options on."""

    name: str
    module: ModuleType
    options: Any = None

    def list_scenes(self, root: Path) -> list[str]:
        kwargs = {} if self.options is None else {"options": self.options}
        return list(self.module.list_scenes(Path(root), **kwargs))

    def load_scene(self, root: Path, scene_id: str) -> Scene:
        kwargs = {} if self.options is None else {"options": self.options}
        scene: Scene = self.module.load_scene(Path(root), scene_id, **kwargs)
        return scene


def get_reader(spec: str) -> Reader:
    """The reader of a spec (`NAME` or `NAME:KEY=VALUE,...`); an unknown name is a ConfigError listing the
    known ones, an unknown option one listing the reader's options."""
    name, raw = parse_reader_spec(spec)
    if name not in READERS:
        raise ConfigError(f"unknown reader {name!r}; known readers: {', '.join(sorted(READERS))}")
    module = importlib.import_module(READERS[name])
    return Reader(name, module, _options(module, name, raw, spec))


def list_scenes(reader: str, root: str | Path) -> list[str]:
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    bound = get_reader(reader)
    ids = bound.list_scenes(root)
    if not ids:
        raise InputError(root, f"no {bound.name} scenes found here")
    return [check_scene_id(i, root) for i in ids]  # every reader, also a new one: the one safe-name rule


def load_scenes(reader: str, root: str | Path, scene_ids: Sequence[str] | None = None) -> Iterator[Scene]:
    """Load the chosen scenes (all when `scene_ids` is empty) one at a time; an unknown id is an InputError."""
    root = Path(root)
    known = list_scenes(reader, root)
    wanted = list(scene_ids) if scene_ids else known
    missing = [s for s in wanted if s not in known]
    if missing:
        raise InputError(root, f"no scene {', '.join(missing)} (found: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''})")
    bound = get_reader(reader)
    for scene_id in wanted:
        yield bound.load_scene(root, scene_id)


def scene_dirs(root: Path, is_scene: Callable[[Path], bool]) -> dict[str, Path]:
    """Map scene id -> folder for a root that is one scene or holds scene folders (one level down, sorted;
    names starting with '.' are skipped). Every id passes `check_scene_id`."""
    if is_scene(root):
        name = root.resolve().name
        return {check_scene_id(name, root): root}
    if not root.is_dir():
        raise InputError(root, "not a folder")
    return {check_scene_id(p.name, p): p for p in sorted(root.iterdir())
            if not p.name.startswith(".") and p.is_dir() and is_scene(p)}


def scene_dir(root: Path, scene_id: str, is_scene: Callable[[Path], bool]) -> Path:
    """The folder of one scene under `root` (see `scene_dirs`)."""
    dirs = scene_dirs(root, is_scene)
    if scene_id not in dirs:
        raise InputError(root, f"no scene {scene_id!r} here")
    return dirs[scene_id]
