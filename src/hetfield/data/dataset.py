"""A prepared dataset (the output of ``hetfield setup``), opened for training and analysis."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from hetfield.errors import DatasetError

REQUIRED_FILES = ("dataset.yaml", "images.npy", "arrays.npz", "particles.star")


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
    def open(cls, path: str | os.PathLike) -> "Dataset":
        import numpy as np
        import yaml

        from hetfield.data.preprocess import CACHE_FORMAT

        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: no prepared dataset here; run `hetfield setup {path} --particles …` first")
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise DatasetError(
                f"{path}: incomplete dataset (missing {', '.join(missing)}); run `hetfield setup` again with --force"
            )
        try:
            meta = yaml.safe_load((path / "dataset.yaml").read_text())
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise DatasetError(f"{path / 'dataset.yaml'}: unreadable YAML{where}; run `hetfield setup` again with --force") from None
        if not isinstance(meta, dict) or "fingerprint" not in meta:
            raise DatasetError(f"{path / 'dataset.yaml'}: not a hetfield dataset summary; run `hetfield setup` again")
        if meta.get("cache_format") != CACHE_FORMAT:
            raise DatasetError(
                f"{path}: prepared by another hetfield version (cache format {meta.get('cache_format')}, "
                f"this version reads {CACHE_FORMAT}); run `hetfield setup` again with --force"
            )
        try:
            images = np.load(path / "images.npy", mmap_mode="r", allow_pickle=False)
            with np.load(path / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError) as err:
            raise DatasetError(f"{path}: damaged cache files ({err}); run `hetfield setup` again with --force") from None
        n, d = int(meta["n_images"]), int(meta["lattice"])
        if images.shape != (n, d, d) or images.dtype != np.float32:
            raise DatasetError(
                f"{path / 'images.npy'}: shape {images.shape} does not match dataset.yaml ({n}, {d}, {d}); "
                "run `hetfield setup` again with --force"
            )
        if arrays.get("particle_offsets") is None or int(arrays["particle_offsets"][-1]) != n:
            raise DatasetError(f"{path / 'arrays.npz'}: inconsistent with images.npy; run `hetfield setup` again with --force")
        return cls(path, meta, images, arrays)

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
        return bool(self.meta.get("has_poses", True))

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta.get("summary", {})

    def particle_images(self, p: int) -> slice:
        return slice(int(self.offsets[p]), int(self.offsets[p + 1]))

    # -- the table and its source ---------------------------------------------------------------
    @cached_property
    def table(self):
        """The particle table (pandas DataFrame, one row per image)."""
        import starfile

        df = starfile.read(self.path / "particles.star", always_dict=True)["images"]
        for col in ("particle_name", "group", "image_path"):
            df[col] = df[col].astype(str)
        return df

    @cached_property
    def particle_names(self) -> list[str]:
        df = self.table
        return df["particle_name"].to_numpy()[self.offsets[:-1]].tolist()

    @cached_property
    def source_info(self):
        """:class:`~hetfield.data.table.SourceInfo` pointing at the copies in ``DATASET/source``."""
        from hetfield.data.table import SourceInfo

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
        from hetfield.data.preprocess import PreprocessSettings, input_fingerprint

        originals = {k: Path(v) for k, v in self.meta["source"]["original_files"].items()}
        if not all(p.is_file() for p in originals.values()):
            return
        stacks = self.table["image_path"].unique()
        if not all(os.path.exists(p) for p in stacks):
            return
        settings = PreprocessSettings(**self.meta["preprocessing"])
        if input_fingerprint(originals, stacks, settings) != self.fingerprint:
            raise DatasetError(
                f"{self.path}: stale: its particle files or stacks changed after `hetfield setup`; "
                f"run `hetfield setup {self.path} --particles {self.meta.get('particles')} --force`"
            )
