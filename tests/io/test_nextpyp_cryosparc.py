"""NextPYP particle-stack STAR files and cryoSPARC .cs files."""

from __future__ import annotations

import io

import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.imaging.rotations import euler_to_matrix, matrix_to_euler, rotvec_to_matrix
from hetfield.io.readers import detect_source, export_particles, read_particles

from iohelpers import write_relion31, write_stack

# --- NextPYP ----------------------------------------------------------------------------------

OPTICS_HEADER = """
data_optics

loop_ 
_rlnOpticsGroupName #1 
_rlnOpticsGroup #2 
_rlnMicrographOriginalPixelSize #3 
_rlnVoltage #4 
_rlnSphericalAberration #5 
_rlnAmplitudeContrast #6 
_rlnImagePixelSize #7 
_rlnImageSize #8 
_rlnImageDimensionality #9 
"""  # noqa: W291 - NextPYP writes these trailing spaces

PARTICLES_HEADER = """
data_particles

loop_ 
_rlnImageName #1 
_rlnMicrographName #2 
_rlnCoordinateX #3 
_rlnCoordinateY #4 
_rlnAnglePsi #5
_rlnAngleTilt #6 
_rlnAngleRot #7 
_rlnOriginXAngst #8
_rlnOriginYAngst #9 
_rlnDefocusU #10 
_rlnDefocusV #11
_rlnDefocusAngle #12 
_rlnPhaseShift #13 
_rlnOpticsGroup #14 
_rlnGroupNumber #15 
_rlnCtfBfactor #16
_rlnCtfScalefactor #17
_rlnLogLikeliContribution #18 
_rlnRandomSubset #19 
_rlnTiltIndex #20
_rlnGroupName #21"""  # noqa: W291

TILT_ANGLES = [0.0, -3.0, 3.0]  # tilt index 0, 1, 2 (dose-symmetric order)
DOSE_RATE = 2.5


def write_nextpyp(tmp, series=("TS_a", "TS_b"), particles_per_series=2, box=8, tilt_index=True):
    """What pyp's Parameters.to_star writes (tilt-major rows, tab-separated), both series in one file."""
    rows = []
    for m, ts in enumerate(series):
        n = particles_per_series * len(TILT_ANGLES)
        write_stack(tmp / f"{ts}_stack.mrcs", n, box, seed=m)
        width = len(str(n))
        i = 0
        for t, angle in enumerate(TILT_ANGLES):  # tilt-major: a particle's rows are not contiguous
            for p in range(particles_per_series):
                i += 1
                row = [f"{i:0{width}d}@{ts}_stack.mrcs", f"{ts}.mrc", 100.0 * p, 50.0, 10.0 + p, 80.0 + t, 30.0 * m,
                       1.5, -2.5, 21000.0 + 10 * t, 20500.0, 45.0, 0.0, 1, f"{m}_{p}", -4 * t * DOSE_RATE,
                       np.cos(np.radians(angle)), -12.5, 1 + p % 2, t, p]
                rows.append("\t".join(str(v) for v in row))
    text = (OPTICS_HEADER + "opticsGroup1     1    1.5  300.0   2.7    0.10  6.00   8 2 \n" + PARTICLES_HEADER
            + "\n" + "\n".join(rows) + "\n")
    if not tilt_index:
        text = text.replace("_rlnTiltIndex #20\n", "_rlnTiltIndexRemoved #20\n")
    path = tmp / "nextpyp_particles.star"
    path.write_text(text)
    return path


def test_nextpyp_export_is_detected_and_grouped_by_group_number(tmp_path):
    path = write_nextpyp(tmp_path)
    assert detect_source(path) == "nextpyp"
    t = read_particles(path)
    df = t.images
    assert (t.n_particles, t.n_images) == (4, 12) and (t.tilts_per_particle() == 3).all()
    assert df["particle_name"].drop_duplicates().tolist() == ["0_0", "0_1", "1_0", "1_1"]
    first = df[df.particle == 0]
    assert first["frame"].tolist() == [0, 1, 2]  # _rlnTiltIndex
    assert first["image_index"].tolist() == [0, 2, 4]  # rows 1, 3, 5 of the tilt-major stack
    np.testing.assert_allclose(first["dose_e_per_A2"], [0, 2.5, 5.0])
    np.testing.assert_allclose(first["stage_tilt_deg"], [0, 3, 3], atol=1e-6)  # unsigned: only cos(tilt) is stored
    assert (df["pixel_size_A"] == 6.0).all() and (df["ctf_bfactor_A2"] == 0).all()
    assert first["origin_x_A"].iloc[0] == 1.5 and first["group"].iloc[0] == "TS_a.mrc"
    assert first["source_row"].tolist() == [0, 2, 4]
    # _rlnGroupName is NextPYP's particle index within its tilt series: grouping by it (image-series) merges
    # particles of different series, which is why NextPYP gets its own reader
    with pytest.warns(UserWarning, match=r"--source image-series: its _rlnGroupName '0' repeats a dose"):
        wrong = read_particles(path, source="image-series")
    assert wrong.n_particles == 2 and (wrong.tilts_per_particle() == 6).all()


def test_nextpyp_forced_without_tilt_index(tmp_path):
    path = write_nextpyp(tmp_path, tilt_index=False)
    # without its marker column the file is a near miss, not an image series grouped by the wrong column
    with pytest.raises(InputError, match=r"tilt-series images .*nextpyp: lacks _rlnTiltIndex; image-series: its "
                                         r"_rlnGroupName '0' repeats a dose.*--source nextpyp takes the frames"):
        detect_source(path)
    t = read_particles(path, source="nextpyp")
    assert t.n_particles == 4 and t.images[t.images.particle == 0]["frame"].tolist() == [0, 1, 2]


def test_relion_spa_with_group_number_is_not_nextpyp(tmp_path):
    path = write_relion31(tmp_path, extra_cols={"rlnGroupNumber": 1, "rlnCtfBfactor": 0.0, "rlnCtfScalefactor": 1.0,
                                                "rlnGroupName": "group_1"})
    assert detect_source(path) == "relion"
    t = read_particles(path)
    assert t.n_particles == 4 and (t.images["dose_e_per_A2"] == 0).all()


def test_nextpyp_export_round_trip(tmp_path):
    path = write_nextpyp(tmp_path)
    t = read_particles(path)
    rows = t.images.loc[t.images.particle.isin([1, 2]), "source_row"]
    out = export_particles(t.source, rows, tmp_path / "subset.star")
    sub = read_particles(out[0])
    assert sub.images["particle_name"].drop_duplicates().tolist() == ["0_1", "1_0"]
    assert "_rlnMicrographOriginalPixelSize" in out[0].read_text()


# --- cryoSPARC --------------------------------------------------------------------------------


def _cs(n, with_3d=True, psize=2.0, box=8, path=b"J1/extract/stack.mrc"):
    fields = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
              ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
              ("ctf/phase_shift_rad", "<f4"), ("ctf/exp_group_id", "<u4"), ("extra/unknown", "<f4")]
    if with_3d:
        fields += [("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,)), ("alignments3D/psize_A", "<f4")]
    else:
        fields += [("alignments2D/pose", "<f4"), ("alignments2D/shift", "<f4", (2,))]
    a = np.zeros(n, dtype=fields)
    a["uid"] = np.arange(n) + 1000
    a["blob/path"] = b">" + path
    a["blob/idx"] = np.arange(n)
    a["blob/shape"] = box
    a["blob/psize_A"] = psize
    a["blob/sign"] = -1
    a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = 300, 2.7, 0.1
    a["ctf/df1_A"], a["ctf/df2_A"], a["ctf/df_angle_rad"] = 12000, 11000, np.pi / 6
    a["ctf/phase_shift_rad"] = np.pi / 2
    a["ctf/exp_group_id"] = 2
    return a


def test_cryosparc_pose_and_shift_convention(tmp_path):
    rng = np.random.default_rng(3)
    n = 6
    euler = np.column_stack([rng.uniform(-180, 180, n), rng.uniform(5, 175, n), rng.uniform(-180, 180, n)])
    A = euler_to_matrix(*euler.T)
    # cryoSPARC stores v with Rodrigues(v) = A.T (pyem: A = expmap(v).T; cryoDRGN: R = expmap(v).T = R_from_relion)
    from scipy.spatial.transform import Rotation

    v = Rotation.from_matrix(A.transpose(0, 2, 1)).as_rotvec()
    np.testing.assert_allclose(rotvec_to_matrix(v), A.transpose(0, 2, 1), atol=1e-9)
    arr = _cs(n)
    arr["alignments3D/pose"] = v
    arr["alignments3D/shift"] = rng.normal(0, 3, (n, 2))
    arr["alignments3D/psize_A"] = 2.0
    write_stack(tmp_path / "J1/extract/stack.mrc", n, box=8)
    p = tmp_path / "P1_J5_particles.cs"
    with open(p, "wb") as fh:
        np.save(fh, arr)
    assert detect_source(p) == "cryosparc"
    t = read_particles(p)
    df = t.images
    got = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"])
    np.testing.assert_allclose(got, A, atol=1e-5)
    np.testing.assert_allclose(df[["origin_x_A", "origin_y_A"]], arr["alignments3D/shift"] * 2.0, rtol=1e-6)
    assert df["defocus_angle_deg"].iloc[0] == pytest.approx(30.0, abs=1e-4)
    assert df["phase_shift_deg"].iloc[0] == pytest.approx(90.0, abs=1e-4)
    assert (df["optics_group"] == 3).all() and df["image_index"].tolist() == list(range(n))
    assert df["image_path"].iloc[0] == str((tmp_path / "J1/extract/stack.mrc").resolve())
    assert t.source.extra["blob_sign"] == -1
    # export: the selected structured rows, no pickle
    out = export_particles(t.source, [4, 1], tmp_path / "sub.cs")
    sub = np.load(out[0], allow_pickle=False)
    assert sub.dtype == arr.dtype and sub["uid"].tolist() == [1001, 1004]
    assert read_particles(out[0]).n_particles == 2


def test_cryosparc_2d_only_and_bad_files(tmp_path):
    arr = _cs(3, with_3d=False)
    p = tmp_path / "J2_exported.cs"
    np.save(p.open("wb"), arr)
    t = read_particles(p, check_images=False)
    assert not t.has_poses and t.images["euler_tilt_deg"].isna().all() and t.images["origin_y_A"].isna().all()
    # a pickled object array is refused, not executed
    bad = tmp_path / "obj.cs"
    np.save(bad.open("wb"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.cs.*not a readable cryoSPARC"):
        read_particles(bad)
    # missing required fields are named
    few = np.zeros(2, dtype=[("blob/path", "S10"), ("blob/idx", "<u4")])
    np.save((tmp_path / "few.cs").open("wb"), few)
    with pytest.raises(InputError, match=r"few\.cs.*missing field\(s\) blob/psize_A, ctf/df1_A.*'cryosparc'"):
        read_particles(tmp_path / "few.cs")
    with pytest.raises(InputError, match="cryosparc"):
        read_particles(tmp_path / "few.cs", source="relion")


def test_cs_written_to_file_object_has_npy_magic():
    buf = io.BytesIO()
    np.save(buf, _cs(1), allow_pickle=False)
    assert buf.getvalue()[:6] == b"\x93NUMPY"
    np.testing.assert_allclose(matrix_to_euler(np.eye(3)), (0, 0, 0))
