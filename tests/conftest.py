"""Shared fixtures: the reference data beside the project (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("HETFIELD_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip cleanly in a user's clone where it does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA



def pytest_collection_modifyitems(session, config, items):
    """Files holding slow (end-to-end) tests run first. Under `make test` the suite runs on two
    workers a file each (pytest-xdist --dist loadfile); a long file started last keeps one worker
    busy alone at the end. The sort is stable and by file, so every file's tests stay together and in
    their written order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
