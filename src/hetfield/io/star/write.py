"""Writing STAR files: DataFrames as loop blocks that read back value for value, and subsets of a
block's rows with the rest of the file untouched (see :mod:`hetfield.io.star`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.star.read import block_data_lines

def _star_text(values, kind: str):
    """A column as STAR tokens (pandas Series of str)."""
    import pandas as pd

    if kind == "b":
        return values.astype(np.int64).astype(str)
    if kind in "iu":
        return values.astype(str)
    if kind == "f":
        return values.astype(np.float64).astype(str)
    text = values.astype(str)
    needs = (text.str.len() == 0) | text.str.contains(r"[\s\"']", regex=True) | text.str.match(r"^(_|#|data_|loop_)")
    if needs.any():
        quoted = '"' + text.str.replace('"', '""', regex=False) + '"'
        text = pd.Series(np.where(needs.to_numpy(), quoted.to_numpy(), text.to_numpy()), index=values.index)
    return text


def format_star(blocks: dict, comment: str | None = None) -> str:
    """STAR text of ``{block name: DataFrame}`` (loop blocks); see the module docstring."""
    out = [f"# {comment}\n" if comment else "", "# version 30001\n"]
    for name, df in blocks.items():
        out.append(f"\ndata_{name}\n\nloop_\n")
        out.extend(f"_{c} #{i + 1}\n" for i, c in enumerate(df.columns))
        if len(df):
            cols = [_star_text(df[c], df[c].dtype.kind) for c in df.columns]
            line = cols[0].str.cat(cols[1:], sep=" ") if len(cols) > 1 else cols[0]
            out.append("\n".join(line.tolist()) + "\n")
    return "".join(out)


def write_star(path: str | os.PathLike, blocks: dict, comment: str | None = None) -> Path:
    """Write ``{block name: DataFrame}`` as loop blocks, atomically; :func:`read_star` reads it back."""
    from hetfield.io.atomic import write_text_atomic

    return write_text_atomic(path, format_star(blocks, comment))


def write_star_subset(src: str | os.PathLike, block_name: str, rows, out_path: str | os.PathLike) -> Path:
    """Copy ``src`` to ``out_path`` keeping only ``rows`` (0-based, ascending) of one loop block."""
    from hetfield.io.atomic import write_bytes_atomic

    buf, (d0, d1), lines = block_data_lines(src, block_name)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(lines)):
        bad = int(rows[(rows < 0) | (rows >= len(lines))][0])
        raise InputError(f"{src}: cannot export row {bad + 1}: block data_{block_name} has {len(lines)} rows")
    body = b"".join(lines[i] + b"\n" for i in rows)
    rest = buf[d1:]
    return write_bytes_atomic(out_path, buf[:d0] + body + (rest[1:] if rest.startswith(b"\n") else rest))
