"""Ground truth for ``--truth DIR``: the simulator's ``truth/`` folder, or any folder of true maps.

``hetfield simulate OUT`` writes ``OUT/truth/particles.csv`` (particle_name, class, t, …),
``class_<k>.mrc`` (class ``k`` at ``t = 0.5``) and ``class_<k>_t<100t>.mrc`` along the motion. ``DIR``
may be ``OUT`` or ``OUT/truth``. A folder without ``particles.csv`` (e.g. ``tomo-sim-50S`` with its
``10076_class*_32.mrc``) gives maps only: volume correlations (a latent run's volumes decoded at
the k-means centres of z, one per map), no label metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hetfield.errors import InputError

_CLASS_MAP = re.compile(r"^class_(\d+)\.mrc$")
_MOTION_MAP = re.compile(r"^class_(\d+)_t(\d+)\.mrc$")
POSE_COLUMNS = ("euler_rot_deg", "euler_tilt_deg", "euler_psi_deg")  # the simulator's particle poses (RELION Euler)


@dataclass
class TrueMap:
    name: str
    path: Path
    volume: np.ndarray
    voxel_size_A: float
    true_class: int | None = None
    t: float | None = None


@dataclass
class Truth:
    path: Path
    particles: object | None = None  # DataFrame (particle_name, class, t, …) or None
    maps: list[TrueMap] = field(default_factory=list)
    image_names: dict = field(default_factory=dict)  # image name -> particle name (images.csv): SPA datasets name particles by image

    @property
    def has_labels(self) -> bool:
        return self.particles is not None

    def class_maps(self) -> list[TrueMap]:
        """One map per true class (``class_<k>.mrc``), ordered by class."""
        return sorted([m for m in self.maps if m.true_class is not None and m.t == 0.5 and _CLASS_MAP.match(m.path.name)],
                      key=lambda m: m.true_class)

    def maps_for_box(self, box: int) -> list[TrueMap]:
        return [m for m in self.maps if m.volume.shape == (box, box, box)]

    def rows_for(self, names: list[str]) -> np.ndarray:
        """Rows of ``particles.csv`` of the dataset's particles, by particle (or image) name."""
        df = self.particles
        lookup = {str(n): i for i, n in enumerate(df["particle_name"].astype(str))}
        lookup.update({img: lookup[p] for img, p in self.image_names.items() if p in lookup and img not in lookup})
        missing = [n for n in names if str(n) not in lookup]
        if missing:
            raise InputError(
                f"{self.path / 'particles.csv'}: {len(missing)} of the run's {len(names)} particles are not in the truth "
                f"(first: {missing[0]!r}); pass the truth of the simulation this dataset was prepared from"
            )
        return np.array([lookup[str(n)] for n in names])

    @property
    def has_poses(self) -> bool:
        return self.particles is not None and all(c in self.particles.columns for c in POSE_COLUMNS)

    def rotations_for(self, names: list[str]) -> np.ndarray:
        """``(P, 3, 3)`` float64 true rotation of each of the dataset's particles (its first image's), by name."""
        from hetfield.imaging.rotations import euler_to_matrix

        rows = self.rows_for(names)
        return euler_to_matrix(*(self.particles[c].to_numpy(np.float64)[rows] for c in POSE_COLUMNS))

    def labels_for(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(class, t)`` of the dataset's particles, by name; InputError when names do not match."""
        df = self.particles
        rows = self.rows_for(names)
        cls = df["class"].to_numpy(np.int64)[rows]
        t = df["t"].to_numpy(np.float64)[rows] if "t" in df.columns else np.full(len(rows), np.nan)
        return cls, t


def load_truth(path: str | Path) -> Truth:
    """Read ``--truth DIR`` (see the module docstring)."""
    import pandas as pd

    from hetfield.io.mrc import read_volume

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"--truth {path}: no such directory; pass the simulation folder (or its truth/ folder) or a folder of true maps")
    if (path / "truth" / "particles.csv").is_file():
        path = path / "truth"
    particles = None
    csv = path / "particles.csv"
    if csv.is_file():
        try:
            particles = pd.read_csv(csv)
        except (ValueError, OSError) as err:
            raise InputError(f"{csv}: unreadable CSV ({err}); pass the truth/ folder written by `hetfield simulate`") from None
        for col in ("particle_name", "class"):
            if col not in particles.columns:
                raise InputError(f"{csv}: no column {col!r}; pass the truth/ folder written by `hetfield simulate`")
    image_names = {}
    if particles is not None and (path / "images.csv").is_file():
        try:
            im = pd.read_csv(path / "images.csv", usecols=["image_name", "particle_name"])
            image_names = dict(zip(im["image_name"].astype(str), im["particle_name"].astype(str)))
        except (ValueError, OSError):
            pass
    maps = []
    for p in sorted(path.glob("*.mrc")):
        try:
            vol, apix = read_volume(p)
        except InputError:
            continue
        if vol.ndim != 3 or len(set(vol.shape)) != 1 or vol.shape[0] < 2:
            continue
        cls = t = None
        m = _CLASS_MAP.match(p.name)
        if m:
            cls, t = int(m.group(1)), 0.5
        m = _MOTION_MAP.match(p.name)
        if m:
            cls, t = int(m.group(1)), int(m.group(2)) / 100
        maps.append(TrueMap(name=p.stem, path=p, volume=vol, voxel_size_A=apix, true_class=cls, t=t))
    if particles is None and not maps:
        raise InputError(f"--truth {path}: neither truth/particles.csv nor any .mrc map found there; pass the simulation folder or a folder of true maps")
    return Truth(path=path, particles=particles, maps=maps, image_names=image_names)
