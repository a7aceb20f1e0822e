"""Small synthetic inputs for the reader tests (written into tmp_path; no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from hetfield.imaging.rotations import euler_to_matrix, rotation_y


def write_stack(path: Path, n: int, box: int = 8, dtype=np.float32, voxel: float = 2.0, seed: int = 0,
                ny: int | None = None) -> np.ndarray:
    """An MRC stack of ``n`` random images (returned as float32)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, ny or box, box)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
        m.header.ispg = 0
    return data.astype(np.float32)


def star_loop(name: str, columns: list[str], rows: list[list]) -> str:
    head = f"\ndata_{name}\n\nloop_\n" + "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns))
    return head + "".join(" ".join(str(v) for v in r) + "\n" for r in rows) + "\n"


def star_pairs(name: str, pairs: dict) -> str:
    return f"\ndata_{name}\n\n" + "".join(f"_{k}   {v}\n" for k, v in pairs.items()) + "\n"


def write_relion31(tmp: Path, n: int = 4, box: int = 8, optics_last: bool = False, extra_cols: dict | None = None,
                   stack: str = "parts.mrcs") -> Path:
    """A RELION 3.1 SPA STAR with an optics block and ``n`` particles in one stack."""
    write_stack(tmp / stack, n, box)
    optics = star_loop("optics", ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
                                  "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality"],
                       [[1, "opticsGroup1", 300, 2.7, 0.1, 2.0, box, 2]])
    cols = ["rlnImageName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnAngleRot",
            "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"]
    rows = [[f"{i + 1}@{stack}", 1, 10000 + i, 9000 + i, 10, 10 * i, 20 * i, 30, 1.5, -2.0] for i in range(n)]
    for c, v in (extra_cols or {}).items():
        cols.append(c)
        for r in rows:
            r.append(v)
    parts = star_loop("particles", cols, rows)
    p = tmp / "particles.star"
    p.write_text("# version 30001\n" + (parts + optics if optics_last else optics + parts))
    return p


def write_image_series(tmp: Path, n_particles: int = 3, n_tilts: int = 4, box: int = 8, stack: str = "ts.mrcs",
                       group_prefix: str = "p") -> Path:
    """Warp-style image-series STAR: one row per tilt image, grouped by _rlnGroupName."""
    write_stack(tmp / stack, n_particles * n_tilts, box)
    cols = ["rlnImageName", "rlnDetectorPixelSize", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
            "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift", "rlnAngleRot", "rlnAngleTilt",
            "rlnAnglePsi", "rlnOriginX", "rlnOriginY", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnGroupName"]
    rows = []
    for p in range(n_particles):
        for t in range(n_tilts):
            i = p * n_tilts + t
            tilt = 10.0 * t
            rows.append([f"{i + 1}@{stack}", 3.0, 15000, 15000, 0, 300, 2.7, 0.1, 0, 5 * p, 90, 3 * t, 1.0, -1.0,
                         -4 * 3.0 * (t + 1), round(float(np.cos(np.radians(tilt))), 6), f"{group_prefix}{p:03d}"])
    path = tmp / "series.star"
    path.write_text(star_loop("", cols, rows))
    return path


# --- a synthetic optimisation set -------------------------------------------------------------


def _vec(v) -> str:
    return "[" + ",".join(f"{x:.8f}" for x in v) + "]"


def write_optimisation_set(tmp: Path, tomo_name: str = "TS_01", n_particles: int = 2, n_frames: int = 5,
                           box: int = 8, visible: list[list[int]] | None = None, hand: float = -1.0,
                           centered: bool = False, origin3d=(0.0, 0.0, 0.0), subtomo: bool = False,
                           stack_frames: int | None = None) -> dict:
    """Tomograms STAR + particles STAR + optimisation set + one stack per particle (all frames)."""
    tmp.mkdir(parents=True, exist_ok=True)
    tilts = np.linspace(-40, 40, n_frames)
    inplane = euler_to_matrix(0.0, 0.0, 84.0)
    rots = inplane @ rotation_y(tilts)  # tilt about y, then an in-plane rotation (like WarpTools)
    pre_exposure = np.array([3.0 * abs(i - n_frames // 2) for i in range(n_frames)]) + np.arange(n_frames) * 0.1
    defocus = 20000 + 100 * np.arange(n_frames)
    tomo_rows = []
    for f in range(n_frames):
        r = rots[f]
        tomo_rows.append([_vec(list(r[0]) + [0]), _vec(list(r[1]) + [0]), _vec(list(r[2]) + [0]), "[0,0,0,1]",
                          defocus[f], defocus[f] - 500, 30.0 + f, round(float(np.cos(np.radians(tilts[f]))), 3),
                          pre_exposure[f]])
    glob = star_loop("global", ["rlnTomoName", "rlnTomoTiltSeriesName", "rlnTomoFrameCount", "rlnTomoSizeX",
                                "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoHand", "rlnOpticsGroupName",
                                "rlnTomoTiltSeriesPixelSize", "rlnVoltage", "rlnSphericalAberration",
                                "rlnAmplitudeContrast"],
                     [[tomo_name, "dummy.mrc", n_frames, 4000, 4000, 1000, hand, "opticsGroup1", 1.5, 300, 2.7, 0.07]])
    tomo_block = star_loop(tomo_name, ["rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW", "rlnDefocusU",
                                       "rlnDefocusV", "rlnDefocusAngle", "rlnCtfScalefactor",
                                       "rlnMicrographPreExposure"], tomo_rows)
    tomograms = tmp / "run_tomograms.star"
    tomograms.write_text(glob + tomo_block)

    visible = visible or [[1] * n_frames for _ in range(n_particles)]
    optics = star_loop("optics", ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnSphericalAberration", "rlnVoltage",
                                  "rlnTomoTiltSeriesPixelSize", "rlnCtfDataAreCtfPremultiplied",
                                  "rlnImageDimensionality", "rlnTomoSubtomogramBinning", "rlnImagePixelSize",
                                  "rlnImageSize", "rlnAmplitudeContrast"],
                       [[1, "opticsGroup1", 2.7, 300, 1.5, 1, 2, 8.0, 12.0, box, 0.07]])
    cols = ["rlnTomoName", "rlnTomoParticleId"]
    cols += (["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"] if centered
             else ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"])
    cols += ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnTomoParticleName", "rlnOpticsGroup", "rlnImageName",
             "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnTomoVisibleFrames"]
    if subtomo:
        cols += ["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]
    rows, stacks, coords, angles = [], [], [], []
    for p in range(n_particles):
        stack = f"stacks/{tomo_name}_{p + 1:06d}.mrcs"
        write_stack(tmp / stack, stack_frames or n_frames, box, dtype=np.float16, voxel=12.0, seed=p)
        stacks.append(tmp / stack)
        c = (1000.0 + 300 * p, 2000.0 - 200 * p, 400.0 + 150 * p) if not centered else (250.0 * p, -100.0, 80.0 * p - 60)
        a = (30.0 + 20 * p, 60.0 + 10 * p, -40.0 + 5 * p)
        coords.append(c)
        angles.append(a)
        row = [tomo_name, p + 1, *c, *a, f"{tomo_name}/{p + 1}", 1, stack, *origin3d,
               "[" + ",".join(str(v) for v in visible[p]) + "]"]
        if subtomo:
            row += [15.0, 25.0, 35.0]
        rows.append(row)
    particles = tmp / "run.star"
    particles.write_text(star_pairs("general", {"rlnTomoSubTomosAre2DStacks": 1}) + optics
                         + star_loop("particles", cols, rows))
    opt = tmp / "run_optimisation_set.star"
    opt.write_text(star_pairs("", {"rlnTomoParticlesFile": particles.name, "rlnTomoTomogramsFile": tomograms.name}))
    return {"optimisation_set": opt, "particles": particles, "tomograms": tomograms, "stacks": stacks,
            "rots": rots, "tilts": tilts, "pre_exposure": pre_exposure, "defocus": defocus, "coords": np.array(coords),
            "angles": np.array(angles), "visible": np.array(visible), "hand": hand}


