"""Format detection records its evidence and refuses near misses (issue 9, item 1).

Every case of the issue is reproduced twice: on small synthetic STARs (always run) and on copies of
the shared files (``shared_data``). Before the Detection object, each near miss below was read
silently as something else: a tilt series with a misspelt column as 576 one-image SPA "particles",
a NextPYP export without ``_rlnTiltIndex`` as 12 merged particles instead of 72, and an SPA file
with micrograph group names as made-up tilt series.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.io.readers import detect, detect_source, read_particles
from hetfield.io.readers.detection import DetectionWarning
from hetfield.io.star.read import read_star
from hetfield.io.star.write import write_star

from iohelpers import star_loop, write_image_series, write_relion31, write_stack


def rename_column(path, old, new):
    text = path.read_text()
    assert f"_{old} " in text or f"_{old}\n" in text, old
    path.write_text(text.replace(f"_{old} ", f"_{new} ", 1).replace(f"_{old}\n", f"_{new}\n", 1))
    return path


def drop_column(path, column, out=None):
    star = read_star(path)
    blocks = {name: b.df.drop(columns=[column], errors="ignore") for name, b in star.blocks.items() if b.kind == "loop"}
    return write_star(out or path, blocks)


def set_column(path, column, values):
    star = read_star(path)
    blocks = {name: b.df for name, b in star.blocks.items() if b.kind == "loop"}
    name = next(n for n, b in star.blocks.items() if b.kind == "loop" and "rlnImageName" in b.columns)
    blocks[name] = blocks[name].assign(**{column: values})
    return write_star(path, blocks)


# --- synthetic: each near miss of an image series ----------------------------------------------


def test_image_series_detection_records_its_evidence(tmp_path):
    det = detect(write_image_series(tmp_path))
    assert det.reader == "image-series" and det.tilted and not det.forced
    text = " | ".join(det.tilt_evidence)
    assert "_rlnCtfBfactor <= 0" in text and "dose 3 to 12 e/Å²" in text
    assert "_rlnCtfScalefactor below 1" in text and "tilts up to 30°" in text
    assert "4 rows per _rlnGroupName (3 groups) with a different dose or tilt on each row" in text
    assert det.missing["image-series"] == () and "_rlnTiltIndex" in det.missing["nextpyp"]
    assert det.reason().startswith("image-series (detected): rows are tilt-series images: _rlnCtfBfactor")
    d = det.as_dict()
    assert d["reader"] == "image-series" and d["missing"]["relion"] == [] and d["reason"] == det.reason()


@pytest.mark.parametrize("column", ["rlnAngleTilt", "rlnGroupName", "rlnAngleRot", "rlnDefocusU"])
def test_misspelt_column_of_a_tilt_series_is_an_error_naming_it(tmp_path, column):
    path = rename_column(write_image_series(tmp_path), column, column + "Typo")
    with pytest.raises(InputError) as e:
        read_particles(path)
    msg = str(e.value)
    assert "look like tilt-series images" in msg
    assert f"image-series: lacks _{column}" in msg and f"fix or add _{column} for the image-series reader" in msg
    assert "--source" in msg and "\n" not in msg


def test_tilt_series_without_bfactor_is_an_error(tmp_path):
    path = drop_column(write_image_series(tmp_path), "rlnCtfBfactor")
    with pytest.raises(InputError, match=r"tilt-series images \(_rlnCtfScalefactor below 1.*4 rows per _rlnGroupName"
                                         r".*image-series: lacks _rlnCtfBfactor"):
        detect_source(path)


def test_forcing_relion_on_a_tilt_series_is_allowed_with_a_warning(tmp_path):
    path = rename_column(write_image_series(tmp_path), "rlnAngleTilt", "rlnAngleTlt")
    with pytest.warns(DetectionWarning, match="--source relion reads every row as its own single-particle image"):
        t = read_particles(path, source="relion")
    assert t.n_particles == 12 and not t.has_poses and t.detection.forced and t.detection.tilted


def test_spa_with_micrograph_groups_zero_bfactors_and_scales_below_one_is_spa(tmp_path):
    """The issue's last case: it became tilt series with made-up tilts; it is SPA, with a warning."""
    n = 12
    path = write_relion31(tmp_path, n=n, extra_cols={"rlnCtfBfactor": 0.0})
    set_column(path, "rlnGroupName", [f"mic{i // 4}" for i in range(n)])
    set_column(path, "rlnCtfScalefactor", [0.9 if i % 3 == 0 else 1.0 for i in range(n)])
    with pytest.warns(DetectionWarning, match=r"read as single-particle \(SPA\) images although several rows share a "
                                              r"_rlnGroupName.*_rlnCtfBfactor is 0 on every row"):
        t = read_particles(path)
    assert t.source.reader == "relion" and t.n_particles == n
    assert (t.images["stage_tilt_deg"] == 0).all() and (t.images["dose_e_per_A2"] == 0).all()
    assert not t.detection.tilted and "_rlnCtfBfactor is 0 on every row" in t.detection.against_tilt[0]


def test_spa_after_per_micrograph_ctf_refinement_is_spa(tmp_path):
    """RELION's per-micrograph B-factors are <= 0 and scales <= 1, like dose and cos(tilt): the values
    are constant within each micrograph group, or repeat within a merged group, so these are not tilt series."""
    n = 12
    mic = np.arange(n) // 3
    path = write_relion31(tmp_path, n=n)
    set_column(path, "rlnCtfBfactor", -10.0 * mic)
    set_column(path, "rlnCtfScalefactor", 1.0 - 0.05 * mic)
    set_column(path, "rlnGroupName", [f"mic{m}" for m in mic])
    det = detect(path)
    assert det.reader == "relion" and not det.tilted
    assert "constant within each" in det.against_tilt[0] and not det.warnings
    set_column(path, "rlnGroupName", ["group_1"] * n)  # one group of several micrographs
    det = detect(path)
    assert det.reader == "relion" and not det.tilted
    assert "no column groups the rows into tilt series" in " ".join(det.against_tilt)


def test_plain_spa_has_no_tilt_evidence_and_no_warning(tmp_path):
    det = detect(write_relion31(tmp_path, extra_cols={"rlnGroupName": "g1", "rlnCtfBfactor": 0, "rlnCtfScalefactor": 1}))
    assert det.reader == "relion" and not det.tilted and not det.warnings and not det.tilt_evidence


def test_positive_bfactor_series_is_not_dose(tmp_path):
    path = write_image_series(tmp_path)
    set_column(path, "rlnCtfBfactor", np.linspace(10, 50, 12))
    det = detect(path)
    assert det.reader == "relion" and "positive on 12 rows" in det.against_tilt[0]
    assert det.warnings and "--source image-series" in det.warnings[0]


def test_inspect_says_why_and_setup_refuses_a_near_miss(tmp_path):
    from helpers import assert_usage_error, run_cli

    path = write_image_series(tmp_path)
    out = run_cli("inspect", path)
    assert out.returncode == 0, out.stderr
    assert "image-series (detected): rows are tilt-series images" in " ".join(out.stdout.split())
    js = run_cli("inspect", path, "--json")
    import json

    d = json.loads(js.stdout)["detection"]
    assert d["reader"] == "image-series" and d["tilted"] is True and d["missing"]["image-series"] == []
    rename_column(path, "rlnAngleTilt", "rlnAngleTlt")
    proc = run_cli("setup", tmp_path / "ds", "--particles", path)
    assert_usage_error(proc, "series.star", "image-series: lacks _rlnAngleTilt", "--source")
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds*"))


# --- the same cases on the shared data ----------------------------------------------------------


@pytest.fixture
def tomo_copy(shared_data, tmp_path):
    src = shared_data / "tomo-sim-50S" / "10076_classD_32_sim.star"
    dst = tmp_path / "classD.star"
    shutil.copy(src, dst)
    return dst, shared_data / "tomo-sim-50S"


@pytest.mark.parametrize("column", ["rlnAngleTilt", "rlnGroupName"])
def test_shared_tomo_sim_misspelt_column(tomo_copy, column):
    path, datadir = tomo_copy
    assert read_particles(path, datadir=datadir, check_images=False).n_particles == 72
    rename_column(path, column, column + "X")
    with pytest.raises(InputError, match=rf"tilt-series images .*image-series: lacks _{column}\b.*--source"):
        read_particles(path, datadir=datadir)


def test_shared_tomo_sim_without_bfactor(tomo_copy, tmp_path):
    path, datadir = tomo_copy
    drop_column(path, "rlnCtfBfactor")
    with pytest.raises(InputError, match=r"image-series: lacks _rlnCtfBfactor"):
        read_particles(path, datadir=datadir)


def test_shared_spa_with_micrograph_group_names(shared_data, tmp_path):
    path = tmp_path / "relion5.star"
    shutil.copy(shared_data / "star-samples" / "relion5.star", path)
    df = read_star(path).blocks["particles"].df
    assert (df["rlnCtfBfactor"] == 0).all()
    set_column(path, "rlnGroupName", df["rlnMicrographName"].to_numpy())
    set_column(path, "rlnCtfScalefactor", np.where(np.arange(len(df)) % 3 == 0, 0.9, 1.0))
    with pytest.warns(DetectionWarning, match="read as single-particle"):
        t = read_particles(path, check_images=False)
    assert t.source.reader == "relion" and t.n_particles == len(df) and (t.images["stage_tilt_deg"] == 0).all()


def test_shared_files_detect_with_their_evidence(shared_data):
    d = detect(shared_data / "tomo-sim-50S" / "10076_both_32_sim.star")
    assert d.reader == "image-series" and "8–10 rows per _rlnGroupName (144 groups)" in " ".join(d.tilt_evidence)
    d = detect(shared_data / "sta-ribosome" / "sta_testing_bin8.star")
    assert d.reader == "image-series" and d.tilted
    for name in ("relion31.star", "relion31.v2.star", "relion31.6opticsgroups.star", "relion5.star"):
        d = detect(shared_data / "star-samples" / name)
        assert d.reader == "relion" and not d.tilted and not d.warnings, (name, d)
    d = detect(shared_data / "warptools-70S" / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_optimisation_set.star")
    assert d.reader == "optimisation-set"
    d = detect(shared_data / "warptools-70S" / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star")
    assert d.reader == "optimisation-set" and "_rlnTomoName" in d.tilt_evidence[0]


def test_nextpyp_sample_without_tilt_index_is_a_near_miss(tmp_path):
    from test_nextpyp_cryosparc import write_nextpyp

    path = write_nextpyp(tmp_path, tilt_index=False)
    with pytest.raises(InputError) as e:
        read_particles(path)
    msg = str(e.value)
    assert "nextpyp: lacks _rlnTiltIndex" in msg and "repeats a dose" in msg and "--source nextpyp" in msg
    t = read_particles(write_nextpyp(tmp_path / "ok"))
    assert t.n_particles == 4 and t.detection.reader == "nextpyp" and "_rlnTiltIndex present" in t.detection.tilt_evidence[0]


def test_cryosparc_detection(tmp_path):
    from test_nextpyp_cryosparc import _cs

    p = tmp_path / "x.cs"
    with open(p, "wb") as fh:
        np.save(fh, _cs(2))
    assert detect(p).reader == "cryosparc"
    write_stack(tmp_path / "J1/extract/stack.mrc", 2, box=8)
    assert read_particles(p).detection.evidence == ("a numpy structured array (cryoSPARC .cs)",)


def test_unknown_loop_still_lists_what_each_reader_lacks(tmp_path):
    p = tmp_path / "odd.star"
    p.write_text(star_loop("particles", ["rlnImageName", "rlnAngleRot"], [["1@a.mrcs", 3.0]]))
    with pytest.raises(InputError, match="relion lacks _rlnDefocusU.*--source"):
        detect(p)


def test_a_constant_second_group_column_does_not_veto_a_tilt_series(tmp_path):
    """_rlnGroupNumber per tilt image (constant dose within) beside _rlnGroupName per particle."""
    path = write_image_series(tmp_path, n_particles=3, n_tilts=4)
    set_column(path, "rlnGroupNumber", np.tile(np.arange(4), 3) + 1)
    det = detect(path)
    assert det.reader == "image-series" and det.tilted and not det.against_tilt, det
