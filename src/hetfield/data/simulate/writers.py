"""Deterministic writers for the simulator: STAR (image series), MRC stacks/volumes, CSV.

Every byte depends only on the data: no timestamps (mrcfile's default header label carries the
time, so we overwrite it), fixed number formats, fixed column order. The simulator writes into the
temporary directory of :func:`hetfield.io.atomic.atomic_directory`, so the whole output appears at
once or not at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# (STAR column, Acquisition-derived key, format). Order of the columns in particles.star.
STAR_COLUMNS = (
    ("_rlnImageName", "image_name", "{}"),
    ("_rlnMicrographName", "group", "{}"),
    ("_rlnDetectorPixelSize", "pixel_size_A", "{:.6f}"),
    ("_rlnDefocusU", "defocus_u_A", "{:.2f}"),
    ("_rlnDefocusV", "defocus_v_A", "{:.2f}"),
    ("_rlnDefocusAngle", "defocus_angle_deg", "{:.2f}"),
    ("_rlnVoltage", "voltage_kV", "{:.3f}"),
    ("_rlnSphericalAberration", "cs_mm", "{:.4f}"),
    ("_rlnAmplitudeContrast", "amplitude_contrast", "{:.4f}"),
    ("_rlnPhaseShift", "phase_shift_deg", "{:.4f}"),
    ("_rlnAngleRot", "euler_rot_deg", "{:.6f}"),
    ("_rlnAngleTilt", "euler_tilt_deg", "{:.6f}"),
    ("_rlnAnglePsi", "euler_psi_deg", "{:.6f}"),
    ("_rlnOriginXAngst", "origin_x_A", "{:.6f}"),
    ("_rlnOriginYAngst", "origin_y_A", "{:.6f}"),
    ("_rlnCtfBfactor", "ctf_bfactor", "{:.6f}"),
    ("_rlnCtfScalefactor", "ctf_scale", "{:.8f}"),
    ("_rlnGroupName", "particle_name", "{}"),
)


def format_star(columns: dict[str, object], n_rows: int, comment: str) -> str:
    """A single-block (``data_``) STAR loop with :data:`STAR_COLUMNS`, as in tomo-sim-50S."""
    lines = [f"# {comment}", "", "data_", "", "loop_"]
    lines += [f"{name} #{i + 1}" for i, (name, _, _) in enumerate(STAR_COLUMNS)]
    cols = []
    for _, key, fmt in STAR_COLUMNS:
        v = columns[key]
        if np.ndim(v) == 0:
            cols.append([fmt.format(v)] * n_rows)
        else:
            cols.append([fmt.format(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)])
    lines += [" ".join(row) for row in zip(*cols)]
    return "\n".join(lines) + "\n"


def _finish_header(mrc, voxel_size_A: float, label: str) -> None:
    """Voxel size, zero origin, one fixed label and the data statistics: what the simulator's files carry."""
    mrc.voxel_size = float(voxel_size_A)
    mrc.header.origin = (0.0, 0.0, 0.0)
    mrc.header.label[0] = label[:80].ljust(80).encode("ascii")
    mrc.header.nlabl = 1
    mrc.update_header_stats()


def write_mrc(path: Path, data: np.ndarray, voxel_size_A: float, label: str, stack: bool) -> None:
    """Write float32 ``data`` (image stack ``(n, y, x)`` or volume ``(z, y, x)``) with a fixed label."""
    import mrcfile

    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
        if stack:
            mrc.set_image_stack()
        else:
            mrc.set_volume()
        _finish_header(mrc, voxel_size_A, label)


@contextlib.contextmanager
def stack_writer(path: Path, n_images: int, box: int, pixel_size_A: float, label: str) -> Iterator[np.ndarray]:
    """Yield the memory-mapped float32 data ``(n, box, box)`` of a new MRC stack; finish its header on exit.

    The stack is filled in place, so no stack is ever held in memory whole.
    """
    import mrcfile

    with mrcfile.new_mmap(str(path), shape=(n_images, box, box), mrc_mode=2, overwrite=True) as mrc:
        yield mrc.data
        mrc.set_image_stack()
        _finish_header(mrc, pixel_size_A, label)


def format_csv(header: list[str], rows: list[list[object]]) -> str:
    """Comma-separated text; values are already formatted strings or ints."""
    return "\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n"
