"""Pose accuracy of an ab initio run: angular errors after the best global rotation, either hand.

An ab initio reconstruction is determined only up to a global rotation of the map (and its hand):
if ``V_est`` is ``V_true`` turned by ``M``, its poses are ``R_est = R_true @ M`` (RELION matrices,
``q = k @ R``), and the mirror image of ``V_true`` (``z → -z``) is seen at ``J @ R_true @ J @ M`` with
``J = diag(1, 1, -1)`` (``k @ J = k`` for an image frequency, so both explain the same images). So:

* :func:`align_rotations` finds ``M`` and the hand minimising the *median* geodesic error (robust to
  particles the search got wrong): every particle's own ``M_i = X_iᵀ E_i`` is a candidate, the one
  with the smallest median error wins, then the rotation average (Kabsch) of the inliers refines it;
* :func:`aligned_map` brings an estimated map into the true map's frame by the same ``M`` and hand
  (``V_true(x) ≈ V_est(x @ J^h @ M)``, ``x`` a row vector ``(x, y, z)``), then by the integer shift of
  the largest cross-correlation, so its correlation with the truth can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_J = np.diag([1.0, 1.0, -1.0])


def geodesic_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees of ``a @ b.T`` for rotation stacks ``(..., 3, 3)``."""
    tr = np.einsum("...ij,...ij->...", np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def _project_so3(s: np.ndarray) -> np.ndarray:
    """Nearest rotation to ``s`` (3, 3) in the Frobenius norm."""
    u, _, vt = np.linalg.svd(s)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


@dataclass(frozen=True)
class RotationAlignment:
    """``rotation`` M (3, 3), ``mirrored`` (the hand), ``errors_deg`` (n,) after alignment."""

    rotation: np.ndarray
    mirrored: bool
    errors_deg: np.ndarray

    @property
    def median_deg(self) -> float:
        return float(np.median(self.errors_deg))

    def fraction_within(self, deg: float) -> float:
        return float(np.mean(self.errors_deg <= deg))


def _best_for_hand(est: np.ndarray, true: np.ndarray, rng: np.random.Generator, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    n = est.shape[0]
    picks = rng.choice(n, size=min(n, n_candidates), replace=False)
    cands = np.einsum("nji,njk->nik", true[picks], est[picks])  # M_i = X_iᵀ E_i
    # error of every particle under every candidate: angle(E_i, X_i M_c)
    pred = np.einsum("nij,cjk->cnik", true, cands)
    med = np.median(geodesic_deg(pred, est[None]), axis=1)
    m = cands[int(np.argmin(med))]
    for _ in range(5):
        err = geodesic_deg(true @ m, est)
        inl = err <= max(2 * np.median(err), 3.0)
        m = _project_so3(np.einsum("nji,njk->ik", true[inl], est[inl]))
    return m, geodesic_deg(true @ m, est)


def align_rotations(est, true, allow_mirror: bool = True, n_candidates: int = 256, seed: int = 0) -> RotationAlignment:
    """Best global alignment of estimated rotations ``est (n, 3, 3)`` to ``true (n, 3, 3)``."""
    est = np.asarray(est, np.float64)
    true = np.asarray(true, np.float64)
    if est.shape != true.shape or est.ndim != 3 or est.shape[1:] != (3, 3):
        raise ValueError(f"need two (n, 3, 3) stacks of the same n, got {est.shape} and {true.shape}")
    if est.shape[0] == 0:
        raise ValueError("no rotations to align")
    best = None
    for mirrored in (False, True) if allow_mirror else (False,):
        x = _J @ true @ _J if mirrored else true
        m, err = _best_for_hand(est, x, np.random.default_rng(seed), n_candidates)
        if best is None or np.median(err) < np.median(best.errors_deg):
            best = RotationAlignment(rotation=m, mirrored=mirrored, errors_deg=err)
    return best


def median_pose_error_deg(est, true, allow_mirror: bool = True) -> float:
    """Median geodesic error in degrees after the best global rotation (either hand)."""
    return align_rotations(est, true, allow_mirror).median_deg


def aligned_map(volume: np.ndarray, reference: np.ndarray, alignment: RotationAlignment) -> np.ndarray:
    """``volume`` ``[z, y, x]`` resampled into ``reference``'s frame (rotation, hand, integer shift)."""
    import torch
    import torch.nn.functional as F

    d = volume.shape[0]
    m = (_J @ alignment.rotation) if alignment.mirrored else alignment.rotation
    c = torch.arange(d, dtype=torch.float64) - d // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    pts = torch.stack([x, y, z], -1).reshape(-1, 3) @ torch.as_tensor(m)  # x @ J^h M, rows (x, y, z)
    grid = ((pts + d // 2) * (2.0 / (d - 1)) - 1.0).reshape(1, d, d, d, 3).float()
    vol = torch.as_tensor(np.asarray(volume, np.float32))[None, None]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0].numpy()
    # Translation: the peak of the circular cross-correlation.
    cc = np.fft.ifftn(np.fft.fftn(reference) * np.conj(np.fft.fftn(out))).real
    shift = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape))
    return np.roll(out, tuple(shift), axis=(0, 1, 2)).astype(np.float32)


def aligned_map_correlation(volume: np.ndarray, reference: np.ndarray, alignment: RotationAlignment, mask: np.ndarray | None = None) -> float:
    """Masked correlation of ``volume`` with ``reference`` after :func:`aligned_map`."""
    from hetfield.analysis.metrics import masked_correlation, soft_sphere_mask

    mask = soft_sphere_mask(reference.shape[0]) if mask is None else mask
    return masked_correlation(aligned_map(volume, reference, alignment), reference, mask)
