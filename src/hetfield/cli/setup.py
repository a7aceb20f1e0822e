"""``hetfield setup``: validate particles and preprocess them once into a dataset directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def setup(
    dataset: Path = typer.Argument(..., help="Directory to create for the prepared dataset."),
    particles: Path = typer.Option(..., "--particles", "-p", help="Particles: image-series / RELION STAR, optimisation-set STAR, or cryoSPARC .cs."),
    datadir: Optional[Path] = typer.Option(None, "--datadir", "-d", help="Directory where image stacks are looked up when paths in the file do not resolve."),
    tomograms: Optional[Path] = typer.Option(None, "--tomograms", help="Optimisation sets given as their particles STAR: the tomograms STAR (default: found through the optimisation set or beside the particles)."),
    source: str = typer.Option("auto", "--source", help="Force a reader: auto, image-series, nextpyp, optimisation-set, relion, cryosparc."),
    downsample: Optional[int] = typer.Option(None, "--downsample", help="Fourier-crop images to this even box size (pixels); the pixel size grows accordingly."),
    uninvert_data: bool = typer.Option(False, "--uninvert-data", help="Do not invert contrast. By default images are inverted (RELION stacks hold white particles) except CTF-premultiplied ones, which already carry +CTF²; use this for stacks with dark particles, e.g. tomoDRGN's simulator."),
    window: bool = typer.Option(True, "--window/--no-window", help="Apply the soft circular real-space window before transforming."),
    window_inner: float = typer.Option(0.8, "--window-inner", help="Window: radius where the fall-off starts, as a fraction of half the box."),
    window_outer: float = typer.Option(0.9, "--window-outer", help="Window: radius where it reaches zero, as a fraction of half the box."),
    angpix: Optional[float] = typer.Option(None, "--angpix", help="Override the pixel size in the file (Å/pixel). Shifts keep their size in pixels (the images are unchanged; only their scale in Å is corrected)."),
    ctf_premultiplied: Optional[bool] = typer.Option(None, "--ctf-premultiplied/--no-ctf-premultiplied", help="The images are (are not) already multiplied by their CTF, e.g. WarpTools particle series. Premultiplied images are not inverted. Default: as the file says (_rlnCtfDataAreCtfPremultiplied).", show_default=False),
    dose_weighted: Optional[bool] = typer.Option(None, "--dose-weighted/--no-dose-weighted", help="The images are (are not) already exposure-filtered. Default: as the file says (WarpTools exports are).", show_default=False),
    flip_hand: Optional[bool] = typer.Option(None, "--flip-hand/--no-flip-hand", help="Reconstruct the mirror image (every rotation A becomes D·A·D, D = diag(1,1,-1)). Default: as the reader decides (WarpTools optimisation sets are flipped to their own hand, others are not).", show_default=False),
    force: bool = typer.Option(False, "--force", help="Replace DATASET if it holds another dataset. The old dataset is deleted once the new inputs are validated, right before the new one is written, so no extra disk is needed; if writing then fails, DATASET is gone."),
) -> None:
    """Validate the particles and preprocess them once (window, Hartley transform, normalisation).

    The reader is chosen by the file's columns and values (see `hetfield inspect FILE`, which says
    why); a near miss (a tilt-series file with a misspelt or missing column) stops with the columns
    to fix. Overrides and the reader are part of the dataset's fingerprint: changing them needs --force.
    """
    from hetfield.cli._common import command_line, print_summary, progress_bar
    from hetfield.data.cache import PreprocessSettings
    from hetfield.data.preprocess import prepare_dataset
    from hetfield.io.readers import SOURCES
    from hetfield.errors import ConfigError

    if source != "auto" and source not in SOURCES:
        raise ConfigError(f"--source {source!r} is not a known reader; choose one of: auto, {', '.join(SOURCES)}")
    settings = PreprocessSettings(
        invert=not uninvert_data,
        downsample=downsample,
        window=window,
        window_inner=window_inner,
        window_outer=window_outer,
        angpix_A=angpix,
        ctf_premultiplied=ctf_premultiplied,
        dose_weighted=dose_weighted,
        flip_hand=flip_hand,
    )
    settings.check()
    with progress_bar("preprocessing images") as update:
        out, reused = prepare_dataset(dataset, particles, datadir, source, settings, force=force, progress=update, command=command_line(), tomograms=tomograms)
    from hetfield.data.dataset import Dataset

    ds = Dataset.open(out)
    print_summary(f"{'reused' if reused else 'prepared'} dataset {out}", dataset_rows(ds.meta))


def dataset_rows(meta: dict) -> dict:
    """The fields of ``dataset.yaml`` people check first, in order."""
    s = meta.get("summary", {})
    flags = meta.get("flags") or {}

    def flag(name):
        f = flags.get(name)
        return f"{f['value']} ({f['from']})" if isinstance(f, dict) else s.get(name)

    detection = (meta.get("source") or {}).get("detection") or {}
    return {
        "source": s.get("source"),
        "why this reader": detection.get("reason"),
        "particles": meta.get("n_particles"),
        "images": meta.get("n_images"),
        "tilts per particle": {k: s.get("tilts_per_particle", {}).get(k) for k in ("min", "max", "mean")},
        "box (px)": f"{meta.get('box')} (lattice {meta.get('lattice')}, from {meta.get('original_box')})",
        "pixel size (Å)": meta.get("pixel_size_A"),
        "dose (e/Å²)": s.get("dose_e_per_A2"),
        "stage tilt (°)": s.get("stage_tilt_deg"),
        "defocus (Å)": s.get("defocus_A"),
        "CTF-premultiplied": flag("ctf_premultiplied"),
        "dose-weighted": flag("dose_weighted"),
        "hand flipped": flag("flip_hand"),
        "poses": s.get("has_poses"),
        "contrast inverted": meta.get("preprocessing", {}).get("invert"),
        "normalisation std": meta.get("normalization", {}).get("std"),
        "fingerprint": meta.get("fingerprint"),
    }
