"""Data-driven start of the encoder's latent (``--latent-start factor``): low-resolution factor analysis.

Trained from random weights, the tilt-set encoder and the field sit at a saddle: the first latents
are random projections of the encoder's input, dominated by orientation and noise, so the field
learns to ignore ``z`` and the encoder, whose ``z`` only adds noise to the decoding, shrinks its
spread. On tomo-sim-50S this left k-means on ``z`` at ARI ≈ 0 after 20 epochs (tomoDRGN: 0.48),
although the mixture's EM start finds the two classes at low resolution. So the latent starts, as the
classes do (:mod:`hetfield.train.class_start`), from a linear model on the same coarse maps:

1. each particle's images give the sufficient statistics ``A_p``, ``b_p`` of a linear map on the
   coarse grid (:class:`~hetfield.train.class_start.LowResStatistics`, at most ``MAX_PARTICLES``);
2. a factor model ``V_p = V0 + W z_p``, ``z_p ~ N(0, I)`` is fitted by EM (expectation / conditional
   maximisation, one column of ``[V0, W]`` at a time), with automatic relevance determination
   (Bishop's Bayesian PCA): each factor's ridge grows as its map shrinks, so the factors the data do
   not support go to zero and their latent coordinates stay at the prior. How many factors it is
   given is read from the data (:func:`fit_start`): all ``zdim`` when two factors' posterior means
   form clusters (classes), only the leading one when they trace a curve (a motion);
3. the model keeps ``[V0, W]`` and ``σ²``; from then on the encoder's output is the factor model's
   exact posterior (:mod:`hetfield.model.factor_posterior`) plus what its networks learn to add.

Only training particles take part, so the validation loss sees nothing fitted on held-out particles.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hetfield.train.class_start import RIDGE, LowResStatistics, _solve_spd

# How many factors start z depends on what the two leading factors' posterior means look like.
# A curved motion needs two linear factors of equal prior variance (t and |t - 1/2| for a swinging
# domain), so PCA of z could not tell which one is the motion (PC1 |Spearman| 0.05 on a simulated
# swing): there only the leading factor starts z and the decoder models the curve from one
# coordinate. Three compositional classes lie on a triangle in those two factors, and one
# coordinate orders them on a line k-means cannot cut (ARI 0.44-0.65): there every factor
# relevance determination keeps starts z. The means' best k-means silhouette (k = 2..6) tells
# the two apart (3 fit seeds each): 0.50-0.56 on simulated swings (SNR 0.1 and 0.5), 0.84 on three
# classes (two data seeds), 0.80 on tomo-sim-50S (relevance determination keeps one factor there),
# 0.56-0.66 on two simulated classes at SNR 0.05 (one factor separates those).
CLUSTERED_SILHOUETTE = 0.7
DECISION_ITERATIONS = 10  # the silhouettes above move by < 0.02 from 10 to 30 iterations
MAX_CLUSTERS = 6
MAX_PARTICLES = 1000  # A_p is kept packed (class_start.LowResStatistics), 0.3 MB a particle
ITERATIONS = 30


def fit_factor_model(stats: LowResStatistics, n_factors: int, seed: int = 0, iterations: int = ITERATIONS, check=None) -> tuple[torch.Tensor, float]:
    """``(basis (J, q + 1) = [V0, W], noise variance)`` of the low-resolution factor model.

    No ``A_p`` is ever unpacked: the E-step needs only the quadratic forms ``basisᵀ A_p basis`` and the
    M-step of column ``c`` only sums ``Σ_p s_pac A_p`` (one product over the packed triangles for all pairs,
    :meth:`LowResStatistics.quadratic` and :meth:`~LowResStatistics.A`). Applying every ``A_p`` to
    each updated column took 15–90 s per start (190–1 000 particles), nearly all of it unpacking.
    """
    b, yy, nv = stats.b.double(), stats.yy.double(), stats.n_values.double()
    n, j = b.shape
    q = n_factors
    a_sum = stats.A(torch.ones(n, 1, device=b.device))[0]
    ridge = float(RIDGE * a_sum.diagonal().mean())
    eye = torch.eye(j, dtype=torch.float64, device=b.device)
    v0 = _solve_spd((a_sum + ridge * eye)[None], b.sum(0)[None])[0]
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(j, q, generator=g, dtype=torch.float64).to(b.device) * (0.1 * float(v0.std()))
    basis = torch.cat([v0[:, None], w], 1)
    var = float(stats.residual_energy(v0[None])[:, 0].sum() / nv.sum())
    ridges = [ridge] * (q + 1)
    gram = stats.quadratic(basis)  # (P, q + 1, q + 1)
    # s_pac is symmetric in (a, c), so each pair's weighted sum is formed once an iteration: reading
    # the packed A_p once per column instead was 60 % of a four-factor fit (memory-bound).
    upper = torch.triu_indices(q + 1, q + 1)
    pair = torch.empty(q + 1, q + 1, dtype=torch.long)
    pair[upper[0], upper[1]] = pair[upper[1], upper[0]] = torch.arange(upper.shape[1])
    for _ in range(iterations):
        if check is not None:
            check()
        mean, cov = _latent_posterior(gram, b, basis, var)
        ez = torch.cat([torch.ones(n, 1, dtype=torch.float64, device=b.device), mean], 1)
        s = ez[:, :, None] * ez[:, None, :]
        s[:, 1:, 1:] += cov
        weighted = stats.A(s[:, upper[0], upper[1]])  # (pairs, J, J): Σ_p s_pac A_p for a ≤ c, one pass over A_p
        for c in range(q + 1):
            others = sum((weighted[pair[a, c]] @ basis[:, a] for a in range(q + 1) if a != c), torch.zeros(j, dtype=torch.float64, device=b.device))
            basis[:, c] = _solve_spd((weighted[pair[c, c]] + ridges[c] * eye)[None], ((b * ez[:, c : c + 1]).sum(0) - others)[None])[0]
        gram = stats.quadratic(basis)
        err = yy - 2 * (b @ basis * ez).sum(1) + (gram * s).sum((1, 2))
        var = float(err.sum() / nv.sum())
        for c in range(1, q + 1):
            ridges[c] = max(ridge, var * j / max(float((basis[:, c] ** 2).sum()), 1e-30))
    return basis.float(), var


def _latent_posterior(gram: torch.Tensor, b: torch.Tensor, basis: torch.Tensor, var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (P, q), covariance (P, q, q))`` of each particle's latent (the EM's E-step), from
    ``gram = basisᵀ A_p basis (P, q + 1, q + 1)``, ``b (P, J)`` and the ``basis (J, q + 1)`` (float64)."""
    q = basis.shape[1] - 1
    cov = torch.linalg.inv(torch.eye(q, dtype=torch.float64, device=b.device) + gram[:, 1:, 1:] / var)
    return torch.einsum("pqr,pr->pq", cov, (b @ basis[:, 1:] - gram[:, 1:, 0]) / var), cov


def posterior_means(stats: LowResStatistics, basis: torch.Tensor, var: float) -> torch.Tensor:
    """``(P, q)`` posterior means of the factor model's latents for the particles of ``stats``."""
    basis = basis.double()
    return _latent_posterior(stats.quadratic(basis), stats.b.double(), basis, var)[0]


def cluster_silhouette(points: np.ndarray, k_max: int = MAX_CLUSTERS, seed: int = 0) -> float:
    """Best silhouette of k-means on ``points (P, d)`` over k = 2..k_max (0 when too few points)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    points = points[:, points.var(0) > 1e-12]
    if points.shape[1] == 0 or len(points) < 2 * k_max:
        return 0.0
    best = 0.0
    for k in range(2, k_max + 1):
        labels = KMeans(k, n_init=4, random_state=seed).fit_predict(points)
        if len(np.unique(labels)) > 1:
            best = max(best, float(silhouette_score(points, labels)))
    return best


def fit_start(stats: LowResStatistics, zdim: int, seed: int = 0, check=None) -> tuple[torch.Tensor, float, bool]:
    """``(basis, noise variance, clustered)``: the factor model that starts a ``zdim`` latent.

    Two factors are fitted first (:data:`DECISION_ITERATIONS`); when their posterior means form clusters
    (:data:`CLUSTERED_SILHOUETTE`) all ``zdim`` factors start z (relevance determination decides
    how many carry a map), otherwise only the leading one.
    """
    if zdim >= 2 and stats.b.shape[0] >= 2 * MAX_CLUSTERS:  # fewer particles: no clusters to read
        basis, var = fit_factor_model(stats, 2, seed=seed, iterations=DECISION_ITERATIONS, check=check)
        clustered = cluster_silhouette(posterior_means(stats, basis, var).cpu().numpy(), seed=seed) >= CLUSTERED_SILHOUETTE
    else:
        clustered = False
    basis, var = fit_factor_model(stats, zdim if clustered else 1, seed=seed, check=check)
    return basis, var, clustered


def relevant_factors(basis: torch.Tensor, tolerance: float = 1e-6) -> int:
    """How many factor maps (columns 1.. of ``basis``) relevance determination kept."""
    norms = basis[:, 1:].norm(dim=0)
    return int((norms > tolerance * float(norms.max().clamp_min(1e-30))).sum())


@torch.no_grad()
def initialise_latent(model, ds, cfg, device, particles, log=None, check=None) -> None:
    """Fit the factor model on (at most ``MAX_PARTICLES`` of) ``particles`` and store it in the model.

    ``check()`` may raise to stop; the model is changed only after the last check.
    """
    from hetfield.data.batching import ParticleBatches

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed + 103)
    particles = np.asarray(particles)
    subset = np.sort(rng.choice(particles, size=min(len(particles), MAX_PARTICLES), replace=False))
    was_training = model.training
    model.eval()
    try:
        loader = ParticleBatches(ds, model.points, 16, shuffle=False, prefetch=False, particles=subset, dose_mask=cfg.dose_mask)
        stats = LowResStatistics(model, loader.epoch(0), ds.box, cfg.dose_weight, cfg.dose_mask, device, check=check, n_particles=len(subset))
        basis, var, clustered = fit_start(stats, model.zdim, seed=cfg.seed, check=check)
    finally:
        model.train(was_training)
    model.factor_basis.zero_()
    model.factor_basis[:, : basis.shape[1]] = basis.to(model.factor_basis.device)
    model.factor_noise_var.fill_(var)
    if log is not None:
        log(
            f"latent initialised by low-resolution factor analysis: {relevant_factors(basis)} factor(s) for the first of {model.zdim} "
            f"latent coordinates ({'clustered' if clustered else 'not clustered'}: "
            f"{'every factor relevance determination keeps' if clustered else 'the leading factor'} starts z; {len(subset)} particles, noise variance {var:.4f}, {time.perf_counter() - t0:.1f} s)"
        )
