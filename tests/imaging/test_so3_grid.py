"""The SO(3) grid: HEALPix centres, uniformity, the nested hierarchy the pose search walks, shifts."""

from __future__ import annotations

import numpy as np
import pytest

from hetfield.imaging.rotations import random_rotations
from hetfield.imaging.so3_grid import (
    SO3Grid,
    angular_distance_deg,
    healpix_nested_angles,
    healpix_vectors,
    local_rotation_offsets,
    local_shift_offsets,
    shift_grid,
)


def test_nside1_centres_are_the_healpix_base_pixels():
    theta, phi = healpix_nested_angles(1)
    z = np.cos(theta)
    assert np.allclose(z[:4], 2 / 3) and np.allclose(z[4:8], 0) and np.allclose(z[8:], -2 / 3)
    assert np.allclose(np.degrees(phi[:4]), [45, 135, 225, 315])
    assert np.allclose(np.degrees(phi[4:8]), [0, 90, 180, 270])


@pytest.mark.parametrize("nside", [1, 2, 4])
def test_directions_are_distinct_and_equal_area(nside):
    v = healpix_vectors(nside)
    assert v.shape == (12 * nside * nside, 3)
    assert len(np.unique(np.round(v, 6), axis=0)) == len(v)
    assert np.allclose(np.linalg.norm(v, axis=1), 1)
    # Uniform points fall into the nearest centres' cells about equally often (equal areas).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    counts = np.bincount((x @ v.T).argmax(1), minlength=len(v))
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean()
    assert np.abs(v.mean(0)).max() < 1e-9  # balanced over the sphere


def test_rotation_grid_sizes_and_covering_radius():
    grid = SO3Grid(2)
    assert grid.size(0) == 48 * 12 and grid.size(1) == 192 * 24
    assert abs(grid.spacing_deg(0) - 29.3) < 0.1 and abs(grid.spacing_deg(2) - 29.3 / 4) < 0.05
    m = grid.matrices(1)
    assert np.allclose(np.einsum("nij,nkj->nik", m, m), np.eye(3), atol=1e-9)
    assert len(np.unique(np.round(m.reshape(len(m), 9), 6), axis=0)) == len(m)
    # Every rotation is within about one grid spacing of a grid point (no holes).
    r = random_rotations(300, np.random.default_rng(1))
    tr = np.einsum("rij,gij->rg", r, m)
    nearest = np.degrees(np.arccos(np.clip((tr.max(1) - 1) / 2, -1, 1)))
    assert nearest.max() < 1.1 * grid.spacing_deg(1)
    assert np.median(nearest) < 0.6 * grid.spacing_deg(1)


def test_children_tile_their_parent_cell():
    grid = SO3Grid(2)
    parents = np.arange(grid.size(0))
    children = grid.children(0, parents)
    assert children.shape == (grid.size(0), 8)
    # A partition: every level-1 rotation is the child of exactly one level-0 rotation ...
    assert np.array_equal(np.sort(children.ravel()), np.arange(grid.size(1)))
    assert np.array_equal(grid.parent(1, children), np.repeat(parents[:, None], 8, 1))
    # ... and lies near its parent: within the parent's cell, closer to it than to almost any other.
    pm, cm = grid.matrices(0), grid.matrices(1, children)
    d_own = angular_distance_deg(cm, pm[:, None])
    assert d_own.max() < 1.3 * grid.spacing_deg(0)
    tr = np.einsum("cij,pij->cp", cm.reshape(-1, 3, 3), pm)
    nearest_parent = tr.argmax(1)
    assert np.mean(nearest_parent == np.repeat(parents, 8)) > 0.8


def test_local_offsets_and_shift_grids():
    offs = local_rotation_offsets(2.0)
    assert offs.shape == (27, 3, 3) and np.allclose(offs[13], np.eye(3))
    d = angular_distance_deg(offs, np.eye(3))
    assert np.isclose(d.max(), 2.0 * np.sqrt(3)) and np.isclose(np.sort(d)[1], 2.0)
    s = shift_grid(3.0, 7)
    assert s.shape == (49, 2) and np.allclose(s.min(0), -3) and np.allclose(s.max(0), 3)
    assert np.allclose(np.unique(s[:, 0]), np.arange(-3, 4))
    o = local_shift_offsets(0.5)
    assert o.shape == (9, 2) and np.allclose(o[4], 0) and np.allclose(np.abs(o).max(), 0.5)


def test_bad_nside_is_refused():
    with pytest.raises(ValueError, match="power of 2"):
        SO3Grid(3)
