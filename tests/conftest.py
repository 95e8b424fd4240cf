"""Shared, generic test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class SharedData:
    """The real captures in ../shared/data (beside the checkout). `shared_data / "lego"` is the dataset's folder,
    or skips the test with a message naming it when it is absent."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __truediv__(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            pytest.skip(f"real dataset {name!r} not found at {path} (see ../shared/data/README.md)")
        return path


@pytest.fixture(scope="session")
def shared_data() -> SharedData:
    """Access to ../shared/data; a test asking for a dataset that is absent is skipped."""
    return SharedData(SHARED_DATA)
