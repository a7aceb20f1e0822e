"""Small, reusable ways of breaking a file as users' files break, for the corpus of bad inputs.

Each helper returns a function of the case's workspace (a ``Path``) that applies the damage in place;
paths are relative to the workspace. :func:`chain` applies several in order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Mutation = Callable[[Path], None]


def nothing(ws: Path) -> None:
    """The pristine inputs: the command line alone is wrong."""


def chain(*mutations: Mutation) -> Mutation:
    def apply(ws: Path) -> None:
        for m in mutations:
            m(ws)

    return apply


def edit(path: str, old: str, new: str, count: int = 1) -> Mutation:
    """Replace text (``old`` must occur: a mutation that does nothing would test nothing)."""

    def apply(ws: Path) -> None:
        p = ws / path
        text = p.read_text()
        assert old in text, f"{old!r} not in {p}"
        p.write_text(text.replace(old, new, count))

    return apply


def write(path: str, content: str | bytes) -> Mutation:
    def apply(ws: Path) -> None:
        p = ws / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return apply


def truncate(path: str, fraction: float = 0.5) -> Mutation:
    """Keep the first ``fraction`` of the bytes (a copy or a write cut short)."""

    def apply(ws: Path) -> None:
        p = ws / path
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * fraction)])

    return apply


def delete(*patterns: str) -> Mutation:
    """Delete files or directories matching glob ``patterns`` (each must match something)."""

    def apply(ws: Path) -> None:
        for pattern in patterns:
            found = list(ws.glob(pattern))
            assert found, f"{pattern} matches nothing in {ws}"
            for p in found:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    return apply


def chmod(path: str, mode: int) -> Mutation:
    def apply(ws: Path) -> None:
        os.chmod(ws / path, mode)

    return apply


# -- STAR files ---------------------------------------------------------------------------------------
def star_rename_column(path: str, old: str, new: str) -> Mutation:
    """Misspell a column label (the values stay)."""
    return edit(path, f"{old} #", f"{new} #")


def star_drop_column(path: str, label: str) -> Mutation:
    """Remove a column: its label line and its value in every data row."""

    def apply(ws: Path) -> None:
        p = ws / path
        lines = p.read_text().splitlines()
        labels = [i for i, line in enumerate(lines) if line.startswith("_rln")]
        idx = next(j for j, i in enumerate(labels) if lines[i].split()[0] == label)
        out, n_labels = [], len(labels)
        for i, line in enumerate(lines):
            if i == labels[idx]:
                continue
            fields = line.split()
            if i > labels[-1] and len(fields) == n_labels:
                del fields[idx]
                line = " ".join(fields)
            out.append(line)
        p.write_text("\n".join(out) + "\n")

    return apply


def star_set_value(path: str, label: str, value: str, row: int = 1) -> Mutation:
    """Set the value of column ``label`` in 1-based data row ``row``."""

    def apply(ws: Path) -> None:
        p = ws / path
        lines = p.read_text().splitlines()
        labels = [i for i, line in enumerate(lines) if line.startswith("_rln")]
        idx = next(j for j, i in enumerate(labels) if lines[i].split()[0] == label)
        data = [i for i in range(labels[-1] + 1, len(lines)) if len(lines[i].split()) == len(labels)]
        fields = lines[data[row - 1]].split()
        fields[idx] = value
        lines[data[row - 1]] = " ".join(fields)
        p.write_text("\n".join(lines) + "\n")

    return apply


# -- YAML ---------------------------------------------------------------------------------------------
def _yaml_apply(path: str, key: str, change: Callable[[dict, str], None]) -> Mutation:
    def apply(ws: Path) -> None:
        import yaml

        p = ws / path
        doc = yaml.safe_load(p.read_text())
        *parents, last = key.split(".")
        node = doc
        for k in parents:
            node = node[k]
        assert isinstance(node, dict), f"{key} in {p}"
        change(node, last)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))

    return apply


def yaml_set(path: str, key: str, value: Any) -> Mutation:
    """Set dotted ``key`` (``model.box``) to ``value``."""
    return _yaml_apply(path, key, lambda node, k: node.__setitem__(k, value))


def yaml_del(path: str, *keys: str) -> Mutation:
    """Delete dotted ``keys`` (each must exist)."""

    def drop(k: str) -> Mutation:
        def change(node: dict, last: str) -> None:
            assert last in node, k
            del node[last]

        return _yaml_apply(path, k, change)

    return chain(*(drop(k) for k in keys))


# -- numpy archives -------------------------------------------------------------------------------------
def npz_change(path: str, **changes: Callable[[Any], Any] | None) -> Mutation:
    """Rewrite an ``.npz`` with ``key=f(old array)`` (``None`` deletes the key; new keys get ``f(None)``).

    Object arrays are written pickled, as numpy does: the reader must refuse them.
    """

    def apply(ws: Path) -> None:
        import numpy as np

        p = ws / path
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for key, f in changes.items():
            if f is None:
                assert key in arrays, f"{key} not in {p}"
                del arrays[key]
            else:
                arrays[key] = f(arrays.get(key))
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    return apply


def npy_objects(path: str) -> Mutation:
    """A ``.npy`` holding Python objects (pickled)."""

    def apply(ws: Path) -> None:
        import numpy as np

        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = [0.1, 0.2], {"x": 1}
        np.save(ws / path, arr, allow_pickle=True)

    return apply


def checkpoint_change(path: str, change: Callable[[dict], None]) -> Mutation:
    """Rewrite a ``weights.N.pt`` after ``change(state)`` edits its plain dict of tensors."""

    def apply(ws: Path) -> None:
        import torch

        p = ws / path
        state = torch.load(p, map_location="cpu", weights_only=True)
        change(state)
        torch.save(state, p)

    return apply


def grow_first_tensor(state: dict) -> None:
    """The model's first parameter one row larger: a checkpoint of another architecture."""
    import torch

    name = next(iter(state["model"]))
    t = state["model"][name]
    state["model"][name] = torch.zeros((t.shape[0] + 1, *t.shape[1:]), dtype=t.dtype)
