"""Which epoch and which classes an analysis looks at: ``--epoch N|last|auto`` and ``--class-idx``.

``auto`` takes the epoch ``hetfield convergence`` recommended (its ``convergence.json``), so an analysis
can follow a convergence check without the user reading the number off.
"""

from __future__ import annotations

import json
from pathlib import Path

from hetfield.errors import ConfigError, InputError, RunError


def resolve_epoch(ctx, epoch: str | int | None, convergence: str | Path | None = None) -> tuple[int, str, list[str]]:
    """``(epoch, how it was chosen, notes)``; ``auto`` reads the recommended epoch of ``convergence.json``."""
    notes: list[str] = []
    run = ctx.run
    if epoch is None:
        epoch = "last"
    if str(epoch).lower() == "auto":
        explicit = convergence is not None
        path = Path(convergence) if explicit else run.path / "convergence"
        if path.is_dir():
            path = path / "convergence.json"
        if not path.is_file():
            if explicit:
                raise InputError(f"--convergence {convergence}: no convergence.json there; run `hetfield convergence {run.path}` first")
            e = run.resolve_epoch("last")
            notes.append(f"--epoch auto: no {path}; analysed the last epoch ({e}); run `hetfield convergence` for a recommended epoch")
            return e, "last (no convergence.json)", notes
        try:
            doc = json.loads(path.read_text())
            rec = int(doc["recommended_epoch"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: not a hetfield convergence.json (no recommended_epoch); run `hetfield convergence` again") from None
        if doc.get("run_id") and str(doc["run_id"]) != str(ctx.run_id):
            notes.append(f"{path} was written for run {doc['run_id']!r}, not {ctx.run_id!r}")
        if rec not in run.epochs():
            raise RunError(f"{path}: recommended epoch {rec} is not saved in {run.path} (saved: {', '.join(map(str, run.epochs()))}); run `hetfield convergence` again")
        return rec, f"auto: recommended by {path} ({doc.get('verdict', '?')})", notes
    if str(epoch).lower() in ("last", "latest"):
        return run.epochs()[-1], "last", notes
    try:
        e = int(epoch)
    except (TypeError, ValueError):
        raise ConfigError(f"--epoch {epoch!r}: give an epoch number, 'last' or 'auto'") from None
    from hetfield.analysis.context import saved_epoch

    return saved_epoch(ctx, e), "given", notes


def resolve_classes(class_idx: str | int | None, n_classes: int) -> list[int]:
    if class_idx is None or str(class_idx).lower() == "all":
        return list(range(n_classes))
    try:
        c = int(class_idx)
    except (TypeError, ValueError):
        raise ConfigError(f"--class-idx {class_idx!r}: give a class number 0..{n_classes - 1} or 'all'") from None
    if not 0 <= c < n_classes:
        raise ConfigError(f"--class-idx {c}: this run has {n_classes} class(es); give one of 0..{n_classes - 1}, or 'all'")
    return [c]
