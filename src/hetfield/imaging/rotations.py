"""Rotations: RELION Euler angles <-> matrices (numpy), and the continuous 6D representation (torch).

RELION's matrix ``A = euler_to_matrix(rot, tilt, psi)`` (ZYZ, degrees) maps volume coordinates to the
image frame: an image is ``P(x, y) = sum_z V(A.T @ [x, y, z])``. It equals
``scipy.spatial.transform.Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T``.
"""

from __future__ import annotations

import numpy as np

_EPS = 16 * np.finfo(np.float32).eps


def euler_to_matrix(rot_deg, tilt_deg, psi_deg) -> np.ndarray:
    """RELION Euler angles (degrees, any broadcastable shape ``S``) -> ``S + (3, 3)`` matrices."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot_deg, tilt_deg, psi_deg))
    a, b, g = np.broadcast_arrays(a, b, g)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(a.shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., 3, 3)`` rotation matrices -> RELION ``(rot, tilt, psi)`` in degrees (tilt in [0, 180])."""
    m = np.asarray(m, dtype=np.float64)
    abs_sb = np.hypot(m[..., 0, 2], m[..., 1, 2])
    regular = abs_sb > _EPS
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(regular, np.arctan2(m[..., 1, 2], -m[..., 0, 2]), 0.0)
        alpha = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
        beta = np.where(regular, np.arctan2(abs_sb, m[..., 2, 2]), 0.0)
        # Gimbal lock (tilt 0 or 180): put the whole in-plane angle into psi, as RELION does.
        up = m[..., 2, 2] > 0
        gamma_lock = np.where(up, np.arctan2(-m[..., 1, 0], m[..., 0, 0]), np.arctan2(m[..., 1, 0], -m[..., 0, 0]))
        beta_lock = np.where(up, 0.0, np.pi)
    gamma = np.where(regular, gamma, gamma_lock)
    beta = np.where(regular, beta, beta_lock)
    return np.rad2deg(alpha), np.rad2deg(beta), np.rad2deg(gamma)


def rotation_y(angle_deg) -> np.ndarray:
    """Rotation about the y axis (the stage tilt axis of an untilted-frame tilt series)."""
    t = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(t), np.sin(t)
    m = np.zeros(t.shape + (3, 3))
    m[..., 0, 0] = c
    m[..., 0, 2] = s
    m[..., 1, 1] = 1
    m[..., 2, 0] = -s
    m[..., 2, 2] = c
    return m


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 3)`` rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    m = np.empty((n, 3, 3))
    m[:, 0, 0] = 1 - 2 * (y * y + z * z)
    m[:, 0, 1] = 2 * (x * y - z * w)
    m[:, 0, 2] = 2 * (x * z + y * w)
    m[:, 1, 0] = 2 * (x * y + z * w)
    m[:, 1, 1] = 1 - 2 * (x * x + z * z)
    m[:, 1, 2] = 2 * (y * z - x * w)
    m[:, 2, 0] = 2 * (x * z - y * w)
    m[:, 2, 1] = 2 * (y * z + x * w)
    m[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def rotvec_to_matrix(v) -> np.ndarray:
    """Axis-angle vectors ``(..., 3)`` (radians) -> ``(..., 3, 3)`` (Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(theta > 1e-12, v / theta, 0.0)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(v.shape[:-1] + (3, 3))
    th = theta[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + np.sin(th) * kmat + (1 - np.cos(th)) * (kmat @ kmat)


# --- torch: the 6D representation used by learned pose tables (Zhou et al. 2019) -----------------


def rot6d_to_matrix(x):
    """``(..., 6)`` -> ``(..., 3, 3)``: Gram-Schmidt on two 3-vectors; the rows are the basis."""
    import torch

    a1, a2 = x[..., :3], x[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def matrix_to_rot6d(m):
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two rows; inverse of :func:`rot6d_to_matrix`."""
    return m[..., :2, :].reshape(m.shape[:-2] + (6,))
