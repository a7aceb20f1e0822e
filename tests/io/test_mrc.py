"""hetfield.io.mrc: lazy stacks, permissive old headers, clear errors, atomic writing."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.io import mrc
from hetfield.io.mrc import MRCHeaderWarning, open_stack, read_header, read_volume, write_mrc

from iohelpers import write_stack


def test_float16_stack_reads_as_float32(tmp_path):
    data = write_stack(tmp_path / "h.mrcs", 5, box=6, dtype=np.float16)
    stack = open_stack(tmp_path / "h.mrcs")
    assert stack.dtype == np.float16 and stack.shape == (5, 6, 6) and stack.box == 6 and stack.n_images == 5
    out = stack.read([4, 1])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data[[4, 1]])
    assert stack.read().shape == (5, 6, 6)
    assert stack.read(slice(1, 3)).shape == (2, 6, 6)


def test_reading_is_lazy_and_keeps_no_copy(tmp_path):
    path = tmp_path / "s.mrcs"
    write_stack(path, 4, box=4)
    stack = open_stack(path)  # header only
    assert not any(isinstance(v, np.ndarray) for v in vars(stack).values())
    # change the data on disk after opening: a lazy reader sees the new values
    new = np.full((4, 4, 4), 7.0, dtype=np.float32)
    with open(path, "r+b") as fh:
        fh.seek(stack.header.data_offset)
        fh.write(new.tobytes())
    np.testing.assert_array_equal(stack.read([2]), new[[2]])


def test_2d_single_image_is_one_image(tmp_path):
    with mrcfile.new(str(tmp_path / "one.mrc")) as m:
        m.set_data(np.arange(16, dtype=np.float32).reshape(4, 4))
    stack = open_stack(tmp_path / "one.mrc")
    assert stack.n_images == 1
    np.testing.assert_array_equal(stack.read([0])[0], np.arange(16).reshape(4, 4))


def _make_old_header(path):
    write_stack(path, 2, box=4)
    with open(path, "r+b") as fh:
        fh.seek(208)
        fh.write(b"\0" * 8)  # map id and machine stamp


def test_old_header_warns_once_per_file(tmp_path):
    path = tmp_path / "old.mrcs"
    _make_old_header(path)
    mrc._warned.discard(str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s1 = open_stack(path)
        open_stack(path)
        s1.read([0, 1])
    ours = [w for w in caught if issubclass(w.category, MRCHeaderWarning)]
    assert len(ours) == 1 and str(path) in str(ours[0].message)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]  # no mrcfile noise


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "cut.mrcs"
    write_stack(path, 3, box=8)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(InputError, match=r"cut\.mrcs.*truncated"):
        open_stack(path)


def test_unknown_mode_and_non_square_and_not_mrc(tmp_path):
    path = tmp_path / "mode.mrcs"
    write_stack(path, 1, box=4)
    with open(path, "r+b") as fh:
        fh.seek(12)
        fh.write(np.int32(4).tobytes())  # complex float32
    with pytest.raises(InputError, match=r"mode\.mrcs.*mode 4"):
        open_stack(path)
    write_stack(tmp_path / "rect.mrcs", 2, box=8, ny=6)
    with pytest.raises(InputError, match=r"rect\.mrcs.*6×8.*square"):
        open_stack(tmp_path / "rect.mrcs")
    (tmp_path / "tiny.mrc").write_bytes(b"abc")
    with pytest.raises(InputError, match="tiny.mrc"):
        open_stack(tmp_path / "tiny.mrc")


def test_index_out_of_range(tmp_path):
    write_stack(tmp_path / "s.mrcs", 3, box=4)
    with pytest.raises(InputError, match="image 4 requested.*holds 3"):
        open_stack(tmp_path / "s.mrcs").read([0, 3])


def test_write_read_round_trip_with_voxel_size(tmp_path):
    vol = np.random.default_rng(1).standard_normal((6, 6, 6)).astype(np.float64)
    out = write_mrc(tmp_path / "sub" / "v.mrc", vol, 3.25)
    got, voxel = read_volume(out)
    assert got.dtype == np.float32 and got.shape == (6, 6, 6)
    np.testing.assert_allclose(got, vol.astype(np.float32))
    assert voxel == pytest.approx(3.25)
    with mrcfile.open(out) as m:  # strict: a clean modern header
        assert m.header.mode == 2
        assert (m.header.nxstart, m.header.nystart, m.header.nzstart) == (0, 0, 0)
        assert tuple(m.header.origin.tolist()) == (0.0, 0.0, 0.0)
        assert bytes(m.header.map) == b"MAP "
    assert not read_header(out).old_style
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # atomic: no leftovers


def test_write_mrc_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "bad.mrc", np.zeros(4), 1.0)
    assert not (tmp_path / "bad.mrc").exists()


def test_shared_old_headers_and_float16(shared_data):
    stack = open_stack(shared_data / "warptools-70S/warptools_test_4-tomos_10-ptcls_box-32_angpix-12/Unt_050/"
                                     "Unt_050_12.00A_000001.mrcs")
    assert stack.dtype == np.float16 and stack.shape == (37, 32, 32) and stack.voxel_size_A == pytest.approx(12.0)
    assert stack.read([0]).dtype == np.float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mrc._warned.clear()
        s = open_stack(shared_data / "star-samples/relion31.mrcs")
    assert s.shape == (5, 256, 256)
    assert sum(issubclass(w.category, MRCHeaderWarning) for w in caught) == 1
