"""The rule that decides how many factors start the latent (train/latent_start.py): clusters or a curve."""

from __future__ import annotations

import numpy as np

from hetfield.train.latent_start import CLUSTERED_SILHOUETTE, cluster_silhouette


def test_blobs_on_a_triangle_are_clustered_and_a_swing_is_not():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    blobs = centres[rng.integers(0, 3, 300)] + 0.35 * rng.standard_normal((300, 2))
    t = rng.uniform(0, 1, 300)  # a swinging domain's two linear factors: t and |t - 1/2|, with noise
    swing = np.stack([4 * (t - 0.5), 4 * np.abs(t - 0.5) - 1], 1) + 0.2 * rng.standard_normal((300, 2))
    assert cluster_silhouette(blobs) >= CLUSTERED_SILHOUETTE
    assert cluster_silhouette(swing) < CLUSTERED_SILHOUETTE


def test_too_few_or_constant_points_are_not_clustered():
    assert cluster_silhouette(np.zeros((50, 2))) == 0.0
    assert cluster_silhouette(np.random.default_rng(1).standard_normal((5, 2))) == 0.0
