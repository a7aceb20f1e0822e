"""cryoSPARC ``.cs`` particle files (numpy structured arrays, read with ``allow_pickle=False``).

Fields used: ``blob/path`` (a leading ``>`` is stripped), ``blob/idx`` (0-based), ``blob/shape``,
``blob/psize_A``, ``ctf/df1_A``, ``ctf/df2_A``, ``ctf/df_angle_rad``, ``ctf/phase_shift_rad``,
``ctf/accel_kv``, ``ctf/cs_mm``, ``ctf/amp_contrast``, ``ctf/bfactor``, ``ctf/scale`` (the CTF's
linear scale, like RELION's ``_rlnCtfScalefactor``; 1 when absent), ``ctf/exp_group_id``,
``alignments3D/pose`` and ``alignments3D/shift``.

Pose convention (the facts pyem's ``csparc2star`` and cryoDRGN's ``parse_pose_csparc`` rely on):
``alignments3D/pose`` is an axis-angle vector ``v`` (radians) and RELION's matrix is the TRANSPOSE of
its Rodrigues matrix, ``A = R(v).T`` (pyem's ``expmap`` returns ``R(v).T`` and feeds it to RELION's
Euler decomposition; cryoDRGN transposes ``expmap(v)`` into the same matrix its ``R_from_relion``
builds from RELION angles). ``alignments3D/shift`` is in pixels and equals RELION's origin:
``origin_A = shift × alignments3D/psize_A`` (``blob/psize_A`` when absent), particle at ``-origin``.
A file with only ``alignments2D`` (2D classification, import) has no 3D poses: ``has_poses=False``,
NaN angles and origins.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.imaging.rotations import matrix_to_euler, rotvec_to_matrix
from hetfield.io.readers import _common as C
from hetfield.table import ParticleTable, SourceInfo

NAME = "cryosparc"

REQUIRED = ("blob/path", "blob/idx", "blob/psize_A", "ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad",
            "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast")


def load_cs(path) -> np.ndarray:
    """The structured array in a ``.cs`` file; InputError for anything else."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path of the .cs file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: not a readable cryoSPARC .cs file ({exc}); export the particles from cryoSPARC again"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None:
        raise InputError(f"{path}: not a cryoSPARC .cs file (no named fields); export the particles from cryoSPARC as a .cs file")
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def missing(arr: np.ndarray) -> list[str]:
    names = set(arr.dtype.names or ())
    return [f for f in REQUIRED if f not in names]


def _field(arr, name, default=None):
    if name in arr.dtype.names:
        return np.asarray(arr[name])
    if default is None:
        raise KeyError(name)
    return np.full(len(arr), default)


def _decode(values) -> np.ndarray:
    out = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return out


def poses_from_cs(pose: np.ndarray, shift_px: np.ndarray, psize_A: np.ndarray) -> dict[str, np.ndarray]:
    """RELION Euler angles (deg) and origins (Å) from cryoSPARC pose vectors and shifts (pixels)."""
    A = np.swapaxes(rotvec_to_matrix(np.asarray(pose, dtype=np.float64)), -1, -2)
    rot, tilt, psi = matrix_to_euler(A)
    shift = np.asarray(shift_px, dtype=np.float64)
    return {"euler_rot_deg": rot, "euler_tilt_deg": tilt, "euler_psi_deg": psi,
            "origin_x_A": shift[:, 0] * psize_A, "origin_y_A": shift[:, 1] * psize_A}


def read(path, datadir=None, check_images: bool = True, arr: np.ndarray | None = None) -> ParticleTable:
    path = Path(path).resolve()
    where = str(path)
    arr = load_cs(path) if arr is None else arr
    if len(arr) == 0:
        raise InputError(f"{where}: the .cs file holds no particles; export a job with particles from cryoSPARC")
    miss = missing(arr)
    if miss:
        raise InputError(f"{where}: missing field(s) {', '.join(miss)}, needed by the 'cryosparc' reader; "
                         "export the particles with their CTF and blob fields from cryoSPARC")
    n = len(arr)
    paths = _decode(arr["blob/path"])
    paths = np.array([p[1:] if p.startswith(">") else p for p in paths], dtype=object)
    apix = _field(arr, "blob/psize_A").astype(np.float64)
    has_poses = "alignments3D/pose" in arr.dtype.names and "alignments3D/shift" in arr.dtype.names
    if has_poses:
        psize_align = _field(arr, "alignments3D/psize_A", 0.0).astype(np.float64)
        psize_align = np.where(psize_align > 0, psize_align, apix)
        poses = poses_from_cs(arr["alignments3D/pose"], arr["alignments3D/shift"], psize_align)
    else:
        nan = np.full(n, np.nan)
        poses = {c: nan.copy() for c in ("euler_rot_deg", "euler_tilt_deg", "euler_psi_deg",
                                         "origin_x_A", "origin_y_A")}
    scale = _field(arr, "ctf/scale", 1.0).astype(np.float64)
    C.check_ctf_scale(scale, where, what="ctf/scale")
    names = (_decode(arr["uid"]) if "uid" in arr.dtype.names else np.arange(n).astype(str).astype(object))
    group = (_decode(arr["location/micrograph_path"]) if "location/micrograph_path" in arr.dtype.names
             else np.full(n, "", dtype=object))
    cols = {
        "particle_name": names,
        "group": group,
        "image_path": paths,
        "image_index": _field(arr, "blob/idx").astype(np.int64),
        **poses,
        "pixel_size_A": apix,
        "voltage_kV": _field(arr, "ctf/accel_kv").astype(np.float64),
        "cs_mm": _field(arr, "ctf/cs_mm").astype(np.float64),
        "amplitude_contrast": _field(arr, "ctf/amp_contrast").astype(np.float64),
        "defocus_u_A": _field(arr, "ctf/df1_A").astype(np.float64),
        "defocus_v_A": _field(arr, "ctf/df2_A").astype(np.float64),
        "defocus_angle_deg": np.degrees(_field(arr, "ctf/df_angle_rad").astype(np.float64)),
        "phase_shift_deg": np.degrees(_field(arr, "ctf/phase_shift_rad", 0.0).astype(np.float64)),
        "ctf_bfactor_A2": _field(arr, "ctf/bfactor", 0.0).astype(np.float64),
        "ctf_scale": scale,
        "dose_e_per_A2": np.zeros(n),
        "stage_tilt_deg": np.zeros(n),
        "ctf_premultiplied": np.zeros(n, dtype=bool),
        "dose_weighted": np.zeros(n, dtype=bool),
        "optics_group": _field(arr, "ctf/exp_group_id", 0).astype(np.int64) + 1,
        "source_row": np.arange(n, dtype=np.int64),
    }
    sign = float(np.median(arr["blob/sign"])) if "blob/sign" in arr.dtype.names else None
    source = SourceInfo(reader=NAME, files={"particles": path}, datadir=Path(datadir) if datadir else None,
                        extra={"blob_sign": sign})
    return C.assemble(cols, np.arange(n), where=where, source=source, has_poses=has_poses,
                      check_images=check_images, star_dir=path.parent, datadir=datadir,
                      frame=np.zeros(n, dtype=np.int64), presorted=True)


def export(source: SourceInfo, rows, out_path) -> list[Path]:
    """The selected rows of the structured array, written with ``np.save`` into a file object."""
    from hetfield.io.atomic import write_bytes_atomic

    arr = load_cs(source.files["particles"])
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size and (rows.min() < 0 or rows.max() >= len(arr)):
        bad = int(rows[(rows < 0) | (rows >= len(arr))][0])
        raise InputError(f"{source.files['particles']}: cannot export row {bad + 1}: the file has {len(arr)} rows")
    buf = io.BytesIO()
    np.save(buf, arr[rows], allow_pickle=False)
    return [write_bytes_atomic(out_path, buf.getvalue())]
