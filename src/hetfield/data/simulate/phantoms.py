"""Ground-truth volumes: K compositional classes, each with a continuous motion of one domain.

Every class is a sum of isotropic 3D Gaussian blobs: a shared, asymmetric **core** (six blobs, no
symmetry, so pose and hand are well defined) plus a class-specific **domain** of two or three blobs
attached to the core at a hinge. Classes differ in where the domain sits (directions spread evenly
over the sphere by a Fibonacci lattice, turned by a seed-dependent rotation) and in its blob count,
so they differ clearly at low resolution *at given poses*. Under a free rotation they are close: the
compact core barely tells one domain direction from another, and the best rotation of class 1 onto
class 0 (32 px) is a domain swap at cc 0.974 (0.80 at the identity), so a method that searches poses
(ab initio) cannot separate two classes of this phantom by much (docs/internals.md, "Ab initio poses").

With ``classes_differ_by="subunits"`` the classes are assembly states instead: every class has the
same core and domain (class 0's), and class ``k`` also carries ``k`` static **subunits** of three
blobs each (30 % of class 0's mass apiece) at fixed sites on the core, so each class holds more
density than the one before and no rotation maps one onto another (32 px, two classes: cc 0.885 at
the identity, 0.921 after the best rotation, against 0.974 for the domain design). The **motion** of class ``k`` swings its domain rigidly
about an axis through the hinge by ``(t - 0.5) * motion_angle`` for ``t`` in ``[0, 1]``: the outer
blob travels ``2 * 0.124 * D * sin(motion_angle / 2)`` pixels (about 6 px at box 32 with 100°).

Geometry is in box units (fractions of ``D``, centre at ``D // 2``) so a phantom looks the same at
every box size. Blob centres stay within ``0.24 D`` of the centre and widths are at most ``0.075 D``,
so the density is negligible (< 1e-3 of the peak) beyond ``0.4 D``; a cosine taper from ``0.37 D`` to
``0.40 D`` then makes it exactly zero there. The density is positive inside. Volumes are ``[z, y, x]``
float32, built with a plain loop over blobs (no BLAS reduction), so they are bit-reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hetfield.data.simulate.params import CLASS_DIFFERENCES
from hetfield.imaging.rotations import random_rotations, rotvec_to_matrix

# Core blobs: (x, y, z) centre in box units, sigma in box units, amplitude.
_CORE = (
    ((0.00, 0.00, 0.00), 0.075, 1.0),
    ((0.09, 0.03, -0.02), 0.060, 0.9),
    ((-0.08, 0.05, 0.04), 0.060, 0.9),
    ((0.02, -0.09, 0.03), 0.055, 0.8),
    ((-0.03, -0.02, -0.10), 0.050, 0.8),
    ((0.05, 0.08, 0.08), 0.045, 0.7),
)
_HINGE_RADIUS = 0.11
# Domain blobs relative to the hinge, in the (u, w) frame: u points away from the core, w sideways.
_DOMAIN = (((0.06, 0.00), 0.050, 1.2), ((0.12, 0.03), 0.045, 1.2))
_DOMAIN_EXTRA = ((0.09, -0.05), 0.040, 1.0)  # present in odd-numbered classes only
# A subunit's blobs relative to its site on the core, in the site's (u, w) frame (classes_differ_by="subunits").
_SUBUNIT = (((0.05, 0.00), 0.055, 1.1), ((0.09, 0.04), 0.050, 1.1), ((0.08, -0.05), 0.045, 1.0))
MASK_INNER, MASK_OUTER = 0.37, 0.40


def fibonacci_sphere(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over the sphere."""
    i = np.arange(n, dtype=np.float64)
    z = 1 - (2 * i + 1) / n
    r = np.sqrt(np.clip(1 - z * z, 0, None))
    phi = i * np.pi * (3 - np.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@dataclass(frozen=True)
class Phantom:
    """K classes of blobs; :meth:`blobs` and :meth:`volume` give class ``k`` at motion coordinate ``t``."""

    core_centers: np.ndarray  # (6, 3) box units, (x, y, z)
    core_sigmas: np.ndarray
    core_amps: np.ndarray
    domain_centers: tuple  # per class (m, 3) at t = 0.5
    domain_sigmas: tuple
    domain_amps: tuple
    hinges: np.ndarray  # (K, 3)
    axes: np.ndarray  # (K, 3) unit rotation axes of the motion
    motion_angle_deg: float
    motion: bool
    subunit_centers: tuple  # per class (m, 3) static blobs that do not move with t ((0, 3) with "domain")
    subunit_sigmas: tuple
    subunit_amps: tuple
    classes_differ_by: str

    @property
    def n_classes(self) -> int:
        return len(self.domain_centers)

    @classmethod
    def make(cls, n_classes: int, rng: np.random.Generator, motion: bool = True, motion_angle_deg: float = 100.0,
             classes_differ_by: str = "domain"):
        """The phantom of ``n_classes`` classes; ``classes_differ_by`` is ``"domain"`` (each class its
        own domain placement) or ``"subunits"`` (one domain, class ``k`` with ``k`` subunits)."""
        if classes_differ_by not in CLASS_DIFFERENCES:
            raise ValueError(f"classes_differ_by {classes_differ_by!r}: choose one of {CLASS_DIFFERENCES}")
        core = np.array([c for c, _, _ in _CORE], dtype=np.float64)
        turn = random_rotations(1, rng)[0]
        dirs = fibonacci_sphere(n_classes) @ turn.T
        frames = []  # the same draws in both designs, so "domain" phantoms are those of before
        for k in range(n_classes):
            w = rng.standard_normal(3)
            w -= (w @ dirs[k]) * dirs[k]
            frames.append((dirs[k], w / np.linalg.norm(w)))
        sub = classes_differ_by == "subunits"
        centers, sigmas, amps, hinges, axes = [], [], [], [], []
        for k in range(n_classes):
            u, w = frames[0] if sub else frames[k]
            hinge = _HINGE_RADIUS * u
            blobs = list(_DOMAIN) + ([_DOMAIN_EXTRA] if k % 2 and not sub else [])
            centers.append(np.array([hinge + a * u + b * w for (a, b), _, _ in blobs]))
            sigmas.append(np.array([s for _, s, _ in blobs]))
            amps.append(np.array([a for _, _, a in blobs]))
            hinges.append(hinge)
            axes.append(np.cross(u, w))  # swing within the (u, w) plane
        # subunit sites: the other class directions, each with its own sideways axis
        site_blobs = [np.array([_HINGE_RADIUS * u + a * u + b * w for (a, b), _, _ in _SUBUNIT]) for u, w in frames[1:]]
        sub_c, sub_s, sub_a = [], [], []
        for k in range(n_classes):
            m = k if sub else 0
            sub_c.append(np.concatenate([np.zeros((0, 3)), *site_blobs[:m]]))
            sub_s.append(np.array([s for _, s, _ in _SUBUNIT] * m, dtype=np.float64))
            sub_a.append(np.array([a for _, _, a in _SUBUNIT] * m, dtype=np.float64))
        return cls(
            core_centers=core,
            core_sigmas=np.array([s for _, s, _ in _CORE]),
            core_amps=np.array([a for _, _, a in _CORE]),
            domain_centers=tuple(centers),
            domain_sigmas=tuple(sigmas),
            domain_amps=tuple(amps),
            hinges=np.array(hinges),
            axes=np.array(axes),
            motion_angle_deg=float(motion_angle_deg),
            motion=bool(motion),
            subunit_centers=tuple(sub_c),
            subunit_sigmas=tuple(sub_s),
            subunit_amps=tuple(sub_a),
            classes_differ_by=classes_differ_by,
        )

    def motion_angle(self, t: float) -> float:
        """Swing of the domain in degrees at ``t`` (0 at ``t = 0.5``; 0 everywhere without motion)."""
        return (float(t) - 0.5) * self.motion_angle_deg if self.motion else 0.0

    def blobs(self, k: int, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres ``(n, 3)`` (box units, x y z), sigmas ``(n,)`` and amplitudes of class ``k`` at ``t``."""
        rot = rotvec_to_matrix(self.axes[k] * np.deg2rad(self.motion_angle(t)))
        dom = (self.domain_centers[k] - self.hinges[k]) @ rot.T + self.hinges[k]
        return (
            np.concatenate([self.core_centers, dom, self.subunit_centers[k]]),
            np.concatenate([self.core_sigmas, self.domain_sigmas[k], self.subunit_sigmas[k]]),
            np.concatenate([self.core_amps, self.domain_amps[k], self.subunit_amps[k]]),
        )

    def volume(self, k: int, t: float, box: int) -> np.ndarray:
        """Class ``k`` at ``t`` on a ``box**3`` grid: float32 ``[z, y, x]``, centre at ``box // 2``."""
        centers, sigmas, amps = self.blobs(k, t)
        grid = (np.arange(box, dtype=np.float64) - box // 2) / box  # box units
        vol = np.zeros((box, box, box), dtype=np.float64)
        for (cx, cy, cz), s, a in zip(centers, sigmas, amps):
            gx = np.exp(-((grid - cx) ** 2) / (2 * s * s))
            gy = np.exp(-((grid - cy) ** 2) / (2 * s * s))
            gz = a * np.exp(-((grid - cz) ** 2) / (2 * s * s))
            vol += gz[:, None, None] * (gy[:, None] * gx[None, :])[None]
        vol *= radial_taper(box)
        return vol.astype(np.float32)

    def describe(self) -> dict:
        """Plain-data description of the geometry for ``truth.yaml`` (box units, degrees)."""

        def rows(c, s, a):
            return [
                {"center_xyz": [round(float(v), 6) for v in ci], "sigma": float(si), "amplitude": float(ai)}
                for ci, si, ai in zip(c, s, a)
            ]

        return {
            "units": "box fractions (multiply by box for pixels), centre at box//2, (x, y, z)",
            "core": rows(self.core_centers, self.core_sigmas, self.core_amps),
            "classes": [
                {
                    "class": k,
                    "domain_at_t_0.5": rows(self.domain_centers[k], self.domain_sigmas[k], self.domain_amps[k]),
                    "hinge_xyz": [round(float(v), 6) for v in self.hinges[k]],
                    "motion_axis_xyz": [round(float(v), 6) for v in self.axes[k]],
                    **({"subunits": rows(self.subunit_centers[k], self.subunit_sigmas[k], self.subunit_amps[k])}
                       if self.classes_differ_by == "subunits" else {}),
                }
                for k in range(self.n_classes)
            ],
            "motion": (
                f"domain rotates rigidly about motion_axis through hinge by (t - 0.5) * {self.motion_angle_deg:g} deg"
                if self.motion
                else "none"
            ),
            "mask": f"cosine taper from {MASK_INNER} to {MASK_OUTER} of the box: zero beyond {MASK_OUTER} * box",
        }


@lru_cache(maxsize=4)
def radial_taper(box: int) -> np.ndarray:
    """``(box, box, box)`` float64: 1 within ``0.37 box``, cosine to 0 at ``0.40 box``, 0 beyond."""
    c = np.arange(box, dtype=np.float64) - box // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2) / box
    x = np.clip((r - MASK_INNER) / (MASK_OUTER - MASK_INNER), 0, 1)
    taper = 0.5 * (1 + np.cos(np.pi * x))
    taper.flags.writeable = False
    return taper
