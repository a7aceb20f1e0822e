"""What :func:`~hetfield.io.star.read.read_star` returns: a file's blocks, and the column labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
