"""Finding the files a particle table points to.

A path written in a STAR or ``.cs`` file is tried, in order:

1. as written (absolute, or relative to the current directory: RELION projects write paths
   relative to the project directory);
2. relative to the directory of the STAR file (Warp/WarpTools, NextPYP and our own exports);
3. ``datadir / basename`` and 4. ``datadir / path`` when ``--datadir`` is given.

A miss is an :class:`~hetfield.errors.InputError` naming the file and every place tried. Datasets
have millions of rows but few distinct stacks, so :func:`resolve_image_paths` resolves each distinct
string once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hetfield.errors import InputError


def candidate_paths(path_as_written: str, star_dir: str | os.PathLike | None,
                    datadir: str | os.PathLike | None) -> list[Path]:
    """The places :func:`resolve_image_path` tries, in order, without duplicates."""
    written = Path(path_as_written)
    out: list[Path] = [written]
    if star_dir is not None and not written.is_absolute():
        out.append(Path(star_dir) / written)
    if datadir is not None:
        out.append(Path(datadir) / written.name)
        if not written.is_absolute():
            out.append(Path(datadir) / written)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def resolve_image_path(path_as_written: str, star_dir: str | os.PathLike | None,
                       datadir: str | os.PathLike | None, what: str = "image stack") -> Path:
    """The existing file ``path_as_written`` refers to, as an absolute path (see module docstring)."""
    tried = candidate_paths(path_as_written, star_dir, datadir)
    for p in tried:
        if p.is_file():
            return p.resolve()
    places = ", ".join(str(p.absolute()) for p in tried)
    hint = ("pass --datadir with the directory that holds the stacks" if datadir is None
            else "check --datadir; it should be the directory that holds the stacks")
    raise InputError(f"{what} {path_as_written!r} not found; tried {places}; {hint}")


def resolve_image_paths(paths, star_dir, datadir, strict: bool = True,
                        what: str = "image stack") -> np.ndarray:
    """Resolve an array of written paths (object array of str) to absolute path strings.

    Each distinct string is resolved once. With ``strict=False`` a path that cannot be found is
    kept as it would be read relative to ``star_dir`` (metadata-only reading) instead of raising.
    """
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(paths, dtype=object), sort=False)
    resolved = np.empty(len(uniques), dtype=object)
    for i, written in enumerate(uniques):
        try:
            resolved[i] = str(resolve_image_path(str(written), star_dir, datadir, what=what))
        except InputError:
            if strict:
                raise
            p = Path(str(written))
            if not p.is_absolute() and star_dir is not None:
                p = Path(star_dir) / p
            resolved[i] = os.path.normpath(str(p.absolute()))
    return resolved[codes]
