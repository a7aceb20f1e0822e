"""``setup``: validate the particles once, preprocess every image once, into a memory-mapped cache.

Per image: soft circular real-space window → centred 2D Fourier transform → optional Fourier crop
(``downsample``) → Hartley values on the odd ``D+1`` lattice → contrast inversion (default) →
division by one global standard deviation estimated from a sample of ``min(n_images, 10 000)``
images. Training and analysis then read ``images.npy`` memory-mapped and never touch the stacks.

The output directory appears whole or not at all (built under a temporary name beside it), and
carries a fingerprint of everything that decides its contents: the source files' bytes, the stacks'
size and time, the reader that read them, the hand flip, every override and preprocessing setting.
Re-running ``setup`` with the same fingerprint reuses it.

Order of work, so that bad input leaves nothing behind and a replacement never needs twice the disk:

1. the output location is checked (a parent that is a file, no write permission: one line, no work);
2. the particle file is read and validated, the images of the normalisation sample are read;
3. the lock ``.DATASET.lock`` beside the dataset is taken (a second ``setup`` into the same DATASET
   fails at once; the lock file stays, holding the last holder's pid);
4. with ``--force``, the old dataset is moved aside and deleted (a kill leaves a hidden ``.old``
   directory that the next ``setup`` of that DATASET removes);
5. the new dataset is written under a hidden temporary name and renamed into place. A kill leaves
   that temporary; the next ``setup`` of the same DATASET removes it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hetfield.data.batching import PER_IMAGE_FLOAT
from hetfield.errors import ConfigError, DatasetError, InputError

CACHE_FORMAT = 3  # 3: particles.star round-trips (io.star.write_star); flags, reader and detection recorded
NORM_SAMPLE_SIZE = 10_000
CHUNK_IMAGES = 1024


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes the cache's contents (and therefore its fingerprint)."""

    invert: bool = True  # invert non-premultiplied images (see contrast_signs)
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


def _read_chunk(table_chunk, stacks: dict[str, Any]):
    """Images of the chunk's rows as ``(n, D, D)`` float32, one read per distinct stack."""
    import numpy as np

    from hetfield.io.mrc import open_stack

    paths = table_chunk["image_path"].to_numpy()
    idx = table_chunk["image_index"].to_numpy()
    out = None
    for path in dict.fromkeys(paths):
        stack = stacks.get(path)
        if stack is None:
            stack = stacks[path] = open_stack(path)
        rows = np.flatnonzero(paths == path)
        data = stack.read(idx[rows])
        if out is None:
            out = np.empty((len(paths),) + data.shape[1:], dtype=np.float32)
        out[rows] = data
    return out


def contrast_signs(table_chunk, invert: bool):
    """``(n,)`` ±1 per image: RELION stacks hold white particles, ``image = -CTF * P`` in our CTF
    convention, so they are inverted; CTF-premultiplied images hold ``CTF * (-CTF) * P`` with
    RELION's (opposite-sign) CTF, i.e. ``+CTF² P`` already, and are left as they are (measured on
    the WarpTools export: positive correlation with ``+CTF² P`` of its consensus map)."""
    import numpy as np

    pre = table_chunk["ctf_premultiplied"].to_numpy(bool)
    return np.where(invert & ~pre, -1.0, 1.0).astype(np.float32)


def _transform(images, settings: PreprocessSettings, window, out_box: int, signs):
    """Windowed images ``(n, D, D)`` → Hartley values ``(n, out_box+1, out_box+1)`` float32 (unscaled),
    multiplied by the per-image contrast ``signs``."""
    import torch

    from hetfield.imaging.hartley import fft2_center, symmetrize

    x = torch.from_numpy(images)
    if window is not None:
        x = x * window
    f = fft2_center(x.to(torch.float64))
    d = x.shape[-1]
    if out_box != d:
        lo = d // 2 - out_box // 2
        f = f[..., lo : lo + out_box, lo : lo + out_box]
    h = symmetrize(f.real - f.imag) * torch.from_numpy(signs).to(f.real.dtype)[:, None, None]
    return h.to(torch.float32).numpy()


def _check_finite(images, table_chunk, where: str) -> None:
    import numpy as np

    finite = np.isfinite(images).all(axis=(1, 2))
    if not finite.all():
        i = int(np.argmin(finite))
        r = table_chunk.iloc[i]
        raise InputError(
            f"{where}: image {int(r['image_index']) + 1}@{r['image_path']} (row {int(r['source_row']) + 1}) "
            "contains NaN or infinite pixels; remove the particle or re-extract it"
        )


def _normalization_std(table, settings, window, out_box, stacks, rng, where) -> float:
    import numpy as np

    n = len(table)
    k = min(n, NORM_SAMPLE_SIZE)
    sample = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, k, CHUNK_IMAGES):
        rows = table.iloc[sample[start : start + CHUNK_IMAGES]]
        imgs = _read_chunk(rows, stacks)
        _check_finite(imgs, rows, where)
        h = _transform(imgs, settings, window, out_box, contrast_signs(rows, settings.invert)).astype(np.float64)
        total += h.sum()
        total_sq += np.square(h).sum()
        count += h.size
    mean = total / count
    var = total_sq / count - mean * mean
    std = float(np.sqrt(max(var, 0.0)))
    if not np.isfinite(std) or std <= 0:
        raise InputError(f"{where}: the images are constant (standard deviation {std}); check the stacks")
    return std


def _per_image_arrays(table, pixel_size_A: float, has_poses: bool) -> dict[str, Any]:
    import numpy as np

    from hetfield.imaging.rotations import euler_to_matrix

    df = table.images
    if has_poses:
        rot = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"]).astype(np.float32)
        origin_px = (df[["origin_x_A", "origin_y_A"]].to_numpy(np.float64) / pixel_size_A).astype(np.float32)
    else:
        rot = np.broadcast_to(np.eye(3, dtype=np.float32), (len(df), 3, 3)).copy()
        origin_px = np.zeros((len(df), 2), np.float32)
    arrays = {
        "particle": df["particle"].to_numpy(np.int64),
        "particle_offsets": table.particle_offsets(),
        "rotation": rot,
        "origin_px": origin_px,
    }
    for col in PER_IMAGE_FLOAT:
        if col != "pixel_size_A":  # the prepared pixel size (after any downsampling), below
            arrays[col] = df[col].to_numpy(np.float32)
    arrays["pixel_size_A"] = np.full(len(df), pixel_size_A, np.float32)
    arrays["ctf_premultiplied"] = df["ctf_premultiplied"].to_numpy(bool)
    arrays["dose_weighted"] = df["dose_weighted"].to_numpy(bool)
    return arrays


def _copy_sources(source, dest: Path) -> dict[str, str]:
    dest.mkdir()
    copied: dict[str, str] = {}
    for role, path in source.files.items():
        name = f"{role}__{Path(path).name}"
        shutil.copy2(path, dest / name)
        copied[role] = f"source/{name}"
    return copied


def existing_fingerprint(out_dir: Path) -> str | None:
    import yaml

    meta = out_dir / "dataset.yaml"
    if not meta.is_file():
        return None
    try:
        data = yaml.safe_load(meta.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    value = data.get("fingerprint") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check_output_location(out_dir: Path) -> None:
    """``out_dir`` can be created (or replaced) by this user: a one-line ConfigError before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"DATASET {out_dir} is a file, not a directory; choose another DATASET path")
    parent = out_dir.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"DATASET {out_dir}: {probe} is a file, so no directory can be made below it; choose another DATASET path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"DATASET {out_dir}: no permission to write in {probe}; choose a DATASET path in a directory you can write to"
        )


def _looks_like_dataset(out_dir: Path) -> bool:
    from hetfield.data.dataset import REQUIRED_FILES

    return any((out_dir / f).exists() for f in REQUIRED_FILES) or not any(out_dir.iterdir())


def _remove_old(out_dir: Path) -> None:
    """Move the old dataset aside under a name :func:`~hetfield.io.atomic.remove_stale_temporaries`
    knows, then delete it: a kill in between leaves a hidden ``.old`` the next ``setup`` removes."""
    import tempfile

    from hetfield.io.atomic import _tmp_prefix

    aside = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out_dir), suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


def _apply_overrides(table, settings: PreprocessSettings) -> dict[str, dict[str, Any]]:
    """Set the user's flags on every image; return what each flag is and where it came from."""
    import numpy as np

    df = table.images
    flags = {}
    for name, value in (("ctf_premultiplied", settings.ctf_premultiplied), ("dose_weighted", settings.dose_weighted)):
        option = "--" + name.replace("_", "-")
        if value is None:
            flags[name] = {"value": bool(df[name].any()), "from": "file", "images_true": int(df[name].sum())}
        else:
            df[name] = np.full(len(df), bool(value))
            flags[name] = {"value": bool(value), "from": option if value else option.replace("--", "--no-", 1),
                           "images_true": int(df[name].sum())}
    mirror = bool(table.source.extra.get("mirror", False))
    flags["flip_hand"] = {"value": mirror, "from": "file" if settings.flip_hand is None
                          else ("--flip-hand" if settings.flip_hand else "--no-flip-hand")}
    return flags


def _apply_angpix(table, angpix_A: float | None) -> None:
    """The user's pixel size. Shifts keep their size in pixels: an alignment measures them on the
    image, and the file's Å values were computed from its own (now overridden) pixel size."""
    if angpix_A is None:
        return
    df = table.images
    ratio = angpix_A / df["pixel_size_A"].to_numpy()
    for col in ("origin_x_A", "origin_y_A"):
        df[col] = df[col].to_numpy() * ratio
    df["pixel_size_A"] = angpix_A


def reader_identity(table) -> dict[str, Any]:
    """How the particle file was read, for the fingerprint: another reader or hand is another dataset."""
    extra = table.source.extra
    return {"reader": table.source.reader, "mirror": bool(extra.get("mirror", False)),
            "files": sorted(table.source.files)}


def prepare_dataset(
    out_dir: str | os.PathLike,
    particles: str | os.PathLike,
    datadir: str | os.PathLike | None = None,
    source: str = "auto",
    settings: PreprocessSettings = PreprocessSettings(),
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
    tomograms: str | os.PathLike | None = None,
) -> tuple[Path, bool]:
    """Validate and preprocess ``particles`` into ``out_dir``; return ``(out_dir, reused)``.

    ``tomograms``: the tomograms STAR of an optimisation set given as its particles STAR.
    ``reused`` is True when ``out_dir`` already held a complete cache of the same fingerprint.
    See the module docstring for the order of work (locking, replacing, cleaning up).
    """
    import numpy as np
    import yaml

    from hetfield.data.dataset import Dataset
    from hetfield.data.summary import summarize_table
    from hetfield.imaging.window import soft_circular_window
    from hetfield.io.atomic import atomic_directory, remove_stale_temporaries
    from hetfield.io.lock import exclusive_lock
    from hetfield.io.mrc import open_stack
    from hetfield.io.readers import read_particles
    from hetfield.io.star import write_star

    out_dir = Path(out_dir)
    settings.check()
    check_output_location(out_dir)
    particles = Path(particles)
    if not particles.exists():
        raise InputError(f"{particles}: no such file; pass the particles STAR (or .cs) file with --particles")
    table = read_particles(particles, datadir=datadir, source=source, mirror=settings.flip_hand,
                           **({"tomograms": tomograms} if tomograms else {}))
    where = str(particles)
    flags = _apply_overrides(table, settings)
    _apply_angpix(table, settings.angpix_A)
    apix = table.images["pixel_size_A"].to_numpy()
    if not np.allclose(apix, apix[0], rtol=1e-4):
        raise InputError(
            f"{where}: images have different pixel sizes ({apix.min():g}–{apix.max():g} Å); "
            "prepare each pixel size as its own dataset or rescale the stacks"
        )
    stack_paths = table.images["image_path"].unique()
    box = open_stack(stack_paths[0]).box
    settings.check(box)
    out_box = settings.downsample or box
    pixel_size_A = float(apix[0]) * box / out_box
    identity = reader_identity(table)
    fingerprint = input_fingerprint(table.source.files, stack_paths, settings, identity)

    def reusable() -> bool:
        """True: ``out_dir`` already holds this dataset; DatasetError when it holds something else."""
        if not out_dir.exists() or not any(out_dir.iterdir()):
            return False  # nothing there, or an empty directory made for us
        previous = existing_fingerprint(out_dir)
        if previous == fingerprint and not force:
            try:
                Dataset.open(out_dir)
                return True
            except DatasetError:
                return False  # incomplete cache with our fingerprint: rebuild it
        if not _looks_like_dataset(out_dir):
            raise DatasetError(f"{out_dir} holds files that are not a hetfield dataset; choose another DATASET "
                               "directory (--force replaces only datasets)")
        if not force:
            what = "a dataset prepared from other inputs or settings" if previous else "an unreadable dataset"
            raise DatasetError(f"{out_dir} already holds {what}; pass --force to replace it or choose another directory")
        return False

    if reusable():
        return out_dir, True
    rng = np.random.default_rng(settings.norm_seed)
    window = None
    if settings.window:
        import torch

        window = torch.from_numpy(soft_circular_window(box, settings.window_inner, settings.window_outer))
    stacks: dict[str, Any] = {}
    df = table.images
    n = len(df)
    std = _normalization_std(df, settings, window, out_box, stacks, rng, where)  # validates the sample's pixels

    lock = out_dir.absolute().parent / f".{out_dir.name}.lock"
    hint = "wait for the other `hetfield setup` to finish, or choose another DATASET directory"
    try:
        with exclusive_lock(lock, f"DATASET {out_dir}", DatasetError, hint):
            if reusable():  # another setup may have finished it while we validated
                return out_dir, True
            remove_stale_temporaries(out_dir.absolute().parent, out_dir.name)
            if out_dir.exists():
                _remove_old(out_dir)  # only --force gets here; the inputs are validated by now
            with atomic_directory(out_dir) as tmp:
                images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32,
                                                   shape=(n, out_box + 1, out_box + 1))
                for start in range(0, n, CHUNK_IMAGES):
                    rows = df.iloc[start : start + CHUNK_IMAGES]
                    imgs = _read_chunk(rows, stacks)
                    _check_finite(imgs, rows, where)
                    signs = contrast_signs(rows, settings.invert)
                    images[start : start + len(rows)] = _transform(imgs, settings, window, out_box, signs) / np.float32(std)
                    if progress is not None:
                        progress(min(start + CHUNK_IMAGES, n), n)
                images.flush()
                del images

                arrays = _per_image_arrays(table, pixel_size_A, table.has_poses)
                np.savez(tmp / "arrays.npz", **arrays)
                from hetfield.table import IMAGE_COLUMNS

                write_star(tmp / "particles.star", {"images": df[list(IMAGE_COLUMNS)]},
                           comment="hetfield setup: one row per image (see hetfield.table)")
                copied = _copy_sources(table.source, tmp / "source")

                summary = summarize_table(table)
                summary["pixel_size_A"] = [pixel_size_A, pixel_size_A]
                meta = _metadata(table, particles, datadir, command, fingerprint, identity, copied, box, out_box,
                                 pixel_size_A, std, settings, summary, flags)
                (tmp / "dataset.yaml").write_text(yaml.safe_dump(_plain(meta), sort_keys=False))
    except OSError as err:  # disk full, quota, a directory removed under us: the user's environment
        what = f" {err.filename}" if err.filename else ""
        raise DatasetError(
            f"DATASET {out_dir}: a file operation failed ({err.strerror or err}{what}); nothing was kept; "
            "free disk space or fix permissions, then run setup again"
        ) from None
    return out_dir, False


def _metadata(table, particles: Path, datadir, command, fingerprint, identity, copied, box, out_box, pixel_size_A,
              std, settings, summary, flags) -> dict[str, Any]:
    from hetfield import __version__

    detection = table.detection.as_dict() if table.detection is not None else None
    return {
        "hetfield_version": __version__,
        "cache_format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "command": command,
        "particles": str(particles.resolve()),
        "datadir": str(Path(datadir).resolve()) if datadir else None,
        "source": {
            "reader": table.source.reader,
            "files": copied,
            "original_files": {k: str(Path(v).resolve()) for k, v in table.source.files.items()},
            "extra": _plain(table.source.extra),
            "identity": identity,
            "detection": detection,
        },
        "box": out_box,
        "original_box": box,
        "lattice": out_box + 1,
        "pixel_size_A": pixel_size_A,
        "n_particles": table.n_particles,
        "n_images": len(table.images),
        "has_poses": table.has_poses,
        "flags": flags,
        "normalization": {"mean": 0.0, "std": std, "n_sampled_images": min(len(table.images), NORM_SAMPLE_SIZE)},
        "preprocessing": asdict(settings),
        "summary": summary,
    }


def _plain(obj):
    """YAML-safe copy: numpy scalars and paths become plain Python values."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
