"""hetfield.io.paths and hetfield.io.star."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.io import paths as P
from hetfield.io.paths import resolve_image_path, resolve_image_paths
from hetfield.io.star.columns import merge_optics, parse_image_names, parse_vectors
from hetfield.io.star.read import read_star
from hetfield.io.star.write import write_star_subset

from iohelpers import star_loop, star_pairs


# --- paths ------------------------------------------------------------------------------------


def test_resolution_order(tmp_path, monkeypatch):
    star_dir, datadir, cwd = tmp_path / "star", tmp_path / "data", tmp_path / "cwd"
    for d in (star_dir, datadir, cwd, datadir / "sub"):
        d.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    (datadir / "sub" / "a.mrcs").write_bytes(b"x")
    assert resolve_image_path("sub/a.mrcs", star_dir, datadir) == (datadir / "sub" / "a.mrcs").resolve()  # datadir/path
    (datadir / "a.mrcs").write_bytes(b"x")
    assert resolve_image_path("sub/a.mrcs", star_dir, datadir) == (datadir / "a.mrcs").resolve()  # datadir/basename
    (star_dir / "sub").mkdir()
    (star_dir / "sub" / "a.mrcs").write_bytes(b"x")
    assert resolve_image_path("sub/a.mrcs", star_dir, datadir) == (star_dir / "sub" / "a.mrcs").resolve()  # STAR dir
    (cwd / "sub").mkdir()
    (cwd / "sub" / "a.mrcs").write_bytes(b"x")
    assert resolve_image_path("sub/a.mrcs", star_dir, datadir) == (cwd / "sub" / "a.mrcs").resolve()  # as written
    assert resolve_image_path(str(datadir / "a.mrcs"), star_dir, None) == (datadir / "a.mrcs").resolve()  # absolute


def test_miss_names_every_place_and_datadir(tmp_path):
    with pytest.raises(InputError) as e:
        resolve_image_path("data/x.mrcs", tmp_path / "s", tmp_path / "d")
    msg = str(e.value)
    assert "data/x.mrcs" in msg and str(tmp_path / "s" / "data" / "x.mrcs") in msg
    assert str(tmp_path / "d" / "x.mrcs") in msg and str(tmp_path / "d" / "data" / "x.mrcs") in msg
    assert "--datadir" in msg
    with pytest.raises(InputError, match="pass --datadir"):
        resolve_image_path("x.mrcs", tmp_path, None)


def test_each_distinct_path_resolved_once(tmp_path, monkeypatch):
    (tmp_path / "a.mrcs").write_bytes(b"x")
    (tmp_path / "b.mrcs").write_bytes(b"x")
    calls = []
    real = P.resolve_image_path
    monkeypatch.setattr(P, "resolve_image_path", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    written = np.array(["a.mrcs", "b.mrcs"] * 5000, dtype=object)
    out = resolve_image_paths(written, tmp_path, None)
    assert sorted(calls) == ["a.mrcs", "b.mrcs"]
    assert out[0] == str((tmp_path / "a.mrcs").resolve()) and out[1] == str((tmp_path / "b.mrcs").resolve())
    # metadata-only: a missing stack keeps its STAR-relative place instead of failing
    lax = resolve_image_paths(np.array(["nope.mrcs"], dtype=object), tmp_path, None, strict=False)
    assert lax[0] == os.path.normpath(str(tmp_path / "nope.mrcs"))


# --- STAR -------------------------------------------------------------------------------------


def test_blocks_pairs_comments_and_optics_order(tmp_path):
    text = ("# version 30001\n" + star_pairs("general", {"rlnTomoSubTomosAre2DStacks": 1})
            + star_loop("particles", ["rlnImageName", "rlnOpticsGroup", "rlnGroupName"],
                        [["1@a.mrcs", 2, "000_01"], ["2@a.mrcs", 1, "000_02"]])
            + "# version 30001\n\n"
            + star_loop("optics", ["rlnOpticsGroup", "rlnImagePixelSize", "rlnVoltage"], [[1, 1.5, 300], [2, 2.5, 200]]))
    p = tmp_path / "x.star"
    p.write_text(text)
    star = read_star(p)
    assert list(star.blocks) == ["general", "particles", "optics"]
    assert star.blocks["general"].pairs == {"rlnTomoSubTomosAre2DStacks": "1"}
    parts = star.blocks["particles"]
    assert parts.n_rows == 2 and parts.df["rlnGroupName"].tolist() == ["000_01", "000_02"]  # kept as text
    merged = merge_optics(parts.df, star.blocks["optics"].df, "x")
    assert merged["rlnImagePixelSize"].tolist() == [2.5, 1.5] and merged["rlnVoltage"].tolist() == [200, 300]


def test_row_errors_name_line_and_row(tmp_path):
    p = tmp_path / "bad.star"
    p.write_text(star_loop("", ["rlnImageName", "rlnDefocusU"], [["1@a.mrcs", 1000], ["2@a.mrcs", 1000, 5]]))
    with pytest.raises(InputError, match=r"bad\.star.*row 2 \(line 8\)"):
        read_star(p)
    p.write_text(star_loop("", ["rlnImageName", "rlnDefocusU", "rlnDefocusV"], [["1@a.mrcs", 1, 1], ["2@a.mrcs", 1]]))
    with pytest.raises(InputError, match=r"row 2 has fewer values"):
        read_star(p)


def test_optics_group_missing(tmp_path):
    import pandas as pd

    with pytest.raises(InputError, match="row 2 belongs to optics group 3"):
        merge_optics(pd.DataFrame({"rlnOpticsGroup": [1, 3]}), pd.DataFrame({"rlnOpticsGroup": [1, 2], "x": [0, 0]}), "w")


def test_image_names():
    idx, paths = parse_image_names(["000001@a/b.mrcs", "12@c.mrcs", "single.mrc"], "w")
    assert idx.tolist() == [0, 11, -1] and paths.tolist() == ["a/b.mrcs", "c.mrcs", "single.mrc"]
    with pytest.raises(InputError, match="row 2.*1-based"):
        parse_image_names(["1@a.mrcs", "0@a.mrcs"], "w")
    with pytest.raises(InputError, match="row 1.*1-based"):
        parse_image_names(["x@a.mrcs"], "w")
    with pytest.raises(InputError, match="row 1.*no file name"):
        parse_image_names(["3@"], "w")


def test_vectors():
    v = parse_vectors(["[1,0,1]", "[0.5,-2]", "[]"], "w", "rlnTomoVisibleFrames")
    assert [x.tolist() for x in v] == [[1, 0, 1], [0.5, -2.0], []]
    with pytest.raises(InputError, match="row 2.*_rlnTomoProjX"):
        parse_vectors(["[1,0]", "[a,b]"], "w", "rlnTomoProjX")


def test_write_subset_keeps_everything_else(tmp_path):
    src = tmp_path / "s.star"
    body = (star_loop("optics", ["rlnOpticsGroup", "rlnImagePixelSize"], [[1, 1.0]])
            + star_loop("particles", ["rlnImageName", "rlnExtra"], [[f"{i + 1}@a.mrcs", f"{i}.000"] for i in range(5)]))
    src.write_text("# header comment\n" + body + "# trailing comment\n")
    out = write_star_subset(src, "particles", [1, 3], tmp_path / "o.star")
    text = out.read_text()
    assert "# header comment" in text and "# trailing comment" in text and "_rlnImagePixelSize #2" in text
    star = read_star(out)
    assert star.blocks["particles"].df["rlnImageName"].tolist() == ["2@a.mrcs", "4@a.mrcs"]
    assert star.blocks["optics"].n_rows == 1


def test_million_rows_read_in_seconds(tmp_path):
    """A 10^6-row image-series STAR over 1 000 stacks: parsed, grouped, resolved and checked in seconds."""
    import os

    from hetfield.io.readers import read_particles

    from iohelpers import write_stack

    n, per = 1_000_000, 1000
    write_stack(tmp_path / "stacks" / "s0.mrcs", per, box=2)
    for k in range(1, n // per):
        os.link(tmp_path / "stacks" / "s0.mrcs", tmp_path / "stacks" / f"s{k}.mrcs")
    i = np.arange(n)
    names = np.char.add(np.char.add((i % per + 1).astype(str), "@stacks/s"), (i // per).astype(str))
    rest = np.char.add(np.char.add(".mrcs 4.0 15000 14000 5 300 2.7 0.1 0 10 20 30 0.5 -0.5 -", ((i % 10) * 8).astype(str)),
                       np.char.add(" 0.98 p", (i // 10).astype(str)))
    p = tmp_path / "big.star"
    cols = ["rlnImageName", "rlnDetectorPixelSize", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
            "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift", "rlnAngleRot", "rlnAngleTilt",
            "rlnAnglePsi", "rlnOriginX", "rlnOriginY", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnGroupName"]
    p.write_text("data_\n\nloop_\n" + "".join(f"_{c}\n" for c in cols) + "\n".join(np.char.add(names, rest).tolist())
                 + "\n")
    t = time.perf_counter()
    table = read_particles(p)
    elapsed = time.perf_counter() - t
    assert (table.n_particles, table.n_images) == (100_000, n)
    df = table.images
    assert df["image_index"].iloc[-1] == per - 1 and df["dose_e_per_A2"].iloc[9] == 18.0
    assert df["image_path"].iloc[-1] == str((tmp_path / "stacks" / "s999.mrcs").resolve())
    assert elapsed < 20, f"reading 10^6 rows took {elapsed:.1f} s"
    print(f"10^6 rows read in {elapsed:.1f} s")
