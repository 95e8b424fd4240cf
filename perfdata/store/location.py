"""Where a store lives: a local path or any fsspec URL, as a zarr store object and an fsspec filesystem."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem

from perfdata.errors import InputError
from perfdata.names import check_scene_id
from perfdata.store.schema import SCENES_GROUP


@dataclass(frozen=True)
class Location:
    """A store root. `url` is what the user gave; `fs`/`root` address it through fsspec."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[0]

    @property
    def root(self) -> str:
        return str(fsspec.core.url_to_fs(self.url, **self.storage_options)[1]).rstrip("/")

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def local_path(self) -> Path:
        assert self.is_local, f"{self.url} is not a local path"
        return Path(self.root)

    def scene_key(self, scene_id: str) -> str:
        """`scenes/<id>`; an id that breaks the safe-name rule (perfdata.names) is refused."""
        return f"{SCENES_GROUP}/{check_scene_id(scene_id, self.url)}"

    def zarr_store(self, key: str = "", read_only: bool = True) -> Any:
        """A zarr store object for `key` (a sub-path) under the root."""
        if self.is_local:
            path = self.local_path / key if key else self.local_path
            return zarr.storage.LocalStore(path, read_only=read_only)
        url = self.url.rstrip("/") + ("/" + key if key else "")
        return zarr.storage.FsspecStore.from_url(url, storage_options=self.storage_options, read_only=read_only)

    def read_json(self, key: str) -> dict[str, Any] | None:
        """The JSON document at `key` under the root, or None when absent."""
        path = f"{self.root}/{key}"
        try:
            raw = self.fs.cat_file(path)
        except (FileNotFoundError, OSError):
            return None
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"{self.url}/{key}", f"not valid JSON ({exc})") from None
        return obj if isinstance(obj, dict) else None

    def list_scene_dirs(self) -> list[str]:
        """Scene folder names present under scenes/ (temporary dot-names excluded); needs a listable fs."""
        base = f"{self.root}/{SCENES_GROUP}"
        try:
            entries = self.fs.ls(base, detail=True)
        except (FileNotFoundError, OSError):
            return []
        names = [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
        return sorted(n for n in names if not n.startswith("."))
