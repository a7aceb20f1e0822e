"""The particle table: one row per image, whatever format the particles came from.

A particle is a set of one or more images (a tilt series, or a single SPA image). Every reader in
:mod:`hetfield.io.readers` produces a :class:`ParticleTable`; everything downstream reads only this.

Columns of ``ParticleTable.images`` (units in the names; angles in degrees as in the files):

=====================  =======  ===========================================================
particle               int64    0..N-1, rows of one particle are contiguous
particle_name          str      the particle's name in the source (group name, particle id…)
group                  str      tomogram / micrograph name ("" when unknown)
image_path             str      stack file, resolved to an existing absolute path
image_index            int64    0-based index of the image in its stack
frame                  int64    tilt-series frame index of the image (0 for SPA)
euler_rot_deg          float64  RELION Euler angles of this image's projection
euler_tilt_deg         float64  (for optimisation sets: tilt matrix ∘ particle rotation)
euler_psi_deg          float64
origin_x_A             float64  RELION origin in Å: the particle sits at -origin in the image
origin_y_A             float64
pixel_size_A           float64  > 0
voltage_kV             float64
cs_mm                  float64
amplitude_contrast     float64
defocus_u_A            float64  (per image; for optimisation sets it includes the depth)
defocus_v_A            float64
defocus_angle_deg      float64
phase_shift_deg        float64
ctf_bfactor_A2         float64  CTF envelope B-factor (0 when the column carries dose instead)
ctf_scale              float64  linear scale of the CTF (RELION's _rlnCtfScalefactor, cryoSPARC's
                                ctf/scale; 1 when absent): the model multiplies the CTF by it, for
                                every reader (docs/internals.md, "CTF scale factor")
dose_e_per_A2          float64  cumulative pre-exposure before this image (0 for SPA)
stage_tilt_deg         float64  stage tilt of this image (0 for SPA; unsigned when the source
                                stores only cos(tilt))
ctf_premultiplied      bool     the image has already been multiplied by its CTF
dose_weighted          bool     the image has already been exposure-filtered
optics_group           int64
source_row             int64    row of the source's particle table this image came from
=====================  =======  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetfield.errors import InputError

IMAGE_COLUMNS: dict[str, str] = {
    "particle": "int64",
    "particle_name": "str",
    "group": "str",
    "image_path": "str",
    "image_index": "int64",
    "frame": "int64",
    "euler_rot_deg": "float64",
    "euler_tilt_deg": "float64",
    "euler_psi_deg": "float64",
    "origin_x_A": "float64",
    "origin_y_A": "float64",
    "pixel_size_A": "float64",
    "voltage_kV": "float64",
    "cs_mm": "float64",
    "amplitude_contrast": "float64",
    "defocus_u_A": "float64",
    "defocus_v_A": "float64",
    "defocus_angle_deg": "float64",
    "phase_shift_deg": "float64",
    "ctf_bfactor_A2": "float64",
    "ctf_scale": "float64",
    "dose_e_per_A2": "float64",
    "stage_tilt_deg": "float64",
    "ctf_premultiplied": "bool",
    "dose_weighted": "bool",
    "optics_group": "int64",
    "source_row": "int64",
}

POSE_COLUMNS = ("euler_rot_deg", "euler_tilt_deg", "euler_psi_deg", "origin_x_A", "origin_y_A")
NUMERIC_REQUIRED = tuple(
    c for c, t in IMAGE_COLUMNS.items() if t in ("float64", "int64") and c not in POSE_COLUMNS
)


@dataclass
class SourceInfo:
    """Where the table came from, enough to write subsets back in the user's own format.

    ``files`` maps a role (``"particles"``, ``"tomograms"``, ``"optimisation_set"``…) to the
    source file; ``reader`` names the reader that can export subsets (see ``io.readers``).
    """

    reader: str
    files: dict[str, Path]
    datadir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParticleTable:
    """Images of ``n_particles`` particles; see the module docstring for the columns."""

    images: Any  # pandas.DataFrame with IMAGE_COLUMNS
    source: SourceInfo
    has_poses: bool = True
    detection: Any = None  # hetfield.io.readers.detection.Detection: why this reader was chosen

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_particles(self) -> int:
        return int(self.images["particle"].iloc[-1]) + 1 if len(self.images) else 0

    def tilts_per_particle(self):
        """``(N,)`` int64 number of images of every particle."""
        import numpy as np

        return np.bincount(self.images["particle"].to_numpy(), minlength=self.n_particles)

    def particle_offsets(self):
        """``(N+1,)`` int64: images of particle ``p`` are rows ``offsets[p]:offsets[p+1]``."""
        import numpy as np

        return np.concatenate([[0], np.cumsum(self.tilts_per_particle())]).astype(np.int64)

    def validate(self, where: str) -> "ParticleTable":
        """Check the schema and values; raise :class:`InputError` naming ``where`` and the row."""
        validate_images(self.images, where, has_poses=self.has_poses)
        return self


def validate_images(df, where: str, has_poses: bool = True) -> None:
    import numpy as np

    missing = [c for c in IMAGE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{where}: internal table lacks columns {missing}; this is a bug in the reader: please report it")
    if len(df) == 0:
        raise InputError(f"{where}: no particle images found; check that the file has data rows")
    numeric = list(NUMERIC_REQUIRED) + (list(POSE_COLUMNS) if has_poses else [])
    values = df[numeric].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"{where}: row {int(df['source_row'].iloc[row]) + 1} has a missing or non-finite "
            f"{numeric[col]}; fix or remove that row"
        )
    for col in ("pixel_size_A", "voltage_kV"):
        v = df[col].to_numpy()
        if (v <= 0).any():
            row = int(np.argmax(v <= 0))
            raise InputError(
                f"{where}: row {int(df['source_row'].iloc[row]) + 1} has {col} = {v[row]}; "
                "it must be positive: fix that value or remove the row"
            )
    w = df["amplitude_contrast"].to_numpy()
    if ((w < 0) | (w >= 1)).any():
        row = int(np.argmax((w < 0) | (w >= 1)))
        raise InputError(
            f"{where}: row {int(df['source_row'].iloc[row]) + 1} has amplitude contrast {w[row]}; "
            "it must be in [0, 1): fix that value (typical: 0.07–0.1)"
        )
    if (df["dose_e_per_A2"].to_numpy() < 0).any():
        row = int(np.argmax(df["dose_e_per_A2"].to_numpy() < 0))
        raise InputError(f"{where}: row {int(df['source_row'].iloc[row]) + 1} has a negative dose; fix the dose column (_rlnCtfBfactor = -4·dose, _rlnMicrographPreExposure)")
    particle = df["particle"].to_numpy()
    if particle[0] != 0 or (np.diff(particle) < 0).any() or (np.diff(particle) > 1).any():
        raise InputError(f"{where}: internal error: particle rows are not contiguous from 0; this is a bug in the reader: please report it")
    dup = df.duplicated(subset=["image_path", "image_index"], keep="first").to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        r = df.iloc[row]
        raise InputError(
            f"{where}: row {int(r['source_row']) + 1} refers to image {int(r['image_index']) + 1}@"
            f"{r['image_path']}, already used by an earlier row; remove the duplicate rows"
        )
