"""STAR files: every block, read fast; optics merging; ``index@path`` image names; subset writing.

:func:`read_star` finds the blocks with one regular-expression pass over the text and hands each
loop's data rows to pandas' C parser, so a million-row particle table reads in about a second (the
``starfile`` package walks the file line by line in Python). Column labels keep RELION's names
without the leading underscore (``rlnImageName``); messages print them with it.

Every loop block remembers where its data rows sit in the text, so :func:`write_star_subset` can
write a subset of a block's rows with the rest of the file (other blocks, comments, formatting,
every column) untouched: exports stay in the user's own format byte for byte.

:func:`write_star` writes DataFrames as loop blocks that :func:`read_star` reads back value for
value: empty or blank-containing text is double-quoted (``""`` is an empty value, not a missing
one), floats are written with the shortest repr that round-trips, booleans as 0/1. Text that looks
like a number (``000123``) stays text when the reader is told the column is text
(``string_columns``), which is how a prepared dataset's ``particles.star`` is read.
"""

from __future__ import annotations

import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.errors import InputError

# Columns that are text even when every value looks like a number (names, paths, vectors).
STRING_COLUMNS = frozenset({
    "rlnImageName", "rlnMicrographName", "rlnGroupName", "rlnGroupNumber", "rlnTomoName",
    "rlnTomoParticleName", "rlnOpticsGroupName", "rlnTomoVisibleFrames", "rlnTomoProjX",
    "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW", "rlnImageOriginalName", "rlnCtfImage",
    "rlnTomoTiltSeriesName", "rlnTomoParticlesFile", "rlnTomoTomogramsFile",
    "rlnTomoTiltSeriesStarFile", "rlnMicrographMovieName", "rlnOddZernike", "rlnEvenZernike",
})



def label(column: str) -> str:
    """``rlnImageName`` -> ``_rlnImageName`` (how users see it)."""
    return "_" + column


@dataclass
class StarBlock:
    """One ``data_<name>`` block: a loop (``df``) or key/value pairs (``pairs``)."""

    name: str
    kind: str  # "loop" | "pairs"
    columns: list[str] = field(default_factory=list)
    df: Any = None  # pandas.DataFrame for loops
    pairs: dict[str, Any] = field(default_factory=dict)
    data_span: tuple[int, int] = (0, 0)  # text offsets of the loop's data rows
    first_data_line: int = 0  # 1-based line number of the first data row (for messages)

    @property
    def n_rows(self) -> int:
        return 0 if self.df is None else len(self.df)

    def has(self, *columns: str) -> bool:
        cols = self.columns if self.kind == "loop" else list(self.pairs)
        return all(c in cols for c in columns)


@dataclass
class StarFile:
    path: Path
    blocks: dict[str, StarBlock]

    def __contains__(self, name: str) -> bool:
        return name in self.blocks

    def loops(self) -> list[StarBlock]:
        return [b for b in self.blocks.values() if b.kind == "loop"]

    def find_loop(self, *columns: str, prefer: tuple[str, ...] = ("particles", "", "images")) -> StarBlock | None:
        """The loop block holding all ``columns`` (preferring the names in ``prefer``)."""
        hits = [b for b in self.loops() if b.has(*columns)]
        if not hits:
            return None
        for name in prefer:
            for b in hits:
                if b.name == name:
                    return b
        return hits[0]


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
