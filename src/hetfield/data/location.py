"""Where ``setup`` writes: the output location checked before any work, what already lies there
(a dataset, of which inputs), and the replacement of an old dataset (``--force``) that a kill cannot
leave half-deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hetfield.data.cache import REQUIRED_FILES
from hetfield.errors import ConfigError, probe_write


def existing_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint ``out_dir/dataset.yaml`` records, or None when there is none to read."""
    import yaml

    meta = out_dir / "dataset.yaml"
    if not meta.is_file():
        return None
    try:
        data = yaml.safe_load(meta.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    value = data.get("fingerprint") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check_output_location(out_dir: Path) -> None:
    """``out_dir`` can be created (or replaced) by this user: a one-line ConfigError before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"DATASET {out_dir} is a file, not a directory; choose another DATASET path")
    parent = out_dir.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"DATASET {out_dir}: {probe} is a file, so no directory can be made below it; choose another DATASET path"
        )
    try:
        probe_write(probe, out_dir.name)
    except OSError:
        raise ConfigError(
            f"DATASET {out_dir}: no permission to write in {probe}; choose a DATASET path in a directory you can write to"
        ) from None


def looks_like_dataset(out_dir: Path) -> bool:
    return any((out_dir / f).exists() for f in REQUIRED_FILES) or not any(out_dir.iterdir())


def remove_old(out_dir: Path) -> None:
    """Move the old dataset aside under a name :func:`~hetfield.io.atomic.remove_stale_temporaries`
    knows, then delete it: a kill in between leaves a hidden ``.old`` the next ``setup`` removes."""
    from hetfield.io.atomic import _tmp_prefix

    aside = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out_dir), suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)
