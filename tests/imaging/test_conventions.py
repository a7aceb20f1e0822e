"""The projection, rotation and shift conventions, verified on the reference data."""

from __future__ import annotations

import numpy as np

from hetfield.imaging.projection import project, translate_images
from hetfield.imaging.rotations import euler_to_matrix


def _cc(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_spa_toy_projections_reproduce_the_stack(shared_data):
    from hetfield.io.mrc import open_stack, read_volume
    from hetfield.io.readers import read_particles

    table = read_particles(shared_data / "spa-toy" / "toy_particles.star")
    df = table.images.iloc[:60]
    vol, _ = read_volume(shared_data / "spa-toy" / "toymodel_small_nocenter.mrc")
    images = open_stack(df["image_path"].iloc[0]).read(df["image_index"].to_numpy())
    a = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"])
    proj = project(vol, a).numpy()
    cc = [_cc(p, i) for p, i in zip(proj, images)]
    assert min(cc) > 0.99
    transposed = project(vol, a.transpose(0, 2, 1)).numpy()
    assert np.mean([_cc(p, i) for p, i in zip(transposed, images)]) < 0.8


def test_tomo_sim_clean_images_are_projections_shifted_by_minus_origin(shared_data):
    from hetfield.io.mrc import open_stack, read_volume
    from hetfield.io.readers import read_particles

    d = shared_data / "tomo-sim-50S"
    # Poses and shifts as our reader gives them for the noisy set; the clean stack holds the same
    # images, index for index, without CTF and noise.
    table = read_particles(d / "10076_classD_32_sim.star", datadir=d)
    df = table.images.iloc[:80]
    vol, _ = read_volume(d / "10076_classD_32.mrc")
    images = open_stack(d / "10076_classD_32_clean.mrcs").read(df["image_index"].to_numpy())
    a = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"])
    origin_px = df[["origin_x_A", "origin_y_A"]].to_numpy() / df["pixel_size_A"].to_numpy()[:, None]
    proj = project(vol, a)
    good = translate_images(proj, -origin_px).numpy()
    bad = translate_images(proj, +origin_px).numpy()
    assert min(_cc(p, i) for p, i in zip(good, images)) > 0.95
    assert np.mean([_cc(p, i) for p, i in zip(bad, images)]) < 0.5
