"""``simulate(out_dir, **params)``: write a ground-truth dataset (the library behind ``hetfield simulate``).

Output (built in a temporary sibling directory and renamed into place whole):

``particles.star``      image-series STAR, one row per image (see :mod:`.writers` for the columns)
``stacks/*.mrcs``       float32 image stacks (whole particles, at most ``images_per_stack`` images each)
``truth/``              ``particles.csv``, ``images.csv``, ``class_<k>.mrc`` (t = 0.5),
                        ``class_<k>_t<100t>.mrc`` along the motion, ``truth.yaml``
``clean/``              only with ``write_clean``: ``particles.star`` + ``stacks/`` of noiseless,
                        CTF-free, shifted projections (same rows, same metadata)

Two passes over the images: the first projects and filters every image (the signal, kept in a
temporary ``.npy`` memory map inside the output being built) and sums the signal variances; the
second adds noise whose variance gives exactly the requested SNR over the dataset, and writes the
stacks. **SNR** = ``sum_i var(signal_i) / sum_i var(noise_i)`` over all images, where ``signal_i`` is
the CTF-modulated (times ``_rlnCtfScalefactor = cos(tilt)``), dose-filtered, shifted projection (``D x D`` pixels of the box) and the noise is
white Gaussian with variance ``sigma0^2 / cos(tilt_i)`` (thicker ice at tilt, so ``cos(tilt)`` is the
inverse-variance weight; constant for SPA or with ``tilt_noise_scaling=False``).

Determinism: every random draw comes from generators spawned from the seed (``acquisition.STREAMS``),
torch runs single-threaded by default while simulating (reductions in ``project`` and the FFTs then
have a fixed order; ``threads > 1`` can be faster on an idle machine and gives the same bytes, which a
test checks for 1 vs 2 threads), and
the writers carry no timestamps, so the same arguments give identical bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.data.simulate.acquisition import Acquisition, draw_acquisition, rng_streams, stack_layout
from hetfield.data.simulate.params import SimulationParams
from hetfield.data.simulate.phantoms import Phantom
from hetfield.data.simulate.truth import write_truth, write_truth_yaml
from hetfield.data.simulate.writers import format_star, stack_writer
from hetfield.errors import ConfigError

@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_out(out: Path, force: bool) -> None:
    from hetfield.errors import check_output_location

    if out.exists() and not force:
        raise ConfigError(f"OUT {out}: already exists; pass --force to replace it or choose a new directory")
    # --force replaces an earlier simulation only: never a directory of something else.
    check_output_location(out, "OUT", marker="truth/truth.yaml")


def simulate(
    out_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Simulate a dataset into ``out_dir`` (see the module docstring); return a summary dict.

    ``params`` are the fields of :class:`SimulationParams` (``n_particles=200, n_classes=2, box=32,
    pixel_size_A=8.0, mode="tilt", n_tilts=11, min_tilts=None, tilt_step_deg=6.0, dose_per_tilt=3.0,
    snr=0.5, motion=True, class_fractions=None, defocus_A=15000, voltage_kV=300, seed=0,
    write_clean=False, force=False`` and finer knobs). ``progress(done, total)`` is called as images
    are projected. Bad values raise :class:`~hetfield.errors.ConfigError` before any work.
    """
    p = SimulationParams.from_kwargs(**params)
    out = Path(out_dir)
    _check_out(out, p.force)
    from hetfield.io.atomic import atomic_directory

    start = time.perf_counter()
    with _torch_threads(p.threads):
        rngs = rng_streams(p.seed)
        phantom = Phantom.make(p.n_classes, rngs["phantom"], p.motion, p.motion_angle_deg, p.classes_differ_by)
        acq = draw_acquisition(p, rngs)
        layout = stack_layout(acq.offsets, p.images_per_stack)
        try:
            with atomic_directory(out, replace=p.force) as tmp:
                summary = _simulate_into(tmp, p, phantom, acq, layout, rngs["noise"], progress)
        except FileExistsError:  # appeared while we were simulating
            raise ConfigError(f"OUT {out}: already exists; pass --force to replace it or choose a new directory") from None
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["out_dir"] = str(out)
    return summary


def _stack_names(n_stacks: int) -> list[str]:
    width = max(3, len(str(n_stacks - 1)))
    return [f"stacks/particles_{s:0{width}d}.mrcs" for s in range(n_stacks)]


def _batches(offsets: np.ndarray, p0: int, p1: int, max_images: int) -> list[tuple[int, int]]:
    """Consecutive particle ranges within ``[p0, p1)`` of at most ``max_images`` images (>= 1 particle)."""
    out, b0 = [], p0
    while b0 < p1:
        b1 = b0 + 1
        while b1 < p1 and offsets[b1 + 1] - offsets[b0] <= max_images:
            b1 += 1
        out.append((b0, b1))
        b0 = b1
    return out


def _simulate_into(tmp: Path, p: SimulationParams, phantom: Phantom, acq: Acquisition, layout,
                   noise_rng: np.random.Generator, progress) -> dict[str, Any]:
    from hetfield import __version__
    from hetfield.data.simulate.render import render
    from hetfield.imaging.projection import project

    d, m = p.box, acq.n_images
    names = _stack_names(len(layout))
    (tmp / "stacks").mkdir()
    (tmp / "truth").mkdir()
    if p.write_clean:
        (tmp / "clean" / "stacks").mkdir(parents=True)
    label = f"hetfield {__version__} simulate seed {p.seed}"
    signal_path = tmp / ".signal.npy"
    signal = np.lib.format.open_memmap(signal_path, mode="w+", dtype=np.float32, shape=(m, d, d))
    sig_var = np.zeros(m, dtype=np.float64)
    image_names = [""] * m
    max_batch = max(1, 2**18 // (d * d))  # images per Fourier batch: ~4 MB of padded complex64

    # Pass 1: project every particle at its own (class, t), then shift, CTF- and dose-filter.
    for s, (p0, p1) in enumerate(layout):
        r0, r1 = int(acq.offsets[p0]), int(acq.offsets[p1])
        for r in range(r0, r1):
            image_names[r] = f"{r - r0 + 1}@{names[s]}"
        with contextlib.ExitStack() as stack:
            clean_out = None
            if p.write_clean:
                clean_out = stack.enter_context(
                    stack_writer(tmp / "clean" / names[s], r1 - r0, d, p.pixel_size_A, label + " clean")
                )
            for b0, b1 in _batches(acq.offsets, p0, p1, max_batch):
                rows = slice(int(acq.offsets[b0]), int(acq.offsets[b1]))
                projs = []
                for q in range(b0, b1):
                    vol = phantom.volume(int(acq.particle_class[q]), float(acq.particle_t[q]), d)
                    projs.append(project(vol, acq.image_matrix[acq.offsets[q] : acq.offsets[q + 1]]).numpy())
                    if progress is not None:
                        progress(int(acq.offsets[q + 1]), m)
                sig, clean = render(
                    np.concatenate(projs),
                    pixel_size_A=p.pixel_size_A,
                    shift_px=-acq.origin_A[rows] / p.pixel_size_A,
                    defocus_u_A=acq.defocus_u_A[rows],
                    defocus_v_A=acq.defocus_v_A[rows],
                    defocus_angle_deg=acq.defocus_angle_deg[rows],
                    voltage_kV=p.voltage_kV,
                    cs_mm=p.cs_mm,
                    amplitude_contrast=p.amplitude_contrast,
                    phase_shift_deg=p.phase_shift_deg,
                    dose_e_per_A2=acq.dose_e_per_A2[rows],
                    clean=p.write_clean,
                )
                # The STAR file declares _rlnCtfScalefactor = cos(tilt), RELION's linear scale of the
                # CTF, which every reader applies; the signal carries it too, so data and metadata agree.
                sig = sig * acq.ctf_scale[rows, None, None].astype(sig.dtype)
                signal[rows] = sig
                sig_var[rows] = sig.var(axis=(1, 2), dtype=np.float64)
                if clean_out is not None:
                    clean_out[rows.start - r0 : rows.stop - r0] = clean

    # Pass 2: noise for the requested SNR over the whole dataset, then the stacks.
    tilt_mode = p.mode == "tilt"
    cos_t = np.cos(np.deg2rad(acq.stage_tilt_deg))
    var_scale = 1.0 / cos_t if (tilt_mode and p.tilt_noise_scaling) else np.ones(m)
    sigma0 = math.sqrt(sig_var.sum() / (p.snr * var_scale.sum()))
    if not sigma0 > 0:
        raise ConfigError("simulate: the simulated signal is zero; check --pixel-size-A and --defocus-A")
    noise_sigma = sigma0 * np.sqrt(var_scale)
    noise_var = np.zeros(m, dtype=np.float64)
    for s, (p0, p1) in enumerate(layout):
        r0, r1 = int(acq.offsets[p0]), int(acq.offsets[p1])
        with stack_writer(tmp / names[s], r1 - r0, d, p.pixel_size_A, label) as out:
            for c0 in range(r0, r1, max_batch):
                c1 = min(c0 + max_batch, r1)
                noise = noise_rng.standard_normal((c1 - c0, d, d)) * noise_sigma[c0:c1, None, None]
                noise_var[c0:c1] = noise.var(axis=(1, 2), dtype=np.float64)
                out[c0 - r0 : c1 - r0] = signal[c0:c1] + noise
    del signal
    signal_path.unlink()
    snr_measured = float(sig_var.sum() / noise_var.sum())

    columns = _star_columns(p, acq, image_names)
    comment = (
        f"hetfield {__version__} simulate (seed {p.seed}): image-series STAR, one row per image; "
        "particle = _rlnGroupName; _rlnCtfBfactor = -4 x cumulative dose (e/A^2); "
        "_rlnCtfScalefactor = cos(stage tilt); ground truth in truth/"
    )
    (tmp / "particles.star").write_text(format_star(columns, m, comment), encoding="utf-8")
    if p.write_clean:
        (tmp / "clean" / "particles.star").write_text(
            format_star(columns, m, comment.replace("image-series STAR", "CLEAN (no CTF, no dose filter, "
                                                       "no inversion, no noise) image-series STAR")),
            encoding="utf-8",
        )
    volumes = write_truth(tmp / "truth", p, phantom, acq, image_names, sig_var, noise_sigma, label)
    counts = np.bincount(acq.particle_class, minlength=p.n_classes).tolist()
    summary = {
        "n_particles": acq.n_particles,
        "n_images": m,
        "n_stacks": len(layout),
        "mode": p.mode,
        "box": d,
        "pixel_size_A": p.pixel_size_A,
        "class_counts": counts,
        "tilts_per_particle": [int(np.diff(acq.offsets).min()), int(np.diff(acq.offsets).max())],
        "snr_requested": p.snr,
        "snr_measured": snr_measured,
        "noise_sigma0": sigma0,
        "seed": p.seed,
        "truth_volumes": volumes,
    }
    write_truth_yaml(tmp / "truth" / "truth.yaml", p, phantom, acq, summary, __version__)
    return summary


def _star_columns(p: SimulationParams, acq: Acquisition, image_names: list[str]) -> dict[str, Any]:
    tilt_mode = p.mode == "tilt"
    return {
        "image_name": image_names,
        "group": [acq.group_names[g] for g in acq.particle_group[acq.image_particle]],
        "pixel_size_A": p.pixel_size_A,
        "defocus_u_A": acq.defocus_u_A,
        "defocus_v_A": acq.defocus_v_A,
        "defocus_angle_deg": acq.defocus_angle_deg,
        "voltage_kV": p.voltage_kV,
        "cs_mm": p.cs_mm,
        "amplitude_contrast": p.amplitude_contrast,
        "phase_shift_deg": p.phase_shift_deg,
        "euler_rot_deg": acq.image_euler[:, 0],
        "euler_tilt_deg": acq.image_euler[:, 1],
        "euler_psi_deg": acq.image_euler[:, 2],
        "origin_x_A": acq.origin_A[:, 0],
        "origin_y_A": acq.origin_A[:, 1],
        "ctf_bfactor": (-4.0 * acq.dose_e_per_A2 + 0.0) if tilt_mode else 0.0,
        "ctf_scale": acq.ctf_scale + 0.0,
        "particle_name": [acq.particle_names[i] for i in acq.image_particle],
    }
