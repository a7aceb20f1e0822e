"""Fixtures for tests/io; helpers live in ``iohelpers.py`` (this folder is on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def quiet_mrc_warnings():
    import warnings

    from hetfield.io.mrc import MRCHeaderWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MRCHeaderWarning)
        yield
