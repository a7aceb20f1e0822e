"""The prepared dataset's schema, shared by ``setup`` (which writes it), :class:`~hetfield.data.dataset.Dataset`
(which validates it) and the batches (which read it).

What is here decides whether two caches are the same: the format number, the files a complete cache
holds, the per-image arrays with their dtypes, the ``dataset.yaml`` keys later code trusts, the
preprocessing settings and the fingerprint of the inputs. A change to any of them that changes what
is written raises :data:`CACHE_FORMAT`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hetfield.errors import ConfigError

CACHE_FORMAT = 3  # 3: particles.star round-trips (io.star.write_star); flags, reader and detection recorded

REQUIRED_FILES = ("dataset.yaml", "images.npy", "arrays.npz", "particles.star")
# What the analyses read (names, poses, CTF, the particle table, and the copies of the user's files
# in source/ that STAR exports are written from): everything but the image cache. A directory of only
# these opens with ``Dataset.open(path, images=False)``; the pipeline stages it into ANALYZE instead
# of the whole cache (modules/local/setup copies METADATA_PATHS).
METADATA_FILES = tuple(f for f in REQUIRED_FILES if f != "images.npy")
SOURCE_DIR = "source"
METADATA_PATHS = METADATA_FILES + (SOURCE_DIR,)

# arrays.npz: per-image values, one per image (n,), besides particle, particle_offsets, rotation, origin_px
PER_IMAGE_FLOAT = (
    "pixel_size_A",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "phase_shift_deg",
    "ctf_bfactor_A2",
    "ctf_scale",
    "dose_e_per_A2",
    "stage_tilt_deg",
)
PER_IMAGE_BOOL = ("ctf_premultiplied", "dose_weighted")

# dataset.yaml: key -> type ("int", "float", "bool", "str", "dict", "str?" = str or null)
META_SCHEMA: dict[str, str] = {
    "cache_format": "int",
    "fingerprint": "str",
    "particles": "str",
    "datadir": "str?",
    "box": "int",
    "lattice": "int",
    "pixel_size_A": "float",
    "n_particles": "int",
    "n_images": "int",
    "has_poses": "bool",
    "normalization": "dict",
    "preprocessing": "dict",
    "source": "dict",
    "summary": "dict",
}
SOURCE_SCHEMA = {"reader": "str", "files": "dict", "original_files": "dict"}


def array_schema(n: int, n_particles: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``arrays.npz``: name -> (dtype, shape) for ``n`` images of ``n_particles`` particles."""
    schema = {
        "particle": ("int64", (n,)),
        "particle_offsets": ("int64", (n_particles + 1,)),
        "rotation": ("float32", (n, 3, 3)),
        "origin_px": ("float32", (n, 2)),
    }
    for col in PER_IMAGE_BOOL:
        schema[col] = ("bool", (n,))
    for col in PER_IMAGE_FLOAT:
        schema[col] = ("float32", (n,))
    return schema


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes the cache's contents (and therefore its fingerprint)."""

    invert: bool = True  # invert non-premultiplied images (see data.transform.contrast_signs)
    downsample: int | None = None
    window: bool = True
    window_inner: float = 0.8
    window_outer: float = 0.9
    angpix_A: float | None = None
    norm_seed: int = 0
    # None: as the particle file says (the reader's detection); True/False: the user's override
    ctf_premultiplied: bool | None = None
    dose_weighted: bool | None = None
    flip_hand: bool | None = None

    def check(self, box: int | None = None) -> None:
        if self.downsample is not None:
            if self.downsample < 8 or self.downsample % 2:
                raise ConfigError(f"--downsample {self.downsample}: the new box must be even and at least 8 pixels; choose an even size of 8 or more")
            if box is not None and self.downsample > box:
                raise ConfigError(
                    f"--downsample {self.downsample} is larger than the images' box {box}; "
                    "Fourier cropping can only make images smaller; choose a smaller --downsample or drop it"
                )
        if self.angpix_A is not None and not self.angpix_A > 0:
            raise ConfigError(f"--angpix {self.angpix_A}: the pixel size must be positive (Å); pass the pixel size of the images")
        if not 0 < self.window_inner < self.window_outer <= 1.0:
            raise ConfigError(
                f"window radii {self.window_inner}, {self.window_outer}: need 0 < inner < outer <= 1 "
                "(fractions of the half box); choose radii in that range"
            )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprint(source_files: dict[str, Path], stack_paths, settings: PreprocessSettings,
                      identity: dict[str, Any] | None = None) -> str:
    """Hash of the cache format, the settings, how the file was read (``identity``: reader, hand
    flip), the source files' bytes and the stacks' size/mtime.

    Stacks are identified by path, size and modification time rather than content: hashing
    terabytes of images on every ``setup`` would cost more than the preprocessing itself.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "settings": asdict(settings), "identity": identity or {}},
                        sort_keys=True, default=str).encode())
    for role in sorted(source_files):
        h.update(role.encode())
        h.update(_sha256_file(Path(source_files[role])).encode())
    for p in sorted(set(map(str, stack_paths))):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]
