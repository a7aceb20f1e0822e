"""The provenance header every analysis JSON starts with (``summary.json``, ``convergence.json``,
``volumes.json``, ``backproject.json``): what wrote it, when, and from which run or dataset.

One function so that the four files name the same facts the same way; the pipeline and the sweep
summary read ``kind`` and ``run_id`` to know what they were given.
"""

from __future__ import annotations

from typing import Any

from hetfield.io.plain import now


def provenance(kind: str, ctx=None, dataset=None) -> dict[str, Any]:
    """``{run_id, kind, hetfield_version, created, run}`` for an analysis of a run (``ctx``: a
    :class:`~hetfield.analysis.context.RunContext`), or ``{kind, hetfield_version, created, dataset,
    dataset_fingerprint}`` for one of a prepared dataset; the caller adds its own fields after these."""
    from hetfield import __version__

    if (ctx is None) == (dataset is None):
        raise TypeError("provenance(): give the run context or the dataset analysed, not both or neither")
    head: dict[str, Any] = {"run_id": ctx.run_id} if ctx is not None else {}
    head.update(kind=kind, hetfield_version=__version__, created=now())
    if ctx is not None:
        head["run"] = str(ctx.run.path.resolve())
    else:
        head.update(dataset=str(dataset.path.resolve()), dataset_fingerprint=dataset.fingerprint)
    return head
