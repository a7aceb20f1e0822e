"""Reading STAR files: one regular-expression pass finds the blocks, pandas' C parser reads each loop
(see :mod:`hetfield.io.star`); every loop remembers where its data rows sit in the text."""

from __future__ import annotations

import io
import os
import re
import shlex
from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.star.blocks import STRING_COLUMNS, StarBlock, StarFile

def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a STAR file; pass the .star file inside it") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc}); check that you may read it") from None
    if b"\0" in raw[:65536]:
        raise InputError(f"{path}: not a STAR text file (binary content); pass a RELION-style .star file")
    return raw


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_text(path: Path) -> str:
    return _decode(_read_bytes(path))


def _line_start(buf: bytes, pos: int) -> bool:
    """Only spaces/tabs between the previous newline (or the start) and ``pos``."""
    nl = buf.rfind(b"\n", 0, pos)
    return not buf[nl + 1:pos].strip(b" \t")


def _find_tokens(buf: bytes, token: bytes, start: int, end: int) -> list[int]:
    """Offsets of ``token`` at the start of a line (leading blanks allowed) in ``buf[start:end]``."""
    out = []
    pos = buf.find(token, start, end)
    while pos != -1:
        if _line_start(buf, pos):
            out.append(pos)
        pos = buf.find(token, pos + 1, end)
    return out


def _next_line(buf: bytes, pos: int, end: int) -> int:
    nl = buf.find(b"\n", pos, end)
    return end if nl == -1 else nl + 1


def _is_row(line: bytes) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith(b"#")


def _clean_rows(region: bytes) -> bytes:
    """Data rows of a loop region without blank lines and ``#`` comment lines."""
    if b"#" not in region:
        return region
    return b"\n".join(ln for ln in region.splitlines() if _is_row(ln))


def _scan(buf: bytes, path: Path) -> list[dict]:
    """Find blocks: name, kind, header columns / pairs, data span (byte offsets). No DataFrames yet."""
    starts = []
    for pos in _find_tokens(buf, b"data_", 0, len(buf)):
        line_end = _next_line(buf, pos, len(buf))
        starts.append((pos, line_end, _decode(buf[pos + 5:line_end]).strip().split(" ")[0]))
    out = []
    for i, (_, b1, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(buf)
        loops = _find_tokens(buf, b"loop_", b1, end)
        if not loops:
            pairs: dict[str, str] = {}
            for raw in _decode(buf[b1:end]).splitlines():
                ln = raw.strip()
                if not ln.startswith("_"):
                    continue
                try:
                    parts = shlex.split(ln, comments=True)
                except ValueError:
                    parts = ln.split()
                if parts:
                    pairs[parts[0][1:]] = parts[1] if len(parts) > 1 else ""
            out.append({"name": name, "kind": "pairs", "pairs": pairs})
            continue
        # header: lines after loop_ starting with "_" (blank and comment lines allowed between)
        pos = _next_line(buf, loops[0], end)
        columns: list[str] = []
        data_start = end
        while pos < end:
            nxt = _next_line(buf, pos, end)
            ln = buf[pos:nxt].strip()
            if ln.startswith(b"_"):
                columns.append(_decode(ln.split()[0][1:]))
            elif ln and not ln.startswith(b"#"):
                data_start = pos
                break
            pos = nxt
        # data rows run to the next block; trailing blank/comment lines are not part of them
        data_end = end
        while data_end > data_start:
            nl = buf.rfind(b"\n", data_start, data_end - 1)
            line_start = data_start if nl == -1 else nl + 1
            if _is_row(buf[line_start:data_end]):
                break
            data_end = line_start
        if not columns:
            raise InputError(f"{path}: block data_{name} has loop_ but no column labels; add the _rln column labels after loop_")
        out.append({"name": name, "kind": "loop", "columns": columns, "span": (data_start, data_end)})
    return out


def _numericise(df, string_columns) -> None:
    """Text columns whose every value is a number become numeric (others stay text)."""
    import pandas as pd

    for col in df.columns:
        if col in string_columns or pd.api.types.is_numeric_dtype(df[col]):
            continue
        conv = pd.to_numeric(df[col], errors="coerce")
        if conv.notna().all():
            df[col] = conv
        # else: keep text; numeric_column() reports the first bad row if a reader needs it


def read_star(path: str | os.PathLike, string_columns=STRING_COLUMNS) -> StarFile:
    """Read every block of a STAR file (see module docstring). Raises InputError with the line."""
    import pandas as pd

    path = Path(path)
    buf = _read_bytes(path)
    scanned = _scan(buf, path)
    if not scanned:
        raise InputError(f"{path}: no data_ blocks found (is it empty, or not a STAR file?); pass a RELION-style .star file")
    blocks: dict[str, StarBlock] = {}
    for s in scanned:
        if s["kind"] == "pairs":
            blocks[s["name"]] = StarBlock(s["name"], "pairs", pairs=s["pairs"])
            continue
        columns = s["columns"]
        d0, d1 = s["span"]
        first_line = buf.count(b"\n", 0, d0) + 1
        rows = _clean_rows(buf[d0:d1])
        if not rows or rows.isspace():
            df = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
        else:
            dtypes = {c: str for c in columns if c in string_columns}
            try:
                df = pd.read_csv(
                    io.BytesIO(rows), encoding="utf-8", encoding_errors="replace", sep=r"\s+", header=None,
                    names=columns, dtype=dtypes,
                    engine="c", quotechar='"', keep_default_na=False, na_values=[],
                    skip_blank_lines=True, index_col=False,
                )
            except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
                msg = str(exc).strip().splitlines()[-1]
                m = re.search(r"line (\d+)", msg)
                where = f" row {m.group(1)} (line {first_line + int(m.group(1)) - 1})" if m else ""
                raise InputError(
                    f"{path}: block data_{s['name']}{where}: the row does not match the {len(columns)} "
                    f"column labels ({msg}); fix or remove that row"
                ) from None
            short = np.zeros(len(df), dtype=bool)
            for col in df.columns:  # a short row leaves "" in its trailing columns (so does a quoted "")
                if not pd.api.types.is_numeric_dtype(df[col]):
                    short |= (df[col] == "").to_numpy()
            if short.any():
                short = _really_short(rows, short, len(columns))
            if short.any():
                r = int(np.argmax(short))
                raise InputError(
                    f"{path}: block data_{s['name']} row {r + 1} has fewer values than its "
                    f"{len(columns)} column labels; fix or remove that row"
                )
            _numericise(df, string_columns)
        blocks[s["name"]] = StarBlock(s["name"], "loop", columns=list(columns), df=df,
                                      data_span=(d0, d1), first_data_line=first_line)
    return StarFile(path, blocks)


def _really_short(rows: bytes, candidates: np.ndarray, n_columns: int) -> np.ndarray:
    """Of the rows holding an empty value, those with fewer fields than columns (``""`` is a field)."""
    lines = [ln for ln in rows.split(b"\n") if ln.strip()]
    out = np.zeros(len(candidates), dtype=bool)
    for r in np.flatnonzero(candidates):
        text = _decode(lines[r])
        try:
            n = len(shlex.split(text, posix=True))
        except ValueError:  # an unbalanced quote: not a row we can count
            n = 0
        out[r] = n < n_columns
    return out


def block_data_lines(path: str | os.PathLike, block_name: str) -> tuple[bytes, tuple[int, int], list[bytes]]:
    """``(file bytes, data_span, rows)`` of a loop block, rows as written (blank/comment lines dropped)."""
    path = Path(path)
    buf = _read_bytes(path)
    for s in _scan(buf, path):
        if s["kind"] == "loop" and s["name"] == block_name:
            d0, d1 = s["span"]
            rows = [ln.rstrip(b"\r") for ln in buf[d0:d1].split(b"\n") if _is_row(ln)]
            return buf, (d0, d1), rows
    raise InputError(f"{path}: no loop block data_{block_name}; was the file changed since it was read? run setup again with --force")
