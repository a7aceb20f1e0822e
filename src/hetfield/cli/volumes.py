"""``hetfield volumes``: decode volumes at latent points, for a class, along a principal component,
or for chosen particles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def volumes(
    run: Path = typer.Argument(..., help="Run directory (from `hetfield train`)."),
    out: Path = typer.Option(..., "--out", help="Output directory for vol_NNN.mrc, z_values.txt and volumes.json."),
    epoch: str = typer.Option("last", "--epoch", help="Epoch whose weights decode the volumes: a number or 'last'."),
    z: Optional[Path] = typer.Option(None, "--z", help="Latent points: text (one row of zdim numbers per volume) or .npy."),
    class_idx: Optional[int] = typer.Option(None, "--class-idx", help="Class to decode (alone: the class's volume; with --z/--pc: the class used)."),
    pc: Optional[int] = typer.Option(None, "--pc", help="Traverse principal component i (1-based) of the latents, percentiles 5–95."),
    n: int = typer.Option(10, "--n", help="Number of volumes along --pc."),
    particle_index: Optional[Path] = typer.Option(None, "--particle-index", help="0-based particle indices (text/.npy): restrict --pc/--class-idx to them, or alone decode each particle's volume."),
    lowpass_a: Optional[float] = typer.Option(None, "--lowpass-A", help="Low-pass the volumes to this resolution (Å), cosine edge."),
    flip: bool = typer.Option(False, "--flip", help="Mirror the volumes along z (change the hand)."),
    invert: bool = typer.Option(False, "--invert", help="Invert the contrast."),
    box: Optional[int] = typer.Option(None, "--box", help="Output box (even): Fourier crop (smaller, larger voxels) or pad (larger, smaller voxels). [default: the training box]"),
    device: str = typer.Option("auto", "--device", help="Where to decode: auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Decode volumes to MRC (voxel size from the dataset, origin 0): at --z points, a --class-idx, along --pc, or per particle."""
    from hetfield.analysis.export_volumes import run_volumes
    from hetfield.cli._common import progress_bar

    with progress_bar("decoding volumes", enabled=not quiet) as update:
        out_dir, doc = run_volumes(run, out, epoch=epoch, z_file=z, class_idx=class_idx, pc=pc, n=n, particle_index=particle_index,
                                   lowpass_A=lowpass_a, flip=flip, invert=invert, box=box, device=device, progress=update)
    if not quiet:
        from hetfield.cli._common import print_summary

        print_summary(f"volumes of {doc['run_id']} (epoch {doc['epoch']})", {
            "mode": doc["mode"], "volumes": len(doc["volumes"]), "box": doc["box"], "voxel size (Å)": doc["voxel_size_A"],
            "output": str(out_dir),
        })
