"""What the microscope did: classes and motion coordinates, poses, tilt schemes, CTF, dose and shifts.

All draws come from independent generators spawned from one ``numpy.random.SeedSequence(seed)`` in a
fixed order (:data:`STREAMS`), so turning an output option on or off never changes another draw.

Conventions (stated once here; ``truth.yaml`` repeats them):

* **Tilt order** (dose-symmetric, Hagen et al. 2017, groups of one): acquisition ``i`` has stage tilt
  ``0, +s, -s, -2s, +2s, +3s, -3s, -4s, +4s, …`` (``s`` = step), i.e. after the 0° image the pairs
  ``±k`` alternate which sign comes first. The cumulative pre-exposure of acquisition ``i`` is
  ``i * dose_per_tilt`` (the first image has seen no dose).
* **Ragged tilt sets** (``min_tilts < n_tilts``): particle ``p`` keeps ``n_p ~ U{min_tilts..n_tilts}``
  frames: frame 0 (the 0° image) plus ``n_p - 1`` others chosen at random, in acquisition order. The
  kept frames keep their own tilt and dose, so dose is *not* the row number times the dose per tilt.
* **Rotation**: particle RELION matrix ``A_p`` (uniform on SO(3)); image matrix
  ``A_image = rotation_y(stage_tilt_deg) @ A_p`` (tilt ∘ particle; the tilt axis is the image y axis).
  Euler angles are rounded to 1e-6° as written and the matrices rebuilt from the rounded angles, so
  the files reproduce the images exactly.
* **Defocus** of an image: tomogram (micrograph) mean + per-tilt jitter + the particle's depth along
  the beam after tilting, ``z' = (rotation_y(tilt) @ [x, 0, z])_z``; ``dU = dz + a``, ``dV = dz - a`` with a
  per-tomogram astigmatism ``a`` and angle.
* **Shifts**: ``origin ~ N(0, shift_sd_px)`` per image, clipped to ``±max_shift_px``; the particle
  sits at ``-origin`` in its image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetfield.imaging.rotations import euler_to_matrix, matrix_to_euler, random_rotations, rotation_y

STREAMS = ("phantom", "classes", "motion", "rotations", "tilts", "ctf", "shifts", "noise")


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children)}


def dose_symmetric_tilts(n_tilts: int, step_deg: float) -> np.ndarray:
    """Stage tilts in acquisition order: ``0, +s, -s, -2s, +2s, +3s, -3s, …`` (``n_tilts`` values)."""
    out = [0.0]
    k = 1
    while len(out) < n_tilts:
        pair = (k, -k) if k % 2 else (-k, k)
        out.extend(float(p * step_deg) for p in pair)
        k += 1
    return np.array(out[:n_tilts], dtype=np.float64)


def class_counts(n: int, fractions) -> np.ndarray:
    """Largest-remainder rounding of ``n * fractions``: counts summing to ``n`` (ties: lower class)."""
    f = np.asarray(fractions, dtype=np.float64)
    raw = n * f
    counts = np.floor(raw + 1e-9).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        order = np.lexsort((np.arange(len(f)), -(raw - counts)))
        counts[order[:rest]] += 1
    return counts


def _round_euler(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrices -> Euler angles rounded to 1e-6° (+0.0 for -0.0) and the matrices rebuilt from them."""
    eul = np.round(np.stack(matrix_to_euler(m), axis=-1), 6) + 0.0
    return eul, euler_to_matrix(eul[..., 0], eul[..., 1], eul[..., 2])


@dataclass
class Acquisition:
    """Per-particle (length N) and per-image (length M, particle-major, acquisition order) draws."""

    # particles
    particle_names: list[str]
    particle_group: np.ndarray  # (N,) tomogram / micrograph index
    group_names: list[str]
    particle_class: np.ndarray  # (N,) int
    particle_t: np.ndarray  # (N,) float, rounded to 1e-8
    particle_euler: np.ndarray  # (N, 3) deg (rot, tilt, psi)
    particle_matrix: np.ndarray  # (N, 3, 3) RELION A
    position_A: np.ndarray  # (N, 2) x (across the tilt axis) and z (depth) in the ice
    offsets: np.ndarray  # (N+1,) image rows of particle p: offsets[p]:offsets[p+1]
    # images
    image_particle: np.ndarray  # (M,)
    frame: np.ndarray  # (M,) acquisition index in the tilt scheme
    stage_tilt_deg: np.ndarray  # (M,) signed
    dose_e_per_A2: np.ndarray  # (M,) cumulative pre-exposure
    image_euler: np.ndarray  # (M, 3)
    image_matrix: np.ndarray  # (M, 3, 3) = rotation_y(tilt) @ particle matrix (from rounded angles)
    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    origin_A: np.ndarray  # (M, 2) x, y
    tilt_scheme_deg: np.ndarray  # (n_tilts,) acquisition order

    @property
    def n_particles(self) -> int:
        return len(self.particle_names)

    @property
    def n_images(self) -> int:
        return len(self.image_particle)

    @property
    def ctf_scale(self) -> np.ndarray:
        return np.round(np.cos(np.deg2rad(self.stage_tilt_deg)), 8)


def draw_acquisition(p, rngs: dict[str, np.random.Generator]) -> Acquisition:
    """Draw everything but the phantom and the noise for validated :class:`SimulationParams` ``p``."""
    n = p.n_particles
    tilt_mode = p.mode == "tilt"

    # classes (exact counts from the fractions, shuffled) and motion coordinates
    counts = class_counts(n, p.class_fractions)
    labels = rngs["classes"].permutation(np.repeat(np.arange(p.n_classes), counts))
    t = rngs["motion"].random(n)
    t = np.round(t, 8) if p.motion else np.full(n, 0.5)

    # particle poses
    p_euler, p_matrix = _round_euler(random_rotations(n, rngs["rotations"]))

    # tilt scheme and per-particle frames
    scheme = dose_symmetric_tilts(p.n_tilts, p.tilt_step_deg) if tilt_mode else np.zeros(1)
    n_frames = len(scheme)
    rt = rngs["tilts"]
    if tilt_mode and p.min_tilts < n_frames:
        keep = rt.integers(p.min_tilts, n_frames + 1, size=n)
        frames = [
            np.concatenate([[0], np.sort(rt.choice(np.arange(1, n_frames), size=k - 1, replace=False))])
            for k in keep
        ]
    else:
        frames = [np.arange(n_frames)] * n
    n_img = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_img)]).astype(np.int64)
    frame = np.concatenate(frames).astype(np.int64)
    img_p = np.repeat(np.arange(n), n_img)
    tilt = scheme[frame]
    dose = frame * (p.dose_per_tilt if tilt_mode else 0.0)

    # image poses: tilt ∘ particle
    i_euler, i_matrix = _round_euler(rotation_y(tilt) @ p_matrix[img_p])

    # groups (tomograms / micrographs), CTF
    group = np.arange(n) // p.particles_per_group
    n_groups = int(group[-1]) + 1
    width = max(3, len(str(n_groups - 1)))
    group_names = [f"{'tomo' if tilt_mode else 'mic'}{g:0{width}d}" for g in range(n_groups)]
    rc = rngs["ctf"]
    g_defocus = np.maximum(rc.normal(p.defocus_A, p.defocus_spread_A, n_groups), 0.3 * p.defocus_A)
    g_astig = rc.uniform(0, p.astigmatism_A, n_groups)
    g_angle = rc.uniform(0, 180, n_groups)
    jitter = rc.normal(0, p.tilt_defocus_sd_A if tilt_mode else 0.0, (n_groups, n_frames))
    pos = np.stack(
        [rc.uniform(-1, 1, n) * p.field_half_width_A, rc.uniform(-0.5, 0.5, n) * p.ice_thickness_A], axis=1
    )
    rad = np.deg2rad(tilt)
    depth = -np.sin(rad) * pos[img_p, 0] + np.cos(rad) * pos[img_p, 1]  # z of rotation_y(tilt) @ (x, 0, z)
    gi = group[img_p]
    dz = g_defocus[gi] + jitter[gi, frame] + depth
    du = np.round(dz + g_astig[gi], 2)
    dv = np.round(dz - g_astig[gi], 2)
    angle = np.round(g_angle[gi], 2)

    # shifts (Å, rounded as written)
    shift_px = np.clip(rngs["shifts"].normal(0, p.shift_sd_px, (len(frame), 2)), -p.max_shift_px, p.max_shift_px)
    origin = np.round(shift_px * p.pixel_size_A, 6) + 0.0

    pwidth = max(6, len(str(n - 1)))
    return Acquisition(
        particle_names=[f"p{i:0{pwidth}d}" for i in range(n)],
        particle_group=group,
        group_names=group_names,
        particle_class=labels.astype(np.int64),
        particle_t=t,
        particle_euler=p_euler,
        particle_matrix=p_matrix,
        position_A=pos,
        offsets=offsets,
        image_particle=img_p,
        frame=frame,
        stage_tilt_deg=tilt,
        dose_e_per_A2=dose,
        image_euler=i_euler,
        image_matrix=i_matrix,
        defocus_u_A=du,
        defocus_v_A=dv,
        defocus_angle_deg=angle,
        origin_A=origin,
        tilt_scheme_deg=scheme,
    )


def stack_layout(offsets: np.ndarray, images_per_stack: int) -> list[tuple[int, int]]:
    """Split particles into stacks of whole particles with at most ``images_per_stack`` images each
    (a particle with more images than that gets a stack of its own): ``[(first, last+1) particle]``."""
    out, start = [], 0
    n = len(offsets) - 1
    for q in range(1, n + 1):
        if offsets[q] - offsets[start] > images_per_stack and q - 1 > start:
            out.append((start, q - 1))
            start = q - 1
    out.append((start, n))
    return out
