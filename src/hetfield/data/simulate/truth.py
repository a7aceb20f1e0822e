"""The ground truth of a simulated dataset: ``truth/particles.csv``, ``truth/images.csv``, the class
volumes and ``truth/truth.yaml`` (parameters, measured SNR, the conventions below), and
:func:`load_phantom`, which rebuilds the phantom from ``truth.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.data.simulate.acquisition import Acquisition, rng_streams
from hetfield.data.simulate.params import SimulationParams
from hetfield.data.simulate.phantoms import Phantom
from hetfield.data.simulate.writers import format_csv, write_mrc

CONVENTIONS = {
    "tilt_order": "dose-symmetric (Hagen): acquisition i has stage tilt 0, +s, -s, -2s, +2s, +3s, -3s, -4s, +4s, ...",
    "dose": "cumulative pre-exposure of acquisition i = i * dose_per_tilt (e/A^2); _rlnCtfBfactor = -4 * dose",
    "rotation": (
        "A_image = rotation_y(stage_tilt_deg) @ A_particle with A RELION matrices "
        "(euler_to_matrix(rot, tilt, psi)); projection P(x, y) = sum_z V(A.T @ [x, y, z]), volume [z, y, x], "
        "centre at box//2"
    ),
    "shift": "the particle sits at -origin: image content = projection translated by -(_rlnOriginX/YAngst / pixel size)",
    "sign": "white particles: image = -(CTF * dose_filter * shifted projection) + noise; CTF(0) = -w",
    "ctf_scale": "_rlnCtfScalefactor = cos(stage tilt) (the tilt sign is in truth/images.csv)",
    "snr": (
        "sum over images of var(signal) / sum over images of var(noise), pixels of the whole D x D box; "
        "signal = CTF-modulated, dose-filtered, shifted projection; noise variance of an image = "
        "sigma0^2 / cos(tilt) in tilt mode (tilt_noise_scaling), sigma0^2 in SPA"
    ),
    "fourier_ops": "CTF, dose filter and shift applied on a 2x zero-padded grid, central D cropped (linear, not circular)",
    "ragged_tilts": "with min_tilts < n_tilts each particle keeps frame 0 plus a random subset, each frame with its own tilt and dose",
}


def load_phantom(out_dir: str | os.PathLike) -> Phantom:
    """Rebuild the phantom of a simulated dataset from ``truth/truth.yaml`` (volumes at any ``t``).

    ``load_phantom(out).volume(k, t, box)`` is the ground truth of a particle of class ``k`` at
    motion coordinate ``t`` (``truth/particles.csv``). Raises :class:`InputError` if this hetfield
    version would build a different phantom than the one recorded.
    """
    import yaml

    from hetfield.errors import InputError

    path = Path(out_dir) / "truth" / "truth.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        prm = doc["parameters"]
        phantom = Phantom.make(prm["n_classes"], rng_streams(int(doc["seed"]))["phantom"], prm["motion"],
                               prm["motion_angle_deg"], prm.get("classes_differ_by", "domain"))  # older files: "domain"
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not a readable hetfield simulate truth file ({err}); re-run hetfield simulate") from None
    if yaml.safe_load(yaml.safe_dump(phantom.describe())) != doc.get("phantom"):
        raise InputError(f"{path}: this hetfield version builds a different phantom; use the class MRC files instead")
    return phantom


def write_truth(truth: Path, p, phantom: Phantom, acq: Acquisition, image_names, sig_var, noise_sigma,
                 label: str) -> dict[str, dict[str, Any]]:
    """``truth/particles.csv``, ``truth/images.csv`` and the class volumes; returns their paths by class."""
    n_img = np.diff(acq.offsets)
    rows = [
        [acq.particle_names[i], i, int(acq.particle_class[i]), f"{acq.particle_t[i]:.8f}",
         *(f"{v:.6f}" for v in acq.particle_euler[i]), acq.group_names[acq.particle_group[i]], int(n_img[i]),
         f"{acq.position_A[i, 0]:.3f}", f"{acq.position_A[i, 1]:.3f}"]
        for i in range(acq.n_particles)
    ]
    header = ["particle_name", "particle", "class", "t", "euler_rot_deg", "euler_tilt_deg", "euler_psi_deg",
              "group", "n_images", "position_x_A", "position_z_A"]
    (truth / "particles.csv").write_text(format_csv(header, rows), encoding="utf-8")
    img_rows = [
        [r, acq.particle_names[acq.image_particle[r]], int(acq.image_particle[r]), int(acq.frame[r]),
         f"{acq.stage_tilt_deg[r]:.6f}", f"{acq.dose_e_per_A2[r]:.6f}", image_names[r],
         f"{sig_var[r]:.8g}", f"{noise_sigma[r]:.8g}"]
        for r in range(acq.n_images)
    ]
    img_header = ["row", "particle_name", "particle", "frame", "stage_tilt_deg", "dose_e_per_A2", "image_name",
                  "signal_variance", "noise_sigma"]
    (truth / "images.csv").write_text(format_csv(img_header, img_rows), encoding="utf-8")

    volumes: dict[str, dict[str, Any]] = {}
    for k in range(p.n_classes):
        write_mrc(truth / f"class_{k}.mrc", phantom.volume(k, 0.5, p.box), p.pixel_size_A,
                  f"{label} class {k} t 0.5", stack=False)
        entry: dict[str, Any] = {"t_0.5": f"truth/class_{k}.mrc"}
        if p.motion:
            along = {}
            for t in p.truth_t_values:
                name = f"class_{k}_t{round(100 * t):03d}.mrc"
                write_mrc(truth / name, phantom.volume(k, t, p.box), p.pixel_size_A,
                          f"{label} class {k} t {t:g}", stack=False)
                along[f"{t:g}"] = f"truth/{name}"
            entry["along_motion"] = along
        volumes[f"class_{k}"] = entry
    return volumes


def write_truth_yaml(path: Path, p: SimulationParams, phantom: Phantom, acq: Acquisition, summary, version):
    """``truth/truth.yaml``: parameters, seed, measured SNR, tilt scheme, conventions, phantom, file guide."""
    import yaml

    params = p.as_dict()
    for key in ("force", "threads"):  # neither changes the data
        params.pop(key)
    scheme = acq.tilt_scheme_deg
    doc = {
        "generator": "hetfield simulate",
        "hetfield_version": version,
        "seed": p.seed,
        "parameters": params,
        "n_particles": summary["n_particles"],
        "n_images": summary["n_images"],
        "n_stacks": summary["n_stacks"],
        "class_counts": summary["class_counts"],
        "tilts_per_particle_min_max": summary["tilts_per_particle"],
        "snr": {
            "requested": p.snr,
            "measured": round(summary["snr_measured"], 6),
            "noise_sigma0": round(summary["noise_sigma0"], 8),
            "definition": CONVENTIONS["snr"],
        },
        "tilt_scheme": {
            "stage_tilt_deg_by_acquisition": [float(v) for v in scheme],
            "dose_e_per_A2_by_acquisition": [
                float(i * p.dose_per_tilt) if p.mode == "tilt" else 0.0 for i in range(len(scheme))
            ],
        },
        "conventions": CONVENTIONS,
        "phantom": phantom.describe(),
        "truth_volumes": summary["truth_volumes"],
        "files": {
            "particles.star": "image-series STAR (Warp/M style), one row per image; particle = _rlnGroupName, "
            "tomogram/micrograph = _rlnMicrographName; image paths relative to this directory",
            "stacks/": "float32 MRC image stacks, white particles with noise",
            "truth/particles.csv": "per particle: name, index, class (0-based), motion coordinate t, the particle's "
            "RELION Euler angles (deg; image angles = rotation_y(tilt) composed with these), tomogram, image count, "
            "position in the ice (A)",
            "truth/images.csv": "per STAR row: particle, acquisition frame, signed stage tilt, cumulative dose, "
            "signal variance, noise sigma",
            "truth/class_<k>.mrc": "class k at t = 0.5 (positive density, [z, y, x], voxel size set)",
            "truth/class_<k>_t<100t>.mrc": "class k along its motion (t = value / 100); absent without motion",
            "clean/": "with --write-clean: the same rows with noiseless, CTF-free, un-inverted shifted projections",
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120), encoding="utf-8")
