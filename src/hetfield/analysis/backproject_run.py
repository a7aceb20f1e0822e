"""``hetfield backproject``: half maps, full map, FSC, optional comparison with a reference map, report.

Outputs in ``OUT``: ``half1.mrc``, ``half2.mrc``, ``map.mrc`` (Wiener-filtered full map),
``map_lowpass.mrc`` (with ``--lowpass-A``), ``fsc.csv``, ``backproject.json``, ``plots/``,
``report.html``. With ``--ref MAP`` the map is correlated with the reference, its mirror image and its
contrast inverse: the check of hand and contrast the command exists for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.errors import ConfigError, InputError


def compare_with_reference(vol: np.ndarray, ref: np.ndarray, pixel_size_A: float, resolution_A: float | None) -> dict[str, Any]:
    """Correlations with the reference as is, mirrored and inverted (both low-passed alike)."""
    from hetfield.analysis.metrics import fsc, masked_correlation, soft_sphere_mask
    from hetfield.analysis.volumes import flip_hand, lowpass

    mask = soft_sphere_mask(vol.shape[0])
    a, b = vol, ref
    if resolution_A:
        a, b = lowpass(vol, pixel_size_A, resolution_A), lowpass(ref, pixel_size_A, resolution_A)
    cc = masked_correlation(a, b, mask)
    cc_flip = masked_correlation(flip_hand(a), b, mask)
    f = fsc(vol, ref, pixel_size_A, mask=mask)
    hand = "as the reference" if cc >= cc_flip else "mirrored relative to the reference"
    contrast = "as the reference" if cc > 0 else "inverted relative to the reference"
    return {
        "cc": cc, "cc_flipped_hand": cc_flip, "cc_inverted": -cc, "lowpass_A": resolution_A,
        "hand": hand, "contrast": contrast, "fsc05_A": f.resolution_A(0.5), "fsc0143_A": f.resolution_A(0.143),
        "fsc": f.fsc.tolist(),
    }


def run_backproject(
    dataset,
    out,
    particles_file=None,
    max_images: int | None = None,
    lowpass_A: float | None = None,
    ref=None,
    dose_weight: bool = True,
    tilt_weight: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    from hetfield.analysis import plots as P
    from hetfield.analysis.backproject import backproject
    from hetfield.analysis.provenance import provenance
    from hetfield.analysis.export_volumes import read_indices
    from hetfield.analysis.report import Link, Report
    from hetfield.analysis.volumes import lowpass, write_volume
    from hetfield.data.dataset import Dataset
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import atomic_directory, write_bytes_atomic, write_json_atomic, write_text_atomic
    from hetfield.io.mrc import read_volume
    from hetfield.io.plain import to_plain

    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images {max_images}: give a positive number of images")
    check_output_location(out, "--out", marker="backproject.json", protect=(dataset,))
    ds = Dataset.open(dataset)
    apix = ds.pixel_size_A
    if lowpass_A is not None and not lowpass_A >= 2 * apix:
        raise ConfigError(f"--lowpass-A {lowpass_A}: give a resolution of at least Nyquist, {2 * apix:.4g} Å")
    particles = read_indices(particles_file, ds.n_particles, "--particles") if particles_file is not None else None
    ref_vol = None
    if ref is not None:
        ref = Path(ref)
        if not ref.is_file():
            raise InputError(f"--ref {ref}: no such file")
        ref_vol, ref_apix = read_volume(ref)
        if ref_vol.shape != (ds.box,) * 3:
            raise InputError(f"--ref {ref}: a {ref_vol.shape} map; the dataset's box is {ds.box} (resample the reference to {ds.box}³ at {apix:.4g} Å/px)")
    res = backproject(ds, particles=particles, max_images=max_images, dose_weight=dose_weight, tilt_weight=tilt_weight, progress=progress)
    f, fm = res.fsc, res.fsc_masked
    summary: dict[str, Any] = {
        **provenance("backprojection", dataset=ds),
        "pixel_size_A": apix,
        "box": ds.box,
        "n_particles": list(res.n_particles),
        "n_images": list(res.n_images),
        "half_split": "particles by index: even → half 1, odd → half 2 (whole particles)",
        "resolution_fsc0143_A": f.resolution_A(0.143),
        "resolution_fsc05_A": f.resolution_A(0.5),
        "resolution_fsc0143_masked_A": fm.resolution_A(0.143),
        "fsc_reaches_nyquist": f.reaches_nyquist(0.143),
        "nyquist_A": 2 * apix,
        "fourier_coverage": res.info["fourier_coverage"],
        "dose_weight": dose_weight,
        "tilt_weight": tilt_weight,
        "lowpass_A": lowpass_A,
    }
    out = Path(out)
    with atomic_directory(out, replace=True) as tmp:
        write_volume(tmp / "half1.mrc", res.half1, apix)
        write_volume(tmp / "half2.mrc", res.half2, apix)
        write_volume(tmp / "map.mrc", res.full, apix)
        files = ["half1.mrc", "half2.mrc", "map.mrc"]
        if lowpass_A:
            write_volume(tmp / "map_lowpass.mrc", lowpass(res.full, apix, lowpass_A), apix)
            files.append("map_lowpass.mrc")
        lines = ["shell,freq_per_A,resolution_A,fsc,fsc_masked"]
        for row, rm in zip(f.as_rows(), fm.as_rows()):
            r_a = "inf" if not np.isfinite(row["resolution_A"]) else f"{row['resolution_A']:.3f}"
            lines.append(f"{row['shell']},{row['freq_per_A']:.6f},{r_a},{row['fsc']:.5f},{rm['fsc']:.5f}")
        write_text_atomic(tmp / "fsc.csv", "\n".join(lines) + "\n")
        files.append("fsc.csv")
        if ref_vol is not None:
            summary["reference"] = {"path": str(ref.resolve()), **compare_with_reference(res.full, ref_vol, apix, lowpass_A or summary["resolution_fsc0143_A"])}
        png_fsc = P.fsc_curves({"half maps": (f.freq, f.fsc), "half maps, soft sphere mask": (fm.freq, fm.fsc)}, "half-map FSC", apix)
        png_map = P.volume_gallery([res.full, res.half1, res.half2], ["map", "half 1", "half 2"], "projections", views="zyx")
        for name, png in (("fsc", png_fsc), ("map", png_map)):
            write_bytes_atomic(tmp / "plots" / f"{name}.png", png)
            files.append(f"plots/{name}.png")
        summary["files"] = files + ["backproject.json", "report.html"]
        write_json_atomic(tmp / "backproject.json", to_plain(summary))

        rep = Report(f"Backprojection of {ds.path.name}", f"{ds.path} · {sum(res.n_particles)} particles, {sum(res.n_images)} images · "
                     f"box {ds.box} at {apix:.4g} Å/px")
        r143 = summary["resolution_fsc0143_A"]
        nyq = "reaches Nyquist" if summary["fsc_reaches_nyquist"] else f"{r143:.1f} Å"
        rep.callout(f"Half-map FSC = 0.143 at {nyq} (FSC 0.5 at {summary['resolution_fsc05_A']:.1f} Å; Nyquist {2 * apix:.1f} Å).",
                    kind="good" if r143 < 4 * apix else "warn")
        if "reference" in summary:
            rr = summary["reference"]
            kind = "good" if rr["cc"] > 0 and rr["cc"] >= rr["cc_flipped_hand"] else "bad"
            rep.callout(f"Against {Path(rr['path']).name}: correlation {rr['cc']:.3f} (mirrored {rr['cc_flipped_hand']:.3f}, inverted "
                        f"{rr['cc_inverted']:.3f}) after low-pass to {rr['lowpass_A']:.1f} Å: hand {rr['hand']}, contrast {rr['contrast']}.", kind=kind)
        rep.image(png_fsc, "Fourier shell correlation of the two half maps (particles split by even/odd index).")
        rep.image(png_map, "Projections of the full map and the half maps along z, y and x.")
        rep.kv({
            "particles (half 1 / half 2)": f"{res.n_particles[0]} / {res.n_particles[1]}",
            "images (half 1 / half 2)": f"{res.n_images[0]} / {res.n_images[1]}",
            "resolution at FSC 0.143, soft mask (Å)": summary["resolution_fsc0143_masked_A"],
            "Fourier coverage (fraction of voxels inside Nyquist with data)": summary["fourier_coverage"],
            "dose weighting / tilt weighting": f"{dose_weight} / {tilt_weight}",
        })
        rep.table([{"file": Link(p)} for p in files if p.endswith(".mrc") or p.endswith(".csv")] + [{"file": Link("backproject.json")}], ["file"])
        rep.write(tmp / "report.html")
    return out, to_plain(summary)
