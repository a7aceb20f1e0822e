"""Values out of a block's columns, with errors naming row and column: numbers, the optics groups'
columns merged onto particles, ``index@path`` image names, ``[x,y,z]`` vectors."""

from __future__ import annotations

import numpy as np

from hetfield.errors import InputError
from hetfield.io.star.blocks import StarBlock, label

def numeric_column(block: StarBlock, column: str, where: str, dtype=np.float64) -> np.ndarray:
    """``block.df[column]`` as numbers; a non-numeric value is an InputError naming row and column."""
    import pandas as pd

    s = block.df[column]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=dtype)
    conv = pd.to_numeric(s, errors="coerce")
    bad = conv.isna().to_numpy() & ~s.astype(str).str.lower().isin(["nan"]).to_numpy()
    if bad.any():
        r = int(np.argmax(bad))
        raise InputError(
            f"{where}: row {r + 1}: column {label(column)} holds {s.iloc[r]!r}, not a number; fix that value"
        )
    return conv.to_numpy(dtype=dtype)


def require_columns(block: StarBlock | None, columns, where: str, reader: str, block_desc: str = "particles") -> None:
    """InputError naming the missing columns and the reader that wanted them."""
    have = set(block.columns) if block is not None else set()
    missing = [label(c) for c in columns if c not in have]
    if missing:
        raise InputError(
            f"{where}: the {block_desc} table lacks {', '.join(missing)}, needed by the {reader!r} reader; "
            "add the columns or choose another reader with --source"
        )


def merge_optics(particles, optics, where: str):
    """Copy optics-group columns onto particle rows (``rlnOpticsGroup``); particle values win."""
    import pandas as pd

    if optics is None or "rlnOpticsGroup" not in optics.columns:
        return particles
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) == 1:
            groups = np.full(len(particles), optics["rlnOpticsGroup"].iloc[0])
        else:
            raise InputError(
                f"{where}: the optics table has {len(optics)} groups but the particles lack "
                "_rlnOpticsGroup; add that column"
            )
    else:
        groups = particles["rlnOpticsGroup"].to_numpy()
    key = pd.Index(pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce"))
    if key.has_duplicates:
        dup = key[key.duplicated()][0]
        raise InputError(f"{where}: optics group {dup} is listed twice in the optics table; remove one")
    idx = key.get_indexer(pd.to_numeric(pd.Series(groups), errors="coerce"))
    if (idx < 0).any():
        r = int(np.argmax(idx < 0))
        raise InputError(
            f"{where}: row {r + 1} belongs to optics group {groups[r]}, which the optics table "
            f"does not define (it has {', '.join(map(str, optics['rlnOpticsGroup'].tolist()))}); add that group to data_optics or fix the row"
        )
    out = particles.copy()
    for col in optics.columns:
        if col == "rlnOpticsGroup" or col in out.columns:
            continue
        out[col] = optics[col].to_numpy()[idx]
    return out


def parse_image_names(names, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``index@path`` (1-based) -> ``(index0 int64, path object)``; no ``@`` gives index -1."""
    import pandas as pd

    s = pd.Series(np.asarray(names, dtype=object)).astype(str)
    parts = s.str.partition("@")
    has_at = (parts[1] == "@").to_numpy()
    paths = np.where(has_at, parts[2].to_numpy(dtype=object), parts[0].to_numpy(dtype=object))
    index0 = np.full(len(s), -1, dtype=np.int64)
    if has_at.any():
        raw = parts[0][has_at]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna().to_numpy() | (num.to_numpy() % 1 != 0) | (num.to_numpy() < 1)
        if bad.any():
            r = int(np.flatnonzero(has_at)[np.argmax(bad)])
            raise InputError(
                f"{where}: row {r + 1}: image name {s.iloc[r]!r} does not start with a positive "
                "1-based index; fix it (expected index@stack.mrcs)"
            )
        index0[has_at] = num.to_numpy(dtype=np.int64) - 1
    empty = (pd.Series(paths).str.len() == 0).to_numpy()
    if empty.any():
        r = int(np.argmax(empty))
        raise InputError(f"{where}: row {r + 1}: image name {s.iloc[r]!r} has no file name; fix it (expected index@stack.mrcs)")
    return index0, paths


def parse_vectors(values, where: str, column: str, dtype=np.float64) -> list[np.ndarray]:
    """Cells like ``[1,0,1]`` -> arrays (vectorised: one join and one split for the column)."""
    s = [str(v) for v in values]
    stripped = [v.strip().lstrip("[").rstrip("]") for v in s]
    lens = np.array([0 if not v.strip() else v.count(",") + 1 for v in stripped], dtype=np.int64)
    joined = ",".join(v for v in stripped if v.strip())
    try:
        flat = np.array(joined.split(","), dtype=dtype) if joined else np.zeros(0, dtype=dtype)
    except ValueError:
        for r, v in enumerate(stripped):
            try:
                np.array(v.split(","), dtype=dtype)
            except ValueError:
                raise InputError(f"{where}: row {r + 1}: {label(column)} = {s[r]!r} is not a list of numbers; fix it (e.g. [1,0,1])") from None
        raise
    return np.split(flat, np.cumsum(lens)[:-1])
