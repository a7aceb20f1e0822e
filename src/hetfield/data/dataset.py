"""A prepared dataset (the output of ``hetfield setup``), opened for training and analysis.

:meth:`Dataset.open` validates everything the rest of hetfield later trusts, so a damaged dataset
is one :class:`~hetfield.errors.DatasetError` line in every command that opens it, never a traceback
deep inside training: every key of ``dataset.yaml`` that is read (present, of its type, in range),
every array of ``arrays.npz`` (present, dtype, shape, finite, offsets consistent) and the header of
``images.npy``. ``particles.star`` is read (and checked) when :attr:`Dataset.table` is first used.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from hetfield.data.cache import (
    CACHE_FORMAT,
    META_SCHEMA,
    METADATA_FILES,
    REQUIRED_FILES,
    SOURCE_SCHEMA,
    PreprocessSettings,
    array_schema,
    input_fingerprint,
)
from hetfield.errors import DatasetError

_TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "text"),
    "str?": (lambda v: v is None or isinstance(v, str), "text or null"),
    "dict": (lambda v: isinstance(v, dict), "a mapping"),
}


def _redo(path: Path, meta: dict | None = None) -> str:
    particles = meta.get("particles") if isinstance(meta, dict) and isinstance(meta.get("particles"), str) else "FILE"
    return f"run `hetfield setup {path} --particles {particles} --force` to prepare it again"


def _check_keys(mapping: dict, schema: dict[str, str], where: str, prefix: str, redo: str) -> None:
    for key, kind in schema.items():
        test, what = _TYPES[kind]
        if key not in mapping:
            raise DatasetError(f"{where}: key {prefix}{key} is missing; the dataset is damaged: {redo}")
        if not test(mapping[key]):
            raise DatasetError(
                f"{where}: key {prefix}{key} holds {mapping[key]!r}, not {what}; the dataset is damaged: {redo}"
            )


def validate_meta(meta: Any, path: Path) -> dict[str, Any]:
    """The checks on ``dataset.yaml`` (types, ranges, consistency); returns ``meta``."""
    import math

    where = str(path / "dataset.yaml")
    if not isinstance(meta, dict) or "fingerprint" not in meta:
        raise DatasetError(f"{where}: not a hetfield dataset summary; {_redo(path)}")
    redo = _redo(path, meta)
    if meta.get("cache_format") != CACHE_FORMAT:
        raise DatasetError(
            f"{path}: prepared by another hetfield version (cache format {meta.get('cache_format')}, "
            f"this version reads {CACHE_FORMAT}); {redo}"
        )
    _check_keys(meta, META_SCHEMA, where, "", redo)
    _check_keys(meta["source"], SOURCE_SCHEMA, where, "source.", redo)
    _check_keys(meta["normalization"], {"std": "float"}, where, "normalization.", redo)

    def bad(key, why):
        return DatasetError(f"{where}: {key} = {_get(meta, key)!r} {why}; the dataset is damaged: {redo}")

    if meta["box"] < 2 or meta["box"] % 2:
        raise bad("box", "is not an even number of pixels")
    if meta["lattice"] != meta["box"] + 1:
        raise bad("lattice", f"does not match box {meta['box']} (lattice = box + 1)")
    if not (math.isfinite(meta["pixel_size_A"]) and meta["pixel_size_A"] > 0):
        raise bad("pixel_size_A", "is not a positive pixel size")
    if meta["n_particles"] < 1:
        raise bad("n_particles", "is not a positive count")
    if meta["n_images"] < meta["n_particles"]:
        raise bad("n_images", f"is smaller than n_particles {meta['n_particles']}")
    std = meta["normalization"]["std"]
    if not (math.isfinite(std) and std > 0):
        raise bad("normalization.std", "is not a positive standard deviation")
    from hetfield.io.readers import SOURCES

    if meta["source"]["reader"] not in SOURCES:
        raise bad("source.reader", f"is not a reader ({', '.join(SOURCES)})")
    for role, rel in meta["source"]["files"].items():
        if not isinstance(rel, str):
            raise bad(f"source.files.{role}", "is not a path")
    try:
        PreprocessSettings(**meta["preprocessing"])
    except TypeError as err:
        raise DatasetError(f"{where}: preprocessing settings are not this version's ({err}); {redo}") from None
    return meta


def _get(meta: dict, dotted: str):
    v: Any = meta
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def validate_arrays(arrays: dict[str, Any], n: int, n_particles: int, path: Path, redo: str) -> None:
    """Every array present with its dtype and shape, finite, and the particle offsets consistent."""
    import numpy as np

    where = str(path / "arrays.npz")
    for name, (dtype, shape) in array_schema(n, n_particles).items():
        a = arrays.get(name)
        if a is None:
            raise DatasetError(f"{where}: array {name!r} is missing; the dataset is damaged: {redo}")
        if a.dtype != np.dtype(dtype) or a.shape != shape:
            raise DatasetError(
                f"{where}: array {name!r} is {a.dtype} {a.shape}, expected {dtype} {shape} (dataset.yaml: "
                f"{n} images, {n_particles} particles); the dataset is damaged: {redo}"
            )
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DatasetError(f"{where}: array {name!r} holds NaN or infinite values; the dataset is damaged: {redo}")
    off = arrays["particle_offsets"]
    if off[0] != 0 or off[-1] != n or (np.diff(off) < 1).any():
        raise DatasetError(
            f"{where}: particle_offsets do not split {n} images into {n_particles} particles of at least one image; "
            f"the dataset is damaged: {redo}"
        )
    if not np.array_equal(arrays["particle"], np.repeat(np.arange(n_particles), np.diff(off))):
        raise DatasetError(f"{where}: 'particle' disagrees with particle_offsets; the dataset is damaged: {redo}")
    if (arrays["pixel_size_A"] <= 0).any():
        raise DatasetError(f"{where}: a pixel size is not positive; the dataset is damaged: {redo}")


def _open_images(path: Path, n: int, d: int, redo: str):
    """``images.npy`` memory-mapped, its header checked against dataset.yaml."""
    import numpy as np

    try:
        images = np.load(path / "images.npy", mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{path / 'images.npy'}: damaged ({err}); {redo}") from None
    if not isinstance(images, np.ndarray) or images.shape != (n, d, d) or images.dtype != np.float32:
        raise DatasetError(
            f"{path / 'images.npy'}: {getattr(images, 'dtype', '?')} {getattr(images, 'shape', '?')} does not "
            f"match dataset.yaml (float32 ({n}, {d}, {d})); {redo}"
        )
    return images


class Dataset:
    """Read-only view of ``DATASET/``: memory-mapped images plus per-image arrays.

    ``images[i]`` is the ``(D+1, D+1)`` normalised Hartley transform of image ``i``; the images of
    particle ``p`` are ``offsets[p]:offsets[p+1]``.
    """

    def __init__(self, path: Path, meta: dict[str, Any], images, arrays: dict[str, Any]):
        self.path = path
        self.meta = meta
        self.images = images
        self.arrays = arrays

    @classmethod
    def open(cls, path: str | os.PathLike, images: bool = True) -> "Dataset":
        """Open and validate ``path``. ``images=False`` opens the metadata alone (``METADATA_FILES``:
        enough for analyses and STAR exports); :attr:`images` is then ``None``."""
        import zipfile
        import zlib

        import numpy as np
        import yaml

        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: no prepared dataset here; run `hetfield setup {path} --particles …` first")
        missing = [f for f in (REQUIRED_FILES if images else METADATA_FILES) if not (path / f).is_file()]
        if missing:
            raise DatasetError(f"{path}: incomplete dataset (missing {', '.join(missing)}); {_redo(path)}")
        try:
            meta = yaml.safe_load((path / "dataset.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise DatasetError(f"{path / 'dataset.yaml'}: unreadable YAML{where}; {_redo(path)}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(f"{path / 'dataset.yaml'}: cannot read it ({err}); {_redo(path)}") from None
        meta = validate_meta(meta, path)
        redo = _redo(path, meta)
        n, d, n_part = meta["n_images"], meta["lattice"], meta["n_particles"]
        stack = _open_images(path, n, d, redo) if images else None
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise DatasetError(f"{path / 'arrays.npz'}: damaged or truncated ({err}); {redo}") from None
        validate_arrays(arrays, n, n_part, path, redo)
        return cls(path, meta, stack, arrays)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def box(self) -> int:
        return int(self.meta["box"])

    @cached_property
    def lattice(self):
        from hetfield.imaging.lattice import Lattice

        return Lattice(self.box)

    @property
    def pixel_size_A(self) -> float:
        return float(self.meta["pixel_size_A"])

    # -- counts -------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @property
    def n_particles(self) -> int:
        return int(self.meta["n_particles"])

    @property
    def offsets(self):
        return self.arrays["particle_offsets"]

    @cached_property
    def tilts_per_particle(self):
        import numpy as np

        return np.diff(self.offsets)

    @property
    def has_poses(self) -> bool:
        return bool(self.meta["has_poses"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta["summary"]

    def particle_images(self, p: int) -> slice:
        return slice(int(self.offsets[p]), int(self.offsets[p + 1]))

    # -- the table and its source ---------------------------------------------------------------
    @cached_property
    def table(self):
        """The particle table (pandas DataFrame, one row per image; names and paths stay text)."""
        import numpy as np

        from hetfield.table import IMAGE_COLUMNS
        from hetfield.errors import InputError
        from hetfield.io.star.blocks import STRING_COLUMNS
        from hetfield.io.star.read import read_star

        star_path = self.path / "particles.star"
        redo = _redo(self.path, self.meta)
        text = {c for c, t in IMAGE_COLUMNS.items() if t == "str"}
        try:
            star = read_star(star_path, string_columns=STRING_COLUMNS | text)
        except InputError as err:
            raise DatasetError(f"{err}; the dataset is damaged: {redo}") from None
        block = star.blocks.get("images")
        if block is None or block.kind != "loop":
            raise DatasetError(f"{star_path}: no data_images table; the dataset is damaged: {redo}")
        df = block.df
        lacking = [c for c in IMAGE_COLUMNS if c not in df.columns]
        if lacking:
            raise DatasetError(f"{star_path}: columns {', '.join(lacking)} are missing; the dataset is damaged: {redo}")
        if len(df) != self.n_images:
            raise DatasetError(f"{star_path}: {len(df)} rows, but dataset.yaml says {self.n_images} images; "
                               f"the dataset is damaged: {redo}")
        for col, kind in IMAGE_COLUMNS.items():
            try:
                if kind == "str":
                    df[col] = df[col].astype(str).astype(object)
                elif kind == "bool":
                    df[col] = df[col].to_numpy(np.int64) != 0
                else:
                    df[col] = df[col].to_numpy(kind)
            except (ValueError, TypeError):
                raise DatasetError(f"{star_path}: column {col} is not {kind}; the dataset is damaged: {redo}") from None
        if not np.array_equal(df["particle"].to_numpy(), self.arrays["particle"]):
            raise DatasetError(f"{star_path}: particle numbers disagree with arrays.npz; the dataset is damaged: {redo}")
        return df

    @cached_property
    def particle_names(self) -> list[str]:
        df = self.table
        return df["particle_name"].to_numpy()[self.offsets[:-1]].tolist()

    @cached_property
    def source_info(self):
        """:class:`~hetfield.table.SourceInfo` pointing at the copies in ``DATASET/source``."""
        from hetfield.table import SourceInfo

        src = self.meta["source"]
        return SourceInfo(
            reader=src["reader"],
            files={role: self.path / rel for role, rel in src["files"].items()},
            datadir=Path(self.meta["datadir"]) if self.meta.get("datadir") else None,
            extra=src.get("extra") or {},
        )

    def check_fresh(self) -> None:
        """Raise :class:`DatasetError` when the original inputs changed after ``setup``.

        Inputs that are no longer reachable (a dataset copied to a cluster) cannot be checked, and
        the cache is self-contained, so that is not an error.
        """
        originals = {k: Path(v) for k, v in self.meta["source"]["original_files"].items()}
        if not all(p.is_file() for p in originals.values()):
            return
        stacks = self.table["image_path"].unique()
        if not all(os.path.exists(p) for p in stacks):
            return
        settings = PreprocessSettings(**self.meta["preprocessing"])
        identity = self.meta["source"].get("identity")
        if input_fingerprint(originals, stacks, settings, identity) != self.fingerprint:
            raise DatasetError(
                f"{self.path}: stale: its particle files or stacks changed after `hetfield setup`; "
                f"run `hetfield setup {self.path} --particles {self.meta.get('particles')} --force`"
            )
