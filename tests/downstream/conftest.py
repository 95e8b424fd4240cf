"""Fixtures for the downstream tests: tiny shards and stores built with the project's own writers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import downstream_data as D  # noqa: E402
from downstream_data import ROOM_NAMES  # noqa: E402


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 3 shape classes x 4 synthetic object scenes x 6 views of 32 x 32 (1 scene per class to val)."""
    return D.make_shards(tmp_path_factory.mktemp("cls2d"), ("sphere", "box", "torus"), per_class=4, n_views=6)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 8 voxelised spheres and 8 boxes (32^3, random size / place / colour), class_name set."""
    rows = [(f"{k}_{i}", D.object_grid(k, 2 * i + (k == "box")), k, {}) for k in ("sphere", "box") for i in range(8)]
    return D.write_store(tmp_path_factory.mktemp("cls3d") / "objects.zarr", rows)


@pytest.fixture(scope="session")
def room_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 8 labelled rooms (floor 0, sphere 1, box 2, some -1) with label_names, no class names."""
    rows = [(f"room_{i}", D.room_grid(i), None, {"label_names": ROOM_NAMES}) for i in range(8)]
    return D.write_store(tmp_path_factory.mktemp("seg3d") / "rooms.zarr", rows)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and steadiest on a shared machine, on one intra-op thread (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
