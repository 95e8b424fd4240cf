"""Fixtures for the store tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from perfdata.grid import SparseGrid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_grids import shell_grid  # noqa: E402


@pytest.fixture
def make_grid() -> Callable[..., SparseGrid]:
    return shell_grid
