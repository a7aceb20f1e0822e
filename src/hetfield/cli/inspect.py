"""``hetfield inspect``: what a particle file or a prepared dataset holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def inspect(
    path: Path = typer.Argument(..., help="A particles file (STAR / .cs) or a dataset directory made by `hetfield setup`."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", "-d", help="Where image stacks are looked up (particle files only)."),
    source: str = typer.Option("auto", "--source", help="Force a reader (particle files only)."),
    tomograms: Optional[Path] = typer.Option(None, "--tomograms", help="The tomograms STAR of an optimisation set given as its particles STAR."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Print counts, tilts per particle and dose/tilt/defocus ranges, and why this reader was chosen."""
    import json

    from hetfield.cli._common import print_summary
    from hetfield.cli.setup import dataset_rows
    from hetfield.errors import InputError

    if path.is_dir():
        from hetfield.data.dataset import Dataset

        ds = Dataset.open(path)
        ds.table  # inspect is the command that checks a dataset: read and validate its particles.star too
        meta = ds.meta
        if as_json:
            typer.echo(json.dumps(meta, indent=2))
        else:
            print_summary(f"dataset {path}", dataset_rows(meta))
        return
    if not path.exists():
        raise InputError(f"{path}: no such file or dataset directory; pass a particles STAR/.cs file or a directory made by `hetfield setup`")
    from hetfield.data.summary import summarize_table
    from hetfield.io.readers import read_particles

    table = read_particles(path, datadir=datadir, source=source, check_images=False, **({"tomograms": tomograms} if tomograms else {}))
    summary = summarize_table(table)
    det = table.detection
    if as_json:
        summary["detection"] = det.as_dict() if det is not None else None
        typer.echo(json.dumps(summary, indent=2))
        return
    rows = {"reader": summary.pop("source")}
    if det is not None:
        rows["why"] = det.reason()
        if det.against_tilt and det.tilted is False:
            rows["not tilt series because"] = "; ".join(det.against_tilt)
        near = {r: m for r, m in det.missing.items() if m and len(m) <= 2 and r != det.reader}  # near misses only
        if near:
            rows["other readers lack"] = "; ".join(f"{r}: {', '.join(m)}" for r, m in near.items())
    rows.update(summary)
    print_summary(f"particles {path}", rows)
