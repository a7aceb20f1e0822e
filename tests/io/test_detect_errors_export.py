"""Detection by columns, --source forcing, one-line errors for bad inputs, exports in the user's format."""

from __future__ import annotations

import numpy as np
import pytest

from hetfield.errors import ConfigError, InputError
from hetfield.io.readers import SOURCES, detect_source, export_particles, read_particles
from hetfield.io.star.read import read_star

from iohelpers import star_loop, write_image_series, write_optimisation_set, write_relion31, write_stack


def _add_columns(path, names):
    """Append extra columns (with a value on every row) to every loop of a STAR file."""
    star = read_star(path)
    text = path.read_text()
    for b in star.loops():
        last = b.columns[-1]
        k = len(b.columns)
        header = "".join(f"_{n} #{k + i + 1}\n" for i, n in enumerate(names))
        text = text.replace(f"_{last} #{k}\n", f"_{last} #{k}\n" + header, 1)
    lines = []
    for ln in text.splitlines():
        s = ln.strip()
        is_row = s and not s.startswith(("_", "data_", "loop_", "#"))
        lines.append(ln + "".join(f" x{i}" for i in range(len(names))) if is_row else ln)
    path.write_text("\n".join(lines) + "\n")


def test_sources_listed():
    assert SOURCES == ("image-series", "nextpyp", "optimisation-set", "relion", "cryosparc")


def test_extra_columns_never_break_detection(tmp_path):
    extra = ["rlnSomethingNew", "myToolScore", "rlnClassNumberExtra"]
    cases = {
        "relion": write_relion31(tmp_path / "r"),
        "image-series": write_image_series(tmp_path / "i"),
    }
    s = write_optimisation_set(tmp_path / "o")
    cases["optimisation-set"] = s["particles"]
    for source, path in cases.items():
        assert detect_source(path) == source
        _add_columns(path, extra)
        assert detect_source(path) == source, source
        t = read_particles(path)
        assert t.n_images > 0 and "rlnSomethingNew" not in t.images.columns


def test_optics_before_or_after_and_forcing(tmp_path):
    a = read_particles(write_relion31(tmp_path / "a", optics_last=False)).images
    b = read_particles(write_relion31(tmp_path / "b", optics_last=True)).images
    cols = ["pixel_size_A", "voltage_kV", "euler_tilt_deg", "origin_y_A", "defocus_v_A"]
    np.testing.assert_array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    series = write_image_series(tmp_path / "s")
    assert read_particles(series).n_particles == 3
    forced = read_particles(series, source="relion")  # every tilt image as its own SPA particle
    assert forced.n_particles == 12 and forced.source.reader == "relion"
    assert (forced.images["ctf_bfactor_A2"] < 0).any()  # relion reads the column as a B-factor, as asked
    with pytest.raises(ConfigError, match="'spa'.*auto, image-series, nextpyp, optimisation-set, relion, cryosparc"):
        read_particles(series, source="spa")
    with pytest.raises(ConfigError, match="optimisation sets only"):
        read_particles(series, tomograms="x.star")


def test_unknown_format_lists_missing_columns_per_reader(tmp_path):
    p = tmp_path / "odd.star"
    p.write_text(star_loop("particles", ["rlnImageName", "rlnAngleRot"], [["1@a.mrcs", 3.0]]))
    with pytest.raises(InputError) as e:
        detect_source(p)
    msg = str(e.value)
    assert "odd.star" in msg and "--source" in msg
    assert "relion lacks _rlnDefocusU" in msg and "image-series lacks _rlnGroupName" in msg
    assert "nextpyp lacks" in msg and "_rlnTiltIndex" in msg and "optimisation-set lacks _rlnTomoName" in msg


def test_forced_reader_names_missing_columns(tmp_path):
    p = write_relion31(tmp_path)
    with pytest.raises(InputError, match=r"particles\.star: missing column\(s\) _rlnGroupName, _rlnCtfBfactor, "
                                         r"_rlnCtfScalefactor, needed by the 'image-series' reader"):
        read_particles(p, source="image-series")
    p.write_text(p.read_text().replace("_rlnDefocusU #3", "_rlnNotDefocus #3"))
    with pytest.raises(InputError, match=r"missing column\(s\) _rlnDefocusU, needed by the 'relion' reader"):
        read_particles(p, source="relion")


def test_empty_no_rows_and_unreadable(tmp_path):
    empty = tmp_path / "empty.star"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.star: no data_ blocks"):
        read_particles(empty)
    header_only = tmp_path / "norows.star"
    header_only.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n\n")
    with pytest.raises(InputError, match=r"norows\.star: the STAR file has no data rows"):
        read_particles(header_only)
    with pytest.raises(InputError, match=r"norows\.star: the particle table \(data_particles\) has no data rows"):
        read_particles(header_only, source="relion")
    binary = tmp_path / "img.star"
    binary.write_bytes(b"\x00\x01\x02MRC" * 50)
    with pytest.raises(InputError, match=r"img\.star: not a STAR text file"):
        read_particles(binary)
    with pytest.raises(InputError, match="no such file"):
        read_particles(tmp_path / "missing.star")
    with pytest.raises(InputError, match="--datadir .*no such directory"):
        read_particles(empty, datadir=tmp_path / "nope")


def test_non_numeric_value_names_row_and_column(tmp_path):
    p = write_relion31(tmp_path)
    p.write_text(p.read_text().replace("10002 9002", "oops 9002"))
    with pytest.raises(InputError, match=r"row 3: column _rlnDefocusU holds 'oops', not a number"):
        read_particles(p)


def test_image_checks(tmp_path):
    p = write_relion31(tmp_path / "a", n=4)
    write_stack(tmp_path / "a" / "parts.mrcs", 3, box=8)  # shorter than the STAR says
    with pytest.raises(InputError, match=r"row 4 refers to image 4 of .*parts\.mrcs, which holds only 3 image"):
        read_particles(p)

    p = write_relion31(tmp_path / "b", n=3)
    p.write_text(p.read_text().replace("2@parts.mrcs", "1@parts.mrcs"))
    with pytest.raises(InputError, match=r"row 2 refers to image 1@.*parts\.mrcs, already used by an earlier row"):
        read_particles(p)

    p = write_relion31(tmp_path / "c", n=2, box=9)
    with pytest.raises(InputError, match="box size is 9 px.*even"):
        read_particles(p)

    p = write_relion31(tmp_path / "d", n=2)
    write_stack(tmp_path / "d" / "other.mrcs", 2, box=10)
    p.write_text(p.read_text().replace("2@parts.mrcs", "2@other.mrcs"))
    with pytest.raises(InputError, match=r"different box sizes: .*parts\.mrcs is 8 px, .*other\.mrcs is 10 px"):
        read_particles(p)

    p = write_relion31(tmp_path / "e", n=2)
    write_stack(tmp_path / "e" / "parts.mrcs", 2, box=8, ny=6)
    with pytest.raises(InputError, match=r"parts\.mrcs: images are 6×8"):
        read_particles(p)


def test_stacks_found_through_datadir(tmp_path):
    p = write_relion31(tmp_path / "star", n=2, stack="Extract/job1/parts.mrcs")
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "star" / "Extract/job1/parts.mrcs").rename(moved / "parts.mrcs")
    with pytest.raises(InputError, match=r"'Extract/job1/parts\.mrcs' not found; tried .*pass --datadir"):
        read_particles(p)
    t = read_particles(p, datadir=moved)
    assert t.images["image_path"].iloc[0] == str((moved / "parts.mrcs").resolve())
    assert t.source.datadir == moved


# --- exports ----------------------------------------------------------------------------------


def test_export_relion_keeps_blocks_and_columns(tmp_path):
    src = write_relion31(tmp_path, n=4, optics_last=True)
    t = read_particles(src)
    out = export_particles(t.source, [3, 1], tmp_path / "out" / "subset.star")
    assert out == [tmp_path / "out" / "subset.star"]
    a, b = read_star(src), read_star(out[0])
    assert list(a.blocks) == list(b.blocks) == ["particles", "optics"]
    assert a.blocks["particles"].columns == b.blocks["particles"].columns
    assert b.blocks["particles"].df["rlnImageName"].tolist() == ["2@parts.mrcs", "4@parts.mrcs"]
    assert b.blocks["optics"].df.equals(a.blocks["optics"].df)
    sub = read_particles(out[0], datadir=tmp_path)
    assert sub.n_particles == 2 and sub.images["image_index"].tolist() == [1, 3]
    with pytest.raises(InputError, match="cannot export row 9"):
        export_particles(t.source, [8], tmp_path / "x.star")


def test_export_image_series(tmp_path):
    src = write_image_series(tmp_path, n_particles=3, n_tilts=4)
    t = read_particles(src)
    rows = t.images.loc[t.images.particle == 1, "source_row"]
    out = export_particles(t.source, rows, tmp_path / "one.star")
    sub = read_particles(out[0])
    assert sub.n_particles == 1 and sub.images["particle_name"].iloc[0] == "p001" and sub.n_images == 4


def test_export_optimisation_set(tmp_path):
    s = write_optimisation_set(tmp_path / "src", n_particles=3, n_frames=4)
    t = read_particles(s["optimisation_set"])
    out = export_particles(t.source, [2, 0], tmp_path / "exp" / "subset.star")
    parts, opt = out
    assert parts.name == "subset.star" and opt.name == "subset_optimisation_set.star"
    opt_star = read_star(opt).blocks[""].pairs
    assert opt_star["rlnTomoTomogramsFile"] == str(s["tomograms"].resolve())  # the original, by absolute path
    assert opt_star["rlnTomoParticlesFile"] == str(parts.resolve())
    assert list(read_star(parts).blocks) == ["general", "optics", "particles"]
    sub = read_particles(opt, datadir=tmp_path / "src")  # stack paths are relative to the original STAR
    assert sub.n_particles == 2 and sub.images["particle_name"].drop_duplicates().tolist() == ["TS_01/1", "TS_01/3"]
    out2 = export_particles(t.source, [1], tmp_path / "exp" / "b_optimisation_set.star")
    assert [p.name for p in out2] == ["b_particles.star", "b_optimisation_set.star"]


def test_export_needs_a_reader_name():
    from hetfield.table import SourceInfo

    with pytest.raises(ConfigError):
        export_particles(SourceInfo(reader="auto", files={}), [0], "x.star")
    with pytest.raises(ConfigError, match="'nope'"):
        export_particles(SourceInfo(reader="nope", files={}), [0], "x.star")


def test_relion30_pixel_size_and_pixel_origins(tmp_path):
    write_stack(tmp_path / "p.mrcs", 2, box=8)
    cols = ["rlnImageName", "rlnDetectorPixelSize", "rlnMagnification", "rlnVoltage", "rlnSphericalAberration",
            "rlnAmplitudeContrast", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnAngleRot", "rlnAngleTilt",
            "rlnAnglePsi", "rlnOriginX", "rlnOriginY", "rlnCtfBfactor", "rlnMicrographName"]
    rows = [[f"{i + 1}@p.mrcs", 14.0, 50000, 200, 2.0, 0.07, 9000, 8000, 5, 1, 2, 3, 2.0, -1.0, 25.0, "mic1.mrc"]
            for i in range(2)]
    p = tmp_path / "r30.star"
    p.write_text(star_loop("", cols, rows))
    assert detect_source(p) == "relion"
    df = read_particles(p).images
    assert df["pixel_size_A"].iloc[0] == pytest.approx(2.8)  # 14 µm × 10000 / 50000
    assert df["origin_x_A"].iloc[0] == pytest.approx(5.6) and df["origin_y_A"].iloc[0] == pytest.approx(-2.8)
    assert (df["ctf_bfactor_A2"] == 25.0).all() and (df["group"] == "mic1.mrc").all()
    assert (df["phase_shift_deg"] == 0).all() and (df["optics_group"] == 1).all()
