"""Comparison metrics: Fourier shell correlation and resolution, masked correlation, clustering scores
(ARI, NMI), rank correlation, and best one-to-one matching.

Volumes are ``[z, y, x]`` cubes with the centre at ``D // 2`` (see :mod:`hetfield.imaging`). Spatial
frequencies are in cycles per voxel (``0 … 0.5``); multiply by ``1 / pixel_size_A`` for 1/Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetfield.imaging.lattice import shell_index


# -- masks --------------------------------------------------------------------------------------
def soft_sphere_mask(box: int, radius: float | None = None, edge: float | None = None) -> np.ndarray:
    """``(D, D, D)`` float32: 1 inside ``radius`` voxels of the centre, a cosine edge of ``edge`` voxels.

    Defaults: radius ``0.4 * D`` and edge ``0.075 * D`` (zero from ``0.475 * D``, inside the box).
    """
    radius = 0.4 * box if radius is None else float(radius)
    edge = max(0.075 * box if edge is None else float(edge), 1e-6)
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    t = np.clip((r - radius) / edge, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


# -- correlation --------------------------------------------------------------------------------
def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two volumes over a (soft) mask, weights = mask values.

    Returns 0.0 when either volume is constant under the mask (no signal to correlate).
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"volumes differ in size: {a.size} vs {b.size} voxels")
    w = np.ones_like(a) if mask is None else np.asarray(mask, np.float64).ravel()
    sw = w.sum()
    if sw <= 0:
        return 0.0
    am = a - (w * a).sum() / sw
    bm = b - (w * b).sum() / sw
    num = (w * am * bm).sum()
    den = np.sqrt((w * am * am).sum() * (w * bm * bm).sum())
    return float(num / den) if den > 0 else 0.0


# -- Fourier shell correlation ------------------------------------------------------------------
@dataclass(frozen=True)
class FSC:
    """FSC per shell: ``freq`` (cycles/voxel, shell ``i`` at ``i / D``) and ``fsc`` values."""

    freq: np.ndarray
    fsc: np.ndarray
    pixel_size_A: float = 1.0

    def at(self, freq: float) -> float:
        """FSC at ``freq`` cycles/voxel (linear interpolation between shells)."""
        return float(np.interp(freq, self.freq, self.fsc))

    def at_half_nyquist(self) -> float:
        return self.at(0.25)

    def crossing(self, threshold: float) -> float:
        """First frequency (cycles/voxel) where the FSC falls below ``threshold``, interpolated.

        Shell 0 (the mean) is skipped. Returns 0.5 (Nyquist) when it never falls below.
        """
        f, c = self.freq, self.fsc
        for i in range(1, len(c)):
            if c[i] < threshold:
                c0, c1 = c[i - 1], c[i]
                if i == 1 or c0 == c1:
                    return float(f[i]) if i > 1 else float(f[1])
                t = (c0 - threshold) / (c0 - c1)
                return float(f[i - 1] + t * (f[i] - f[i - 1]))
        return float(f[-1])

    def resolution_A(self, threshold: float) -> float:
        """Resolution (Å) where the FSC crosses ``threshold`` (``2 * pixel_size`` if it never does)."""
        return float(self.pixel_size_A / max(self.crossing(threshold), 1e-9))

    def reaches_nyquist(self, threshold: float) -> bool:
        return bool(np.all(self.fsc[1:] >= threshold))

    def as_rows(self) -> list[dict[str, float]]:
        return [
            {
                "shell": i,
                "freq_per_px": float(f),
                "freq_per_A": float(f / self.pixel_size_A),
                "resolution_A": float(self.pixel_size_A / f) if f > 0 else float("inf"),
                "fsc": float(c),
            }
            for i, (f, c) in enumerate(zip(self.freq, self.fsc))
        ]


def fsc(a: np.ndarray, b: np.ndarray, pixel_size_A: float = 1.0, mask: np.ndarray | None = None) -> FSC:
    """Fourier shell correlation of two volumes (optionally both multiplied by ``mask`` first).

    Shells 0 … D/2; shells with no power in either map get FSC 0.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"FSC needs two cubes of the same size, got {a.shape} and {b.shape}")
    if mask is not None:
        a = a * mask
        b = b * mask
    d = a.shape[0]
    fa = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(a)))
    fb = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(b)))
    shells = shell_index(d).ravel()
    n = d // 2 + 1
    keep = shells < n
    s = shells[keep]
    fa, fb = fa.ravel()[keep], fb.ravel()[keep]
    num = np.bincount(s, weights=(fa * np.conj(fb)).real, minlength=n)
    pa = np.bincount(s, weights=np.abs(fa) ** 2, minlength=n)
    pb = np.bincount(s, weights=np.abs(fb) ** 2, minlength=n)
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    return FSC(freq=np.arange(n) / d, fsc=c, pixel_size_A=float(pixel_size_A))


def wiener_correlation_bound(truth: np.ndarray, half_fsc, mask: np.ndarray | None = None) -> float:
    """The correlation with ``truth`` that data of half-map FSC ``half_fsc`` (shells 0, 1, …) allow a
    per-shell Wiener estimate, in expectation: ``sqrt(Σ_r P_r ρ_r² / Σ_r P_r)``, ``P_r`` the power of the
    (masked, mean-free) truth in shell ``r`` and ``ρ_r² = 2 FSC_r / (1 + FSC_r)`` the full map's squared
    correlation with the truth in that shell (FSC clipped to ``[0, 1]``; shells past the curve, and the
    cube's corners past Nyquist, count 0).

    It bounds what an estimate linear in the data, with a Gaussian prior per shell, reaches (the masked
    correlation is measured with the mask as weights, this with the masked truth's spectrum: equal to
    a few 1e-3); an estimate that knows more of the object (support, positivity) is not bound by it.
    """
    t = np.asarray(truth, np.float64)
    if mask is not None:
        t = t * mask
    t = t - t.mean()
    d = t.shape[0]
    ft = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(t)))
    shells = shell_index(d).ravel()
    # every shell of the cube: the corners past Nyquist hold power of the truth that no map has
    power = np.bincount(shells, weights=np.abs(ft.ravel()) ** 2)
    c = np.zeros(power.size)
    given = np.clip(np.asarray(half_fsc, np.float64)[: d // 2 + 1], 0.0, 1.0)
    c[: given.size] = given
    total = power.sum()
    return float(np.sqrt((power * 2 * c / (1 + c)).sum() / total)) if total > 0 else 0.0


# -- clustering and ranks -----------------------------------------------------------------------
def ari(labels_true, labels_pred) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels_true), np.asarray(labels_pred)))


def nmi(labels_true, labels_pred) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(labels_true), np.asarray(labels_pred)))


def abs_spearman(x, y) -> float | None:
    """``|Spearman ρ|``; None when fewer than 3 values or either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if not np.isfinite(rho) else float(abs(rho))


def match_best(score: np.ndarray) -> list[tuple[int, int]]:
    """Hungarian matching maximising the total ``score[i, j]``: pairs ``(i, j)`` sorted by ``i``."""
    from scipy.optimize import linear_sum_assignment

    score = np.asarray(score, np.float64)
    if score.size == 0:
        return []
    rows, cols = linear_sum_assignment(-np.nan_to_num(score, nan=-1e9))
    return sorted(zip(rows.tolist(), cols.tolist()))
