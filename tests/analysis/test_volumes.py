"""``hetfield volumes`` and batched decoding: MRC headers, modes, box, low-pass, hand, contrast."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_batched_decoding_equals_the_model_and_keeps_the_central_line(run_latent, tiny_runs):
    from hetfield.model.decode import decode_volumes
    from hetfield.train.load import load_trained

    model, _, _ = load_trained(run_latent)
    z = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    vols = decode_volumes(model, z, 0, batch_size=2)
    for i in (0, 4):
        ref = decode_volumes(model, z[i : i + 1], 0, batch_size=1)[0]
        assert np.allclose(vols[i], ref, atol=1e-6 * np.abs(ref).max())
    # Hydra zeroed the whole central Fourier line, which leaves every z-plane with zero mean; we do not.
    plane_means = vols[0].mean(axis=(1, 2))
    assert np.abs(plane_means).max() > 1e-3 * np.abs(vols[0]).max()
    mixture, _, _ = load_trained(tiny_runs["zdim0_k2"])
    both = decode_volumes(mixture, None, [0, 1])
    assert both.shape == (2, 16, 16, 16)
    assert np.allclose(both[1], decode_volumes(mixture, None, 1)[0], atol=1e-6)
    # a larger box is a Fourier pad: same density scale, finer voxels
    big = decode_volumes(mixture, None, [1], box=32)[0]
    assert big.shape == (32,) * 3 and big.sum() / 8 == pytest.approx(both[1].sum(), rel=1e-3)


def test_volumes_modes(run_latent, tmp_path, mrc_checker):
    from hetfield.analysis.export_volumes import run_volumes
    from hetfield.analysis.volumes import flip_hand, lowpass

    zfile = tmp_path / "z.txt"
    zfile.write_text("0 0\n0.5 -0.5\n# a comment\n1 1\n")
    out, doc = run_volumes(run_latent, tmp_path / "z", z_file=zfile)
    assert doc["mode"] == "z" and len(doc["volumes"]) == 3
    apix = doc["voxel_size_A"]
    plain = mrc_checker(out / "vol_001.mrc", apix, 16)
    assert np.loadtxt(out / "z_values.txt").shape == (3, 2)
    # the same point, flipped, inverted, low-passed, in a larger box
    np.save(tmp_path / "z.npy", np.array([[0.5, -0.5]]))
    out2, doc2 = run_volumes(run_latent, tmp_path / "z2", z_file=tmp_path / "z.npy", flip=True, invert=True, lowpass_A=4 * apix)
    v2 = mrc_checker(out2 / "vol_000.mrc", apix, 16)
    assert np.allclose(v2, -flip_hand(lowpass(plain, apix, 4 * apix)), atol=1e-5 * np.abs(plain).max())
    out3, doc3 = run_volumes(run_latent, tmp_path / "z3", z_file=tmp_path / "z.npy", box=24)
    mrc_checker(out3 / "vol_000.mrc", apix * 16 / 24, 24)
    assert doc3["voxel_size_A"] == pytest.approx(apix * 16 / 24)
    # along PC1, for a class, for particles
    out4, doc4 = run_volumes(run_latent, tmp_path / "pc", pc=1, n=3)
    assert doc4["mode"] == "pc" and len(doc4["volumes"]) == 3
    assert json.loads((out4 / "volumes.json").read_text())["info"]["pc"] == 1
    out5, doc5 = run_volumes(run_latent, tmp_path / "cls", class_idx=0)
    assert doc5["mode"] == "class" and doc5["info"]["particle"] is not None
    (tmp_path / "p.txt").write_text("3\n7\n")
    out6, doc6 = run_volumes(run_latent, tmp_path / "parts", particle_index=tmp_path / "p.txt")
    assert [v["label"] for v in doc6["volumes"]] == ["particle 3", "particle 7"]
    out7, doc7 = run_volumes(run_latent, tmp_path / "pcsel", pc=2, n=2, particle_index=tmp_path / "p.txt")
    assert doc7["info"]["n_particles_pca"] == 2
