"""``hetfield backproject``: weighted voxel backprojection of a prepared dataset, half maps and FSC —
a check of poses, CTF, hand and contrast independent of any training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def backproject(
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from `hetfield setup`)."),
    out: Path = typer.Option(..., "--out", help="Output directory (half maps, map, fsc.csv, report.html)."),
    particles: Optional[Path] = typer.Option(None, "--particles", help="0-based particle indices to use (text or .npy). [default: all]"),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Use whole particles, in order, up to this many images."),
    lowpass_a: Optional[float] = typer.Option(None, "--lowpass-A", help="Also write map_lowpass.mrc low-passed to this resolution (Å)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference map (same box and pixel size) to check hand and contrast against."),
    dose_weight: bool = typer.Option(True, "--dose-weight/--no-dose-weight", help="Weight by the exposure (dose) filter."),
    tilt_weight: bool = typer.Option(True, "--tilt-weight/--no-tilt-weight", help="Weight each image by cos(tilt)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Backproject the dataset's images at their poses: half maps (even/odd particles), FSC, full map, report.html."""
    from hetfield.analysis.backproject_run import run_backproject
    from hetfield.cli._common import progress_bar

    with progress_bar("backprojecting images", enabled=not quiet) as update:
        out_dir, s = run_backproject(dataset, out, particles_file=particles, max_images=max_images, lowpass_A=lowpass_a, ref=ref,
                                     dose_weight=dose_weight, tilt_weight=tilt_weight, progress=update)
    if not quiet:
        from hetfield.cli._common import print_summary

        rows = {
            "particles (half 1 / 2)": f"{s['n_particles'][0]} / {s['n_particles'][1]}",
            "images (half 1 / 2)": f"{s['n_images'][0]} / {s['n_images'][1]}",
            "resolution at FSC 0.143 (Å)": round(s["resolution_fsc0143_A"], 2),
            "Nyquist (Å)": round(s["nyquist_A"], 2),
        }
        if "reference" in s:
            r = s["reference"]
            rows["vs reference"] = f"cc {r['cc']:.3f} (mirrored {r['cc_flipped_hand']:.3f}); hand {r['hand']}, contrast {r['contrast']}"
        rows["report"] = str(out_dir / "report.html")
        print_summary("backprojection", rows)
