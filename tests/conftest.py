"""Shared fixtures: the reference data beside the project (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

def _threads_per_worker() -> int:
    """The cores each test process may use: all of them alone, an equal share under pytest-xdist.
    Two workers of torch's default two threads each on two cores ran training 2-3x slower than one
    thread each (oversubscribed OpenMP threads wait on each other)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


# Set in each worker before torch is imported there or in a test's subprocess (the CLIs inherit the
# environment); a value the caller set wins. The controller process sets nothing, or its value would
# reach the workers as the caller's.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads_per_worker()))

SHARED_DATA = Path(os.environ.get("HETFIELD_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip cleanly in a user's clone where it does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA



# The longest files (20-70 s each on two workers), longest first: they start first under `make test`
# (its --no-loadscope-reorder keeps this order; xdist's default starts the files with most tests).
LONGEST_FILES = (
    "train/test_quality.py", "corpus/test_corpus.py", "train/test_kill.py", "train/test_quality_one_class.py",
    "pipeline/test_pipeline_render_run.py", "train/test_resume.py", "test_permissions.py", "train/test_torchrun.py",
    "cli/test_setup_kill.py", "cli/test_setup_errors.py", "train/test_run_directory.py", "sweep/test_runner.py",
    "train/test_low_snr_latent.py", "analysis/test_analyze.py", "train/test_abinit_run.py",
)


def pytest_collection_modifyitems(session, config, items):
    """The longest files run first. Under `make test` the suite runs on two workers a file each
    (pytest-xdist --dist loadfile), which take files in collection order; a long file started last
    keeps one worker busy alone at the end. The sort is stable and by file, so every file's tests
    stay together and in their written order."""
    tests_dir = Path(__file__).resolve().parent

    def rank(item) -> int:
        try:
            rel = item.path.resolve().relative_to(tests_dir).as_posix()
        except ValueError:
            return len(LONGEST_FILES)
        return LONGEST_FILES.index(rel) if rel in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)
