"""`validate_store`: schema, versions, shapes, value ranges, NaNs and every chunk of a dataset store.

Problems are collected, not raised, so one run names everything wrong; each names the scene, the array and,
for unreadable data, the chunk key (e.g. `scenes/chair_1/sh/c/0/3`). Every chunk is decoded, so its crc32c
checksum is checked: a single flipped byte anywhere in a chunk is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from perfdata.errors import PerfdataError
from perfdata.store import background
from perfdata.store.background import GROUP as BACKGROUND_GROUP
from perfdata.store.chunks import chunk_key, has_checksum, iter_chunks, local_array_dir, read_chunk
from perfdata.store.codecs import quiet_numcodecs
from perfdata.store.location import Location
from perfdata.store.reader import open_store
from perfdata.store.schema import ARRAYS, PER_VOXEL, REQUIRED_ARRAYS, SCENE_KEY, SceneAttrs


@dataclass(frozen=True)
class Problem:
    where: str
    """The store path the problem is at: a scene, an array or a chunk key."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class StoreReport:
    url: str
    n_scenes: int
    n_voxels: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_store(url: str, storage_options: dict[str, Any] | None = None) -> StoreReport:
    """Check a store end to end (reads every chunk once)."""
    try:
        store = open_store(url, storage_options)
    except PerfdataError as exc:
        return StoreReport(url, 0, 0, (Problem(url, str(exc)),))
    problems: list[Problem] = []
    loc = store.loc
    listed = set(store.scene_ids)
    if loc.fs.isdir(loc.root):
        extra = [s for s in loc.list_scene_dirs() if s not in listed]
        problems += [Problem(f"scenes/{s}", "present but not listed in root attrs (incomplete?)") for s in extra]
    n_voxels = 0
    for scene_id in store.scene_ids:
        found, n = _check_scene(loc, scene_id)
        problems += found
        n_voxels += n
    return StoreReport(url, len(store.scene_ids), n_voxels, tuple(problems))


def _check_scene(loc: Location, scene_id: str) -> tuple[list[Problem], int]:
    key = loc.scene_key(scene_id)
    try:
        with quiet_numcodecs():
            group = zarr.open_group(loc.zarr_store(key), mode="r")
        attrs = SceneAttrs.from_json(group.attrs.get(SCENE_KEY), key)
    except Exception as exc:  # noqa: BLE001 -- any failure to open is a finding
        return [Problem(key, f"cannot open scene group ({exc})")], 0
    problems = [] if attrs.complete else [Problem(key, "listed but not marked complete")]
    with quiet_numcodecs():
        names = set(group.array_keys())
    problems += [Problem(key, f"required array {a!r} is missing") for a in REQUIRED_ARRAYS if a not in names]
    problems += [Problem(f"{key}/{a}", "unknown array") for a in sorted(names - set(ARRAYS))]
    for name in sorted(names & set(ARRAYS)):
        with quiet_numcodecs():
            arr = group[name]
        assert isinstance(arr, zarr.Array)
        problems += _check_array(loc, f"{key}/{name}", name, arr, attrs)
    with quiet_numcodecs():
        groups = set(group.group_keys())
    problems += [Problem(f"{key}/{g}", "unknown group") for g in sorted(groups - {BACKGROUND_GROUP})]
    if BACKGROUND_GROUP in groups:
        problems += _check_background(loc, f"{key}/{BACKGROUND_GROUP}", group[BACKGROUND_GROUP])  # type: ignore[arg-type]
    return problems, attrs.n_voxels


def _check_background(loc: Location, where: str, sub: zarr.Group) -> list[Problem]:
    """The background group: versioned attrs, its arrays' checksums and chunks, and that they decode."""
    try:
        attrs = background.check_attrs(dict(sub.attrs).get(background.KEY), where)
    except PerfdataError as exc:
        return [Problem(where, str(exc).removeprefix(f"{where}: "))]
    with quiet_numcodecs():
        names = set(sub.array_keys())
    problems = [Problem(f"{where}/{a}", "unknown array") for a in sorted(names - {"data", "links"})]
    if "data" not in names:
        return [*problems, Problem(where, "array 'data' is missing")]
    parts = {}
    for name in sorted(names & {"data", "links"}):
        with quiet_numcodecs():
            arr = sub[name]
        assert isinstance(arr, zarr.Array)
        if not has_checksum(arr):
            problems.append(Problem(f"{where}/{name}", "has no crc32c checksum codec: corruption would go unnoticed"))
        chunks, bad = _read_chunks(loc, f"{where}/{name}", arr)
        problems += bad
        if chunks:
            parts[name] = np.concatenate(chunks)
    if not problems and "data" in parts:
        try:
            background.decode(parts["data"], parts.get("links"), attrs, where)
        except PerfdataError as exc:
            problems.append(Problem(where, str(exc).removeprefix(f"{where}: ")))
    return problems


def _check_array(loc: Location, where: str, name: str, arr: zarr.Array, attrs: SceneAttrs) -> list[Problem]:
    ndim, dtypes = ARRAYS[name]
    problems = []
    if arr.ndim != ndim or arr.dtype.name not in dtypes:
        problems.append(Problem(where, f"is {arr.dtype}{arr.shape}, schema wants {ndim}-d {'/'.join(dtypes)}"))
    if name in PER_VOXEL and arr.shape[0] != attrs.n_voxels:
        problems.append(Problem(where, f"has {arr.shape[0]} rows, scene attrs say {attrs.n_voxels} voxels"))
    if name == "sh":
        k = 3 * (attrs.sh_degree + 1) ** 2
        for a in ("sh_min", "sh_scale"):
            vals = np.asarray(arr.attrs.get(a, []), dtype=np.float64)
            if vals.shape != (k,) or not np.isfinite(vals).all():
                problems.append(Problem(where, f"attr {a} must be {k} finite numbers"))
    if not has_checksum(arr):
        problems.append(Problem(where, "has no crc32c checksum codec: corruption would go unnoticed (re-export it)"))
    chunks, bad = _read_chunks(loc, where, arr)
    problems += bad
    if chunks:
        problems += _check_values(where, name, np.concatenate(chunks), attrs)
    return problems


def _read_chunks(loc: Location, where: str, arr: zarr.Array) -> tuple[list[np.ndarray], list[Problem]]:
    """Read chunk by chunk; a missing, truncated or corrupt (checksum mismatch) chunk is a problem naming its key."""
    pieces: list[np.ndarray] = []
    problems: list[Problem] = []
    rows: dict[int, list[np.ndarray]] = {}
    local_dir = local_array_dir(loc, where)
    for idx, sel in iter_chunks(arr):
        if local_dir is None and not loc.fs.exists(f"{loc.root}/{where}/{chunk_key(idx)}"):
            problems.append(Problem(f"{where}/{chunk_key(idx)}", "chunk is missing"))
            continue
        block, problem = read_chunk(arr, idx, sel, local_dir)
        if block is None:
            problems.append(Problem(f"{where}/{chunk_key(idx)}", str(problem)))
            continue
        rows.setdefault(idx[0], []).append(block)
    if problems:
        return [], problems
    for i in sorted(rows):
        pieces.append(np.concatenate(rows[i], axis=1) if arr.ndim > 1 else rows[i][0])
    return pieces, problems


def _check_values(where: str, name: str, data: np.ndarray, attrs: SceneAttrs) -> list[Problem]:
    """Value ranges: coords < reso and sorted unique, finite floats, labels >= -1."""
    problems = []
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        problems.append(Problem(where, f"{int((~np.isfinite(data)).sum())} non-finite values (NaN or inf)"))
    if name == "coords" and len(data):
        reso = np.asarray(attrs.reso)
        if (data >= reso).any():
            problems.append(Problem(where, f"{int((data >= reso).any(axis=1).sum())} coords outside reso {attrs.reso}"))
        lin = (data[:, 0].astype(np.int64) * reso[1] + data[:, 1]) * reso[2] + data[:, 2]
        if (np.diff(lin) <= 0).any():
            problems.append(Problem(where, "rows are not sorted by linear index (or repeat a voxel)"))
    if name == "labels" and len(data) and int(data.min()) < -1:
        problems.append(Problem(where, f"labels below -1 (min {int(data.min())})"))
    if name == "label_dist" and len(data) and float(np.nanmin(data)) < 0:
        problems.append(Problem(where, "negative label distances"))
    return problems
