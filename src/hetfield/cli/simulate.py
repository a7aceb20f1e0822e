"""``hetfield simulate``: write a ground-truth dataset (classes, continuous motion, tilt series, CTF, dose, noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def simulate(
    out: Path = typer.Argument(..., help="Output directory to create (refused if it exists, unless --force)."),
    n_particles: int = typer.Option(200, "--n-particles", help="Number of particles (>= 1)."),
    n_classes: int = typer.Option(2, "--n-classes", help="Number of compositional classes K (>= 1)."),
    box: int = typer.Option(32, "--box", help="Box size in pixels (even, 16-512)."),
    pixel_size_A: float = typer.Option(8.0, "--pixel-size-A", help="Pixel size in Å/pixel."),
    mode: str = typer.Option("tilt", "--mode", help="tilt: tilt series (several images per particle); spa: one image per particle."),
    n_tilts: int = typer.Option(11, "--n-tilts", help="Tilt images per particle in tilt mode (the full tilt scheme)."),
    min_tilts: Optional[int] = typer.Option(None, "--min-tilts", help="Fewest tilt images a particle keeps (ragged tilt sets); default: all --n-tilts."),
    tilt_step_deg: float = typer.Option(6.0, "--tilt-step-deg", help="Tilt increment in degrees (dose-symmetric order 0, +s, -s, -2s, +2s, ...)."),
    dose_per_tilt: float = typer.Option(3.0, "--dose-per-tilt", help="Electron dose per tilt image in e/Å² (pre-exposure of acquisition i = i x this)."),
    snr: float = typer.Option(0.5, "--snr", help="Signal-to-noise ratio: sum of signal variances / sum of noise variances over all images (> 0)."),
    motion: bool = typer.Option(True, "--motion/--no-motion", help="Give every class a continuous motion of one domain along t in [0, 1]."),
    classes_differ_by: str = typer.Option("domain", "--classes-differ-by", help="domain: each class places its moving domain elsewhere on the core (close under a free rotation); subunits: one domain, and class k carries k extra subunits (assembly states; no rotation maps one class onto another)."),
    class_fractions: Optional[str] = typer.Option(None, "--class-fractions", help="Comma-separated class fractions summing to 1, e.g. 0.5,0.5 (default: balanced)."),
    defocus_A: float = typer.Option(15000.0, "--defocus-A", help="Mean defocus in Å (underfocus positive)."),
    voltage_kV: float = typer.Option(300.0, "--voltage-kV", help="Acceleration voltage in kV."),
    seed: int = typer.Option(0, "--seed", help="Random seed (>= 0); the same options and seed give identical files."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for projection and FFTs (more can be faster on an idle machine; the files are the same)."),
    write_clean: bool = typer.Option(False, "--write-clean", help="Also write OUT/clean/: noiseless, CTF-free, shifted projections (for convention tests)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists (swapped in only once the new one is complete)."),
) -> None:
    """Simulate ground-truth particles: K classes with continuous motion, tilt series or SPA, CTF, dose, noise."""
    from hetfield.cli._common import print_summary, progress_bar
    from hetfield.data.simulate import simulate as run_simulation
    from hetfield.data.simulate.params import SimulationParams

    params = dict(
        n_particles=n_particles, n_classes=n_classes, box=box, pixel_size_A=pixel_size_A, mode=mode,
        n_tilts=n_tilts, min_tilts=min_tilts, tilt_step_deg=tilt_step_deg, dose_per_tilt=dose_per_tilt,
        snr=snr, motion=motion, classes_differ_by=classes_differ_by, class_fractions=class_fractions, defocus_A=defocus_A, voltage_kV=voltage_kV,
        seed=seed, write_clean=write_clean, force=force, threads=threads,
    )
    p = SimulationParams.from_kwargs(**params)  # fail on bad values before the progress bar appears
    total = p.n_particles * p.images_per_particle_max
    with progress_bar("simulating images", total=total, enabled=total >= 2000) as update:
        summary = run_simulation(out, progress=update, **params)
    print_summary(
        f"simulated {summary['out_dir']}",
        {
            "mode": summary["mode"],
            "particles": summary["n_particles"],
            "images": summary["n_images"],
            "tilts per particle": summary["tilts_per_particle"] if summary["mode"] == "tilt" else 1,
            "class counts": " / ".join(str(c) for c in summary["class_counts"]),
            "box (px)": summary["box"],
            "pixel size (Å)": summary["pixel_size_A"],
            "SNR requested / measured": f"{summary['snr_requested']:g} / {summary['snr_measured']:.4g}",
            "stacks": summary["n_stacks"],
            "truth": "truth/ (particles.csv, images.csv, class volumes, truth.yaml)",
            "seconds": summary["seconds"],
        },
    )
