"""Dataset manifests: the facts `perfdata download` knows about PeRFception-CO3D and PeRFception-ScanNet.

The data files are JSON under `perfdata/manifests/` (package data, read through `importlib.resources`, so
they are found the same way from an editable install and from a wheel; the top-level `manifests/README.md`
points there). Each file is validated against the schema below when it is loaded:

```
{
  "format_version": 1,                      # int; only 1 is known
  "dataset": "co3d",                        # must equal the file's stem
  "title": str, "description": str,
  "n_chunks": int > 0,
  "scene_folder": str,                      # pattern of a scene folder, informative
  "scene_files": [str, ...],                # what a scene folder holds, informative ("x/" = a folder)
  "chunks": [                               # exactly ids 0 .. n_chunks-1, in order
    {"id": int, "repo": "owner/name"|null,  # the Hugging Face dataset repo holding the chunk (null: mirrors only)
     "folder": str,                         # repo folder to list ("" = repo root)
     "select": glob (optional)}             # keep only children of `folder` matching it (ScanNet)
  ]
}
```
CO3D chunk NN is the folder `NN/` (scene folders `NN/plenoxel_co3d_<sequence>/`). ScanNet has no chunk
folders: chunk N is every scan of ScanNet scene N (`plenoxel_scannet_sceneNNNN_*/` at the repo root), which
keeps a chunk id stable whatever the listing order.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from perfdata.errors import FormatVersionError, InputError

FORMAT_VERSION = 1
DATASETS = ("co3d", "scannet")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ChunkEntry:
    """One downloadable chunk."""

    id: int
    """Chunk number, 0-based."""
    repo: str | None
    """Hugging Face dataset repo, `owner/name`; None for a dataset only served by mirrors."""
    folder: str
    """Folder of the repo to list; "" is the root."""
    select: str | None = None
    """Glob over the immediate children of `folder`; None takes the whole folder."""

    def owns(self, path: str) -> bool:
        """Whether a repo-relative file path belongs to this chunk."""
        prefix = f"{self.folder}/" if self.folder else ""
        if not path.startswith(prefix):
            return False
        rest = path[len(prefix) :]
        if self.select is None:
            return bool(rest)
        child, sep, _ = rest.partition("/")
        return bool(sep) and fnmatch.fnmatchcase(child, self.select)


@dataclass(frozen=True)
class Manifest:
    """A validated dataset manifest."""

    dataset: str
    title: str
    description: str
    n_chunks: int
    scene_folder: str
    scene_files: tuple[str, ...]
    chunks: tuple[ChunkEntry, ...]

    @property
    def repos(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.repo for c in self.chunks if c.repo is not None))

    def chunk(self, chunk_id: int) -> ChunkEntry:
        if not 0 <= chunk_id < self.n_chunks:
            raise InputError(None, f"{self.dataset}: chunk {chunk_id} is out of range 0-{self.n_chunks - 1}")
        return self.chunks[chunk_id]

    def chunk_of_path(self, path: str) -> int | None:
        """The chunk a repo-relative file path belongs to, or None."""
        head = path.split("/", 1)[0]
        if head.isdigit() and int(head) < self.n_chunks and self.chunks[int(head)].owns(path):
            return int(head)
        match = re.match(r"^plenoxel_scannet_scene(\d{4})_\d+/", path)
        if match and int(match.group(1)) < self.n_chunks and self.chunks[int(match.group(1))].owns(path):
            return int(match.group(1))
        return next((c.id for c in self.chunks if c.owns(path)), None)


def co3d_chunk_of_sequence(sequence: str) -> int:
    """The PeRFception-CO3D chunk of a CO3D sequence name: int(last '_'-field) % 100."""
    last = sequence.rsplit("_", 1)[-1]
    if not last.isdigit():
        raise InputError(None, f"CO3D sequence {sequence!r}: last '_'-field {last!r} is not a number")
    return int(last) % 100


def manifest_names() -> tuple[str, ...]:
    """The datasets with a manifest file."""
    folder = resources.files("perfdata") / "manifests"
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))


def load_manifest(dataset: str) -> Manifest:
    """Load and validate `perfdata/manifests/<dataset>.json`."""
    if dataset not in manifest_names():
        raise InputError(None, f"no manifest for dataset {dataset!r}; known: {', '.join(manifest_names())}")
    resource = resources.files("perfdata") / "manifests" / f"{dataset}.json"
    name = f"perfdata/manifests/{dataset}.json"
    try:
        raw = json.loads(resource.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(name, f"not valid JSON: {exc}") from exc
    return validate_manifest(raw, name, dataset)


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise InputError(where, f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(where, f"{key!r} has type {type(value).__name__}, expected {kind}")
    return value


def validate_manifest(raw: Any, where: str, dataset: str | None = None) -> Manifest:
    """Check a parsed manifest against the schema (module docstring); raise InputError naming `where`."""
    if not isinstance(raw, dict):
        raise InputError(where, "a manifest is a JSON object")
    version = _need(raw, "format_version", int, where)
    if version != FORMAT_VERSION:
        raise FormatVersionError(where, version, FORMAT_VERSION)
    name = _need(raw, "dataset", str, where)
    if dataset is not None and name != dataset:
        raise InputError(where, f"dataset is {name!r}, expected {dataset!r}")
    n_chunks = _need(raw, "n_chunks", int, where)
    if n_chunks <= 0:
        raise InputError(where, f"n_chunks must be positive, got {n_chunks}")
    files = _need(raw, "scene_files", list, where)
    if not all(isinstance(f, str) and f for f in files):
        raise InputError(where, "scene_files must be non-empty strings")
    chunks = tuple(_validate_chunk(c, i, where) for i, c in enumerate(_need(raw, "chunks", list, where)))
    if len(chunks) != n_chunks:
        raise InputError(where, f"{len(chunks)} chunks listed, n_chunks says {n_chunks}")
    return Manifest(
        dataset=name,
        title=_need(raw, "title", str, where),
        description=_need(raw, "description", str, where),
        n_chunks=n_chunks,
        scene_folder=_need(raw, "scene_folder", str, where),
        scene_files=tuple(files),
        chunks=chunks,
    )


def _validate_chunk(raw: Any, index: int, where: str) -> ChunkEntry:
    at = f"{where} chunks[{index}]"
    if not isinstance(raw, dict):
        raise InputError(at, "a chunk is a JSON object")
    unknown = set(raw) - {"id", "repo", "folder", "select"}
    if unknown:
        raise InputError(at, f"unknown keys {sorted(unknown)}")
    chunk_id = _need(raw, "id", int, at)
    if chunk_id != index:
        raise InputError(at, f"id {chunk_id} out of order (expected {index})")
    if "repo" in raw and raw["repo"] is None:
        repo = None
    else:
        repo = _need(raw, "repo", str, at)
    if repo is not None and not _REPO_RE.match(repo):
        raise InputError(at, f"repo {repo!r} is not 'owner/name'")
    folder = _need(raw, "folder", str, at)
    if folder.startswith("/") or ".." in folder.split("/") or folder.endswith("/"):
        raise InputError(at, f"folder {folder!r} must be a plain relative path")
    select = raw.get("select")
    if select is not None and (not isinstance(select, str) or not select or "/" in select):
        raise InputError(at, f"select {select!r} must be a non-empty glob without '/'")
    return ChunkEntry(id=chunk_id, repo=repo, folder=folder, select=select)
