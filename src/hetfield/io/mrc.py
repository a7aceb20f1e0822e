"""MRC image stacks and volumes: lazy reading, permissive headers, atomic writing.

:func:`open_stack` reads only the 1024-byte header (plus the file size) and memory-maps the data on
each :meth:`ImageStack.read`, so opening thousands of per-particle stacks holds no file descriptors
and costs microseconds. Old headers (no ``MAP`` id, zero machine stamp: common in tomoDRGN's and
Warp's older outputs) are read little-endian with ONE :class:`MRCHeaderWarning` per file and process,
instead of mrcfile's repeated ``RuntimeWarning``\\ s. A file whose data is shorter than its header
says, an unsupported mode, or non-square images are an :class:`~hetfield.errors.InputError` naming
the file.

Volumes are ``[z, y, x]`` float32; :func:`write_mrc` writes float32 with origin 0 and
``nxstart = nystart = nzstart = 0`` so ChimeraX shows the box at the origin with the right voxel size.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetfield.errors import InputError

HEADER_BYTES = 1024

# MRC mode -> numpy dtype (little-endian; byte-swapped for big-endian files). Mode 0 is read signed.
_MODE_DTYPES = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}
_MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}


class MRCHeaderWarning(UserWarning):
    """An MRC header is old-style or slightly malformed; the file was read permissively."""


_warned: set[str] = set()


def _header_dtype():
    import mrcfile.dtypes

    return mrcfile.dtypes.HEADER_DTYPE


@dataclass(frozen=True)
class MRCHeader:
    """The fields of an MRC header that reading needs."""

    path: str
    nx: int
    ny: int
    nz: int
    mode: int
    dtype: np.dtype
    data_offset: int
    voxel_size_A: float
    file_size: int
    old_style: bool


def read_header(path: str | os.PathLike, warn: bool = True) -> MRCHeader:
    """Parse the header of ``path`` (no data read); see the module docstring for the checks."""
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise InputError(f"{path}: cannot read MRC file ({exc.strerror or exc}); check that it exists and that you may read it") from None
    if len(raw) < HEADER_BYTES:
        raise InputError(f"{path}: not an MRC file (only {len(raw)} bytes, shorter than the 1024-byte header); check the path, or re-copy the file")
    hdr_le = np.frombuffer(raw, dtype=_header_dtype(), count=1)[0]
    machst = bytes(hdr_le["machst"])
    map_id = bytes(hdr_le["map"])
    if machst[:1] == b"\x11":
        order = ">"
    elif machst[:1] in (b"\x44", b"\x41"):
        order = "<"
    else:  # unknown stamp (old headers: zeros): little-endian unless that gives nonsense
        order = "<" if int(hdr_le["mode"]) in _MODE_DTYPES or int(hdr_le["mode"]) in _MODE_NAMES else ">"
    hdr = hdr_le if order == "<" else np.frombuffer(raw, dtype=_header_dtype().newbyteorder(">"), count=1)[0]
    old_style = map_id != b"MAP " or machst[:2] not in (b"\x44\x44", b"\x44\x41", b"\x11\x11")
    mode = int(hdr["mode"])
    if mode not in _MODE_DTYPES:
        what = _MODE_NAMES.get(mode, "unknown")
        raise InputError(
            f"{path}: MRC mode {mode} ({what}) is not supported; images must be real-valued "
            "(modes 0, 1, 2, 6 or 12); convert the file, e.g. with `mrcfile` or IMOD's newstack -mode 2"
        )
    nx, ny, nz = int(hdr["nx"]), int(hdr["ny"]), int(hdr["nz"])
    if nx <= 0 or ny <= 0 or nz <= 0:
        raise InputError(f"{path}: MRC header gives an empty or negative size {nx}×{ny}×{nz}; re-export the stack")
    dtype = np.dtype(_MODE_DTYPES[mode]).newbyteorder(order)
    nsymbt = max(int(hdr["nsymbt"]), 0)
    offset = HEADER_BYTES + nsymbt
    expected = offset + nx * ny * nz * dtype.itemsize
    if size < expected:
        raise InputError(
            f"{path}: MRC file is truncated: its header promises {nz} section(s) of {ny}×{nx} "
            f"{dtype.name} ({expected} bytes) but the file has {size} bytes; re-copy or re-export it"
        )
    mx = int(hdr["mx"])
    cella_x = float(hdr["cella"]["x"])
    voxel = cella_x / mx if mx > 0 and np.isfinite(cella_x) else 0.0
    if old_style and warn and path not in _warned:
        _warned.add(path)
        warnings.warn(
            f"{path}: old-style MRC header (map id {map_id!r}, machine stamp {machst.hex()}); "
            "read as little-endian",
            MRCHeaderWarning,
            stacklevel=3,
        )
    return MRCHeader(path, nx, ny, nz, mode, dtype, offset, voxel, size, old_style)


class ImageStack:
    """A lazily read stack of square images ``(n_images, box, box)``.

    ``read(indices)`` memory-maps the file, copies the requested images as float32 and lets the map
    go, so no file stays open between reads. A 2D single-image file counts as one image.
    """

    def __init__(self, header: MRCHeader):
        self.header = header
        self.path = header.path

    @property
    def shape(self) -> tuple[int, int, int]:
        h = self.header
        return (h.nz, h.ny, h.nx)

    @property
    def dtype(self) -> np.dtype:
        return self.header.dtype

    @property
    def box(self) -> int:
        return self.header.nx

    @property
    def n_images(self) -> int:
        return self.header.nz

    @property
    def voxel_size_A(self) -> float:
        return self.header.voxel_size_A

    def __len__(self) -> int:
        return self.n_images

    def __repr__(self) -> str:
        return f"ImageStack({self.path!r}, shape={self.shape}, dtype={self.dtype.name})"

    def _memmap(self) -> np.memmap:
        h = self.header
        return np.memmap(h.path, dtype=h.dtype, mode="r", offset=h.data_offset, shape=self.shape)

    def read(self, indices=None) -> np.ndarray:
        """Images at ``indices`` (int, slice, or 0-based integer array; all when None) as float32."""
        if indices is None:
            sel = slice(None)
        elif isinstance(indices, slice):
            sel = indices
        else:
            sel = np.asarray(indices, dtype=np.int64)
            if sel.size and (sel.min() < 0 or sel.max() >= self.n_images):
                bad = int(sel[(sel < 0) | (sel >= self.n_images)][0])
                raise InputError(
                    f"{self.path}: image {bad + 1} requested but the stack holds {self.n_images} images; fix the image index"
                )
        mm = self._memmap()
        try:
            # np.array copies, so nothing refers to the map once it is dropped
            return np.array(mm[sel], dtype=np.float32, copy=True)
        finally:
            del mm


def open_stack(path: str | os.PathLike) -> ImageStack:
    """Open an image stack lazily (header only); non-square images are an InputError."""
    header = read_header(path)
    if header.nx != header.ny:
        raise InputError(
            f"{header.path}: images are {header.ny}×{header.nx} pixels; hetfield needs square images "
            "(re-extract the particles with a square box)"
        )
    return ImageStack(header)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """``(volume float32 [z, y, x], voxel_size_A)``; a 2D file becomes a ``(1, y, x)`` array."""
    header = read_header(path)
    mm = np.memmap(header.path, dtype=header.dtype, mode="r", offset=header.data_offset,
                   shape=(header.nz, header.ny, header.nx))
    vol = np.array(mm, dtype=np.float32, copy=True)
    del mm
    return vol, header.voxel_size_A


def write_mrc(path: str | os.PathLike, data, voxel_size_A: float) -> Path:
    """Write ``data`` (2D image, image stack or ``[z, y, x]`` volume) as float32, atomically.

    The header gets the voxel size, origin 0 and start indices 0 (mrcfile's defaults would also
    give 0, we set them explicitly because ChimeraX places the box by them).
    """
    import mrcfile

    from hetfield.io.atomic import write_atomic

    arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    if arr.ndim not in (2, 3):
        raise ValueError(f"write_mrc needs a 2D or 3D array, got shape {arr.shape}")
    if not (voxel_size_A > 0):
        raise ValueError(f"voxel size must be positive, got {voxel_size_A}")

    def writer(tmp: Path) -> None:
        with mrcfile.new(str(tmp), overwrite=True) as mrc:
            mrc.set_data(arr)
            mrc.voxel_size = float(voxel_size_A)
            mrc.header.origin.x = mrc.header.origin.y = mrc.header.origin.z = 0.0
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
            mrc.update_header_stats()

    return write_atomic(path, writer)
