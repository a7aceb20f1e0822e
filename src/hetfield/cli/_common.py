"""Small helpers shared by the command modules (cheap to import)."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager


def command_line() -> str:
    """The command as typed, for provenance records."""
    return " ".join(shlex.quote(a) for a in ["hetfield", *sys.argv[1:]])


@contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True):
    """A rich progress bar on stderr; yields ``update(done, total)``. Quiet when not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda done, total=None: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total_: int | None = None) -> None:
            progress.update(task, completed=done, total=total_ if total_ is not None else total)

        yield update


def print_summary(title: str, rows: dict) -> None:
    """A two-column table of a summary dict on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(str(key), _fmt(value))
    Console().print(table)


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return f"{value[0]:g} – {value[1]:g}"
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
