"""Latent-space analysis: PCA, UMAP, k-means with on-data centres, PC traversals, density maxima.

Every function works for any number of particles ``N >= 1`` and latent dimension ``zdim >= 1``
(small inputs fall back to what can be computed: fewer clusters than asked, PCA instead of UMAP,
one component instead of two) and is deterministic (fixed seeds).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np

UMAP_MIN_POINTS = 15
"""Below this many particles UMAP is not meaningful; the 2D embedding falls back to PCA."""


@dataclass(frozen=True)
class PCAResult:
    mean: np.ndarray  # (zdim,)
    components: np.ndarray  # (n_comp, zdim), rows are unit principal axes
    explained_variance: np.ndarray  # (n_comp,)
    explained_variance_ratio: np.ndarray  # (n_comp,)
    projection: np.ndarray  # (N, n_comp)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])


def pca(z: np.ndarray) -> PCAResult:
    """PCA by SVD of the centred latents; ``min(N, zdim)`` components (1 when ``N == 1``).

    Each axis's sign is fixed so that its largest loading is positive (stable across calls).
    """
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[1] < 1 or z.shape[0] < 1:
        raise ValueError(f"pca needs an (N >= 1, zdim >= 1) array, got {z.shape}")
    mean = z.mean(0)
    x = z - mean
    n_comp = max(1, min(z.shape))
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:n_comp]
    s = s[:n_comp]
    sign = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    sign[sign == 0] = 1
    vt = vt * sign[:, None]
    var = s**2 / max(z.shape[0] - 1, 1)
    total = x.var(0, ddof=1).sum() if z.shape[0] > 1 else 0.0
    ratio = var / total if total > 0 else np.zeros_like(var)
    return PCAResult(mean=mean, components=vt, explained_variance=var, explained_variance_ratio=ratio, projection=x @ vt.T)


def embed_2d(z: np.ndarray, use_umap: bool = True, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2D embedding for plots and density maxima: ``(N, 2)`` and its name (``"UMAP"``/``"PCA"``).

    UMAP (fixed ``random_state``) when asked and ``N >= UMAP_MIN_POINTS``; otherwise the first two
    principal components (a zero second column when only one exists).
    """
    z = np.asarray(z, np.float32)
    if use_umap and z.shape[0] >= UMAP_MIN_POINTS and z.shape[1] >= 1:
        emb = umap_embedding(z, seed=seed)
        if emb is not None:
            return emb, "UMAP"
    proj = pca(z).projection
    if proj.shape[1] < 2:
        proj = np.concatenate([proj, np.zeros((proj.shape[0], 2 - proj.shape[1]))], 1)
    return proj[:, :2].astype(np.float64), "PCA"


def umap_embedding(z: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray | None:
    """UMAP of ``z`` (None if it fails on degenerate input, e.g. all points identical)."""
    import warnings

    if np.ptp(z, axis=0).max() == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _torch_threads_kept():  # before numba is imported: it reads NUMBA_NUM_THREADS then
            import umap

            reducer = umap.UMAP(n_neighbors=max(2, min(n_neighbors, z.shape[0] - 1)), random_state=seed, n_jobs=1)
            try:
                return np.asarray(reducer.fit_transform(z), np.float64)
            except (ValueError, TypeError):  # tiny or degenerate inputs
                return None


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Run numba code (UMAP) without changing the process's CPU threads.

    numba's OpenMP layer sets the process's OpenMP thread count, which torch shares, to
    NUMBA_NUM_THREADS: by default every CPU of the machine, whatever OMP_NUM_THREADS or the job's
    CPU allocation say. After one UMAP, all torch work in the process (decoding volumes; the tests'
    training) ran on every core: 3x slower where the cores were busy. So numba gets the count torch
    has, and torch's count is put back if numba changed it anyway (numba imported earlier)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if "NUMBA_NUM_THREADS" not in os.environ:  # at most the machine's CPUs
        os.environ["NUMBA_NUM_THREADS"] = str(min(before or _cpu_budget(), os.cpu_count() or 1))
    try:
        yield
    finally:
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _cpu_budget() -> int:
    """The threads torch would start with here: OMP_NUM_THREADS, else the CPUs this process may use."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class KMeansResult:
    labels: np.ndarray  # (N,) cluster of each particle, 0..k-1
    centres: np.ndarray  # (k, zdim) cluster means (off-data)
    on_data: np.ndarray  # (k,) index of the particle nearest each centre, within its cluster
    k: int
    k_requested: int


K_AUTO_MAX = 20
K_AUTO_PARTICLES_PER_CLUSTER = 5


def resolve_k(k: int | str, n_particles: int) -> int:
    """The k-means ``k`` for a group of ``n_particles``: ``"auto"`` is one cluster per
    :data:`K_AUTO_PARTICLES_PER_CLUSTER` particles, between 2 and :data:`K_AUTO_MAX` (20 clusters of
    three particles each would be 20 noisy volumes, not a summary of the latent space); an integer
    is taken as given (:func:`kmeans` caps it by the number of distinct latents)."""
    if k == "auto":
        return int(min(K_AUTO_MAX, max(2, n_particles // K_AUTO_PARTICLES_PER_CLUSTER)))
    return int(k)


def parse_k(text: str) -> int | str:
    """``--k`` on the command line: ``auto`` or a whole number >= 1."""
    from hetfield.errors import ConfigError

    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"--k {text}: not a number of k-means clusters; give a whole number >= 1, or auto (one cluster per "
                      f"{K_AUTO_PARTICLES_PER_CLUSTER} particles, 2 to {K_AUTO_MAX})")


def kmeans(z: np.ndarray, k: int = 20, seed: int = 0) -> KMeansResult:
    """k-means (k capped by the number of distinct latents) with on-data centres.

    The on-data centre of a cluster is its member nearest the cluster mean, so each volume decoded
    there is the volume of a real particle (as tomoDRGN's and cryoDRGN's ``analyze`` do).
    """
    z = np.asarray(z, np.float64)
    n_distinct = len(np.unique(z.round(12), axis=0))
    kk = int(max(1, min(k, n_distinct)))
    if kk == 1:
        labels = np.zeros(z.shape[0], np.int64)
        centres = z.mean(0, keepdims=True)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(z)
        labels = km.labels_.astype(np.int64)
        # Renumber clusters in order of their first member, for stable output across versions.
        order = np.argsort([np.flatnonzero(labels == c)[0] for c in range(kk)])
        remap = np.empty(kk, np.int64)
        remap[order] = np.arange(kk)
        labels = remap[labels]
        centres = km.cluster_centers_[order]
    on_data = np.empty(kk, np.int64)
    for c in range(kk):
        members = np.flatnonzero(labels == c)
        d = np.linalg.norm(z[members] - centres[c], axis=1)
        on_data[c] = members[int(np.argmin(d))]
    return KMeansResult(labels=labels, centres=centres, on_data=on_data, k=kk, k_requested=int(k))


def nearest_particles(z: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the particle nearest each of ``points`` (``(M, zdim)`` → ``(M,)``)."""
    z = np.asarray(z, np.float64)
    points = np.atleast_2d(np.asarray(points, np.float64))
    d = ((points[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


@dataclass(frozen=True)
class Traversal:
    pc: int  # 1-based principal component
    percentiles: np.ndarray  # (n,)
    coordinates: np.ndarray  # (n,) PC coordinate at each percentile
    z: np.ndarray  # (n, zdim) latent points along the axis (off-data, like cryoDRGN's traversals)
    nearest: np.ndarray  # (n,) index of the particle nearest each point


def pc_traversal(z: np.ndarray, pc: int = 1, n: int = 10, lo: float = 5.0, hi: float = 95.0, result: PCAResult | None = None) -> Traversal:
    """Points along principal component ``pc`` (1-based) at ``n`` percentiles of its coordinate."""
    z = np.asarray(z, np.float64)
    result = result or pca(z)
    if not 1 <= pc <= result.n_components:
        raise ValueError(f"principal component {pc} does not exist (the latent has {result.n_components})")
    coord = result.projection[:, pc - 1]
    pct = np.linspace(lo, hi, n) if n > 1 else np.array([50.0])
    values = np.percentile(coord, pct)
    pts = result.mean[None, :] + values[:, None] * result.components[pc - 1][None, :]
    return Traversal(pc=pc, percentiles=pct, coordinates=values, z=pts, nearest=nearest_particles(z, pts))


@dataclass(frozen=True)
class DensityMaxima:
    positions: np.ndarray  # (M, d) maxima in the embedding
    density: np.ndarray  # (M,) relative density (max = 1)
    particles: np.ndarray  # (M,) index of the particle nearest each maximum in the embedding


def density_maxima(emb: np.ndarray, max_points: int = 5, min_relative: float = 0.2, grid: int = 96) -> DensityMaxima:
    """Local maxima of a Gaussian kernel density of a 1D/2D embedding, and the nearest particles.

    Maxima below ``min_relative`` of the highest are dropped, at most ``max_points`` kept (densest
    first). Fewer than 3 particles or a degenerate embedding: the single point nearest the mean.
    """
    from scipy import ndimage
    from scipy.stats import gaussian_kde

    emb = np.asarray(emb, np.float64)
    if emb.ndim == 1:
        emb = emb[:, None]
    keep_dims = [j for j in range(emb.shape[1]) if np.ptp(emb[:, j]) > 0]
    x = emb[:, keep_dims]
    fallback_idx = int(nearest_particles(emb, emb.mean(0, keepdims=True))[0])
    fallback = DensityMaxima(positions=emb[[fallback_idx]], density=np.ones(1), particles=np.array([fallback_idx]))
    if x.shape[1] == 0 or x.shape[0] < 3 or x.shape[0] <= x.shape[1]:
        return fallback
    try:
        kde = gaussian_kde(x.T)
    except (np.linalg.LinAlgError, ValueError):
        return fallback
    lo, hi = x.min(0), x.max(0)
    pad = 0.1 * (hi - lo)
    axes = [np.linspace(a - p, b + p, grid) for a, b, p in zip(lo, hi, pad)]
    mesh = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([m.ravel() for m in mesh])
    dens = kde(pts).reshape(mesh[0].shape)
    peak = ndimage.maximum_filter(dens, size=max(3, grid // 12), mode="nearest") == dens
    peak &= dens >= min_relative * dens.max()
    idx = np.argwhere(peak)
    order = np.argsort(-dens[tuple(idx.T)])
    idx = idx[order][:max_points]
    pos = np.stack([axes[j][idx[:, j]] for j in range(len(axes))], 1)
    full = np.tile(emb.mean(0), (pos.shape[0], 1))
    full[:, keep_dims] = pos
    particles = nearest_particles(emb, full)
    # Two maxima can share a nearest particle: keep the first (denser) one.
    _, first = np.unique(particles, return_index=True)
    first = np.sort(first)
    return DensityMaxima(positions=full[first], density=dens[tuple(idx[first].T)] / dens.max(), particles=particles[first])


def align_latents(z_prev: np.ndarray, z_next: np.ndarray) -> np.ndarray:
    """``z_prev`` mapped onto ``z_next`` by the least-squares affine map (similarity for few particles).

    A latent space may drift, rotate or rescale as a whole between epochs without any particle
    changing its place among the others; aligning first leaves only the relative rearrangement.
    With fewer than ``3 (zdim + 1)`` particles an affine fit would be (near) exact, so a rotation,
    one scale and a translation are fitted instead.
    """
    a, b = np.asarray(z_prev, np.float64), np.asarray(z_next, np.float64)
    n, d = a.shape
    if n < 2:
        return b.copy()
    if n >= 3 * (d + 1):
        x = np.concatenate([a, np.ones((n, 1))], 1)
        w, *_ = np.linalg.lstsq(x, b, rcond=None)
        return x @ w
    from scipy.linalg import orthogonal_procrustes

    am, bm = a.mean(0), b.mean(0)
    a0, b0 = a - am, b - bm
    if not np.any(a0):
        return np.tile(bm, (n, 1))
    r, scale = orthogonal_procrustes(a0, b0)
    s = scale / max((a0 * a0).sum(), 1e-300)
    return s * a0 @ r + bm


def normalised_shifts(z_prev: np.ndarray, z_next: np.ndarray, align: bool = False) -> np.ndarray:
    """Per-particle ``|z_next - z_prev|`` divided by the latent spread of ``z_next``.

    The spread is the root-mean-square distance of the particles from their mean (``sqrt`` of the
    total variance); a shift of 1 moves a particle by a typical particle-to-centre distance. With
    ``align``, ``z_prev`` is first aligned onto ``z_next`` (:func:`align_latents`).
    """
    a, b = np.asarray(z_prev, np.float64), np.asarray(z_next, np.float64)
    if align:
        a = align_latents(a, b)
    spread = np.sqrt(((b - b.mean(0)) ** 2).sum(1).mean()) if b.shape[0] > 1 else 0.0
    d = np.linalg.norm(b - a, axis=1)
    return d / spread if spread > 0 else np.zeros_like(d)
