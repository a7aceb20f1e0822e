"""Exact counts and conventions on every shared dataset (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.io.readers import detect_source, read_particles
from hetfield.table import IMAGE_COLUMNS

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("quiet_mrc_warnings")]


def _counts(table):
    tilts, n = np.unique(table.tilts_per_particle(), return_counts=True)
    return dict(zip(tilts.tolist(), n.tolist()))


def _check_schema(table):
    df = table.images
    assert list(df.columns[: len(IMAGE_COLUMNS)]) == list(IMAGE_COLUMNS)
    p = df["particle"].to_numpy()
    assert p[0] == 0 and (np.diff(p) >= 0).all() and (np.diff(p) <= 1).all()


def test_tomo_sim_50S(shared_data):
    star = shared_data / "tomo-sim-50S/10076_both_32_sim.star"
    assert detect_source(star) == "image-series"
    with pytest.raises(InputError, match="--datadir"):  # paths say data/..., which only a datadir resolves
        read_particles(star)
    t = read_particles(star, datadir=shared_data / "tomo-sim-50S")
    _check_schema(t)
    assert (t.n_particles, t.n_images) == (144, 1296)
    assert _counts(t) == {8: 72, 10: 72}
    df = t.images
    first = df[df.particle == 0]
    assert first["particle_name"].iloc[0] == "000_000000" and len(first) == 8
    np.testing.assert_allclose(first["dose_e_per_A2"], [2, 4, 6, 8, 10, 12, 14, 16])  # -(-8k)/4
    assert (df["ctf_bfactor_A2"] == 0).all()
    np.testing.assert_allclose(first["stage_tilt_deg"].iloc[:3], np.degrees(np.arccos([1.0, 0.9986295, 0.9986295])))
    assert first["frame"].tolist() == list(range(8))
    assert (df["pixel_size_A"] == 13.1).all() and (df["phase_shift_deg"] == 90).all()
    assert first["origin_x_A"].iloc[0] == pytest.approx(-2.672172 * 13.1)  # pixels -> Å
    assert df["source_row"].is_unique and df["source_row"].iloc[0] == 0
    e = df[df.particle_name.str.startswith("001_")]
    assert e.groupby("particle").size().eq(10).all()


def test_sta_ribosome(shared_data):
    t = read_particles(shared_data / "sta-ribosome/sta_testing_bin8.star")
    _check_schema(t)
    assert (t.n_particles, t.n_images) == (6, 219) and _counts(t) == {39: 5, 24: 1}
    df = t.images
    # _rlnDetectorPixelSize 1.96 × 10000 / _rlnMagnification 10000 (the STAR's own value; see the report)
    assert df["pixel_size_A"].iloc[0] == pytest.approx(1.96)
    assert df["dose_e_per_A2"].iloc[:2].tolist() == [3.25, 6.5]
    assert (df["phase_shift_deg"] == 0).all() and (df["origin_x_A"] == 0).all()


def test_spa_toy(shared_data):
    t = read_particles(shared_data / "spa-toy/toy_particles.star")
    _check_schema(t)
    assert (t.n_particles, t.n_images) == (1000, 1000) and t.has_poses
    df = t.images
    assert (df["stage_tilt_deg"] == 0).all() and (df["dose_e_per_A2"] == 0).all() and (df["frame"] == 0).all()
    assert df["image_index"].tolist() == list(range(1000))
    assert (df["pixel_size_A"] == 1.0).all() and (df["cs_mm"] == 0.001).all()


@pytest.mark.parametrize("name", ["relion31.star", "relion31.v2.star"])
def test_relion31_optics_first_or_last(shared_data, name):
    t = read_particles(shared_data / "star-samples" / name)  # its stack relion31.mrcs is shipped
    assert detect_source(shared_data / "star-samples" / name) == "relion"  # despite _rlnGroupNumber
    df = t.images
    assert t.n_particles == 5 and (df["pixel_size_A"] == 2.806).all() and (df["voltage_kV"] == 300).all()
    assert df["image_index"].tolist() == [0, 1, 2, 3, 4]
    assert (df["ctf_bfactor_A2"] == 0).all()


def test_relion31_six_optics_groups_metadata(shared_data):
    star = shared_data / "star-samples/relion31.6opticsgroups.star"
    with pytest.raises(InputError, match=r"0003_shiny\.mrcs.*not found.*--datadir"):
        read_particles(star)
    t = read_particles(star, check_images=False)
    df = t.images
    assert t.n_particles == 139
    assert df.groupby("optics_group").size().to_dict() == {1: 48, 2: 29, 3: 5, 4: 7, 5: 26, 6: 24}
    per_group = df.groupby("optics_group")[["pixel_size_A", "voltage_kV", "cs_mm"]].first()
    assert per_group["pixel_size_A"].to_dict() == {1: 1.25, 2: 1.24, 3: 1.25, 4: 1.25, 5: 1.24, 6: 1.25}
    assert per_group["cs_mm"].to_dict()[4] == 2.6 and (per_group["voltage_kV"] == 200).all()
    assert df["origin_x_A"].iloc[0] == pytest.approx(13.284554)


def test_relion5_metadata(shared_data):
    star = shared_data / "star-samples/relion5.star"
    with pytest.raises(InputError, match=r"toy_images_a\.mrcs.*not found"):
        read_particles(star)
    with pytest.warns(UserWarning, match="row 12 refers to the same image"):
        t = read_particles(star, check_images=False)
    df = t.images
    assert t.n_particles == 17 and (df["voltage_kV"] == 100).all() and (df["pixel_size_A"] == 0.89).all()
    assert df["image_index"].iloc[:3].tolist() == [0, 1, 2]


def test_cryosparc_samples_metadata(shared_data):
    cs = shared_data / "star-samples/cryosparc_P12_J24_001_particles.cs"
    assert detect_source(cs) == "cryosparc"
    with pytest.raises(InputError, match="not found"):
        read_particles(cs)
    t = read_particles(cs, check_images=False)
    df = t.images
    assert t.n_particles == 2019 and t.has_poses
    assert df["image_path"].iloc[0].endswith("J19/extract/20150917_05196_DNA-TET-25k-DE20_raw.region_000.sum-all_"
                                              "003-072_particles.mrc")
    assert (df["pixel_size_A"] == np.float32(2.95)).all() and (df["voltage_kV"] == 200).all()
    assert df["origin_x_A"].iloc[0] == pytest.approx(11.334375 * 2.95, rel=1e-6)
    t2 = read_particles(shared_data / "star-samples/cryosparc_J2_particles_exported.cs", check_images=False)
    assert t2.n_particles == 22 and not t2.has_poses
    assert t2.images["euler_rot_deg"].isna().all() and t2.images["origin_x_A"].isna().all()
    assert not t2.images["image_path"].str.contains(">").any()  # leading '>' stripped


def test_warptools_counts_and_own_frame_dose(shared_data):
    from hetfield.io.star.read import read_star

    d = shared_data / "warptools-70S"
    opt = d / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_optimisation_set.star"
    t = read_particles(opt)
    _check_schema(t)
    df = t.images
    assert t.n_particles == 40 and t.n_images == 1430
    assert _counts(t) == {34: 10, 35: 10, 37: 20}
    tomos = read_star(d / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star")
    own = np.array([tomos.blocks[g].df["rlnMicrographPreExposure"].to_numpy()[f] for g, f in zip(df.group, df.frame)])
    np.testing.assert_array_equal(df["dose_e_per_A2"].to_numpy(), own)  # every image: its own frame (defect 2)
    scale = np.array([tomos.blocks[g].df["rlnCtfScalefactor"].to_numpy()[f] for g, f in zip(df.group, df.frame)])
    np.testing.assert_array_equal(df["ctf_scale"].to_numpy(), scale)
    assert (df["image_index"] == df["frame"]).all()
    # visible frames only: Unt_083 hides frames 0, 5 and 35
    first = df[df.particle == 0]
    assert first["group"].iloc[0] == "Unt_083.tomostar" and {0, 5, 35}.isdisjoint(first["frame"])
    assert len(first) == 34 and (scale[df.particle.to_numpy() == 0] > 0).all()
    assert df["ctf_premultiplied"].all() and df["dose_weighted"].all()
    assert (df["pixel_size_A"] == 12.0).all() and t.source.extra["producer"] == "warptools"
    assert t.source.files["tomograms"].name.endswith("_tomograms.star")
    # the particles STAR alone finds its tomograms through the sibling optimisation set
    t2 = read_particles(d / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star")
    assert t2.n_images == 1430 and t2.source.files["optimisation_set"] == opt.resolve()
