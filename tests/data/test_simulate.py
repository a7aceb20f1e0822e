"""The ground-truth simulator: what was drawn is what is written, in the project's conventions.

Conventions checked here (see ``hetfield.data.simulate``): dose-symmetric tilt order with pre-exposure
``i * dose``; ``A_image = rotation_y(tilt) @ A_particle``; the particle sits at ``-origin``; white
particles ``image = -(CTF * dose filter * projection) + noise``; SNR = sum var(signal) / sum var(noise).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mrcfile = pytest.importorskip("mrcfile")
pd = pytest.importorskip("pandas")
starfile = pytest.importorskip("starfile")
torch = pytest.importorskip("torch")

from hetfield.data.simulate import SimulationParams, load_phantom, simulate  # noqa: E402
from hetfield.data.simulate.acquisition import class_counts, dose_symmetric_tilts, stack_layout  # noqa: E402
from hetfield.data.simulate.phantoms import Phantom  # noqa: E402
from hetfield.errors import ConfigError  # noqa: E402
from hetfield.imaging.ctf import ctf_2d  # noqa: E402
from hetfield.imaging.exposure import dose_filter  # noqa: E402
from hetfield.imaging.hartley import fft2_center, ifft2_center  # noqa: E402
from hetfield.imaging.projection import project, translate_images  # noqa: E402
from hetfield.imaging.rotations import euler_to_matrix, rotation_y  # noqa: E402

STAR_COLUMNS = [
    "rlnImageName", "rlnMicrographName", "rlnDetectorPixelSize", "rlnDefocusU", "rlnDefocusV",
    "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift",
    "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnCtfBfactor",
    "rlnCtfScalefactor", "rlnGroupName",
]
TILT = dict(n_particles=40, n_classes=2, box=32, pixel_size_A=8.0, n_tilts=9, min_tilts=4, tilt_step_deg=7.0,
            dose_per_tilt=2.5, snr=0.5, class_fractions="0.3,0.7", seed=3, write_clean=True, images_per_stack=100)


# --- helpers ---------------------------------------------------------------------------------------


def read_images(out: Path, star: str = "particles.star") -> tuple[pd.DataFrame, np.ndarray]:
    df = starfile.read(out / star)
    stacks: dict[str, np.ndarray] = {}
    imgs = []
    for name in df["rlnImageName"]:
        idx, path = name.split("@")
        if path not in stacks:
            stacks[path] = mrcfile.read((out / star).parent / path)
        imgs.append(stacks[path][int(idx) - 1])
    return df, np.stack(imgs).astype(np.float64)


def d_grid_freqs(d: int):
    c = (torch.arange(d, dtype=torch.float64) - d // 2) / d
    ky, kx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([kx, ky], -1).reshape(1, -1, 2)


def expected_noisy(df: pd.DataFrame, clean: np.ndarray) -> np.ndarray:
    """``-(CTF * dose filter) ⊛ clean`` on the D grid, from the STAR metadata only."""
    d = clean.shape[-1]
    fr = d_grid_freqs(d)

    def col(c):
        return torch.as_tensor(df[c].to_numpy(np.float64, copy=True))

    ctf = ctf_2d(fr, col("rlnDetectorPixelSize"), col("rlnDefocusU"), col("rlnDefocusV"), col("rlnDefocusAngle"),
                 col("rlnVoltage"), col("rlnSphericalAberration"), col("rlnAmplitudeContrast"), col("rlnPhaseShift"))
    filt = ctf * dose_filter(fr, col("rlnDetectorPixelSize"), -col("rlnCtfBfactor") / 4, col("rlnVoltage"))
    f = fft2_center(torch.as_tensor(clean)).reshape(len(df), -1) * filt
    return -ifft2_center(f.reshape(clean.shape)).real.numpy()


def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def hashes(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small torch ops are fastest, and immune to a busy machine, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tilt_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim") / "tilt"
    return out, simulate(out, **TILT)


# --- pure functions --------------------------------------------------------------------------------


def test_dose_symmetric_order():
    assert dose_symmetric_tilts(9, 3.0).tolist() == [0, 3, -3, -6, 6, 9, -9, -12, 12]
    assert dose_symmetric_tilts(4, 2.0).tolist() == [0, 2, -2, -4]
    assert dose_symmetric_tilts(1, 5.0).tolist() == [0]


def test_class_counts_are_exact():
    assert class_counts(40, [0.3, 0.7]).tolist() == [12, 28]
    assert class_counts(10, [1 / 3] * 3).tolist() == [4, 3, 3]
    assert class_counts(7, [0.5, 0.5]).sum() == 7


def test_stack_layout_keeps_particles_whole():
    offsets = np.array([0, 11, 22, 33, 44, 55])
    assert stack_layout(offsets, 25) == [(0, 2), (2, 4), (4, 5)]
    assert stack_layout(offsets, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert stack_layout(offsets, 10_000) == [(0, 5)]


def test_phantom_classes_share_a_core_differ_and_move():
    box = 32
    ph = Phantom.make(3, np.random.default_rng(0), motion=True, motion_angle_deg=100.0)
    c = np.arange(box) - box // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    vols = {(k, t): ph.volume(k, t, box) for k in range(3) for t in (0.0, 0.5, 1.0)}
    for v in vols.values():
        assert v.dtype == np.float32 and v.min() >= 0 and v.max() > 0
        assert np.all(v[r >= 0.4 * box] == 0)  # all density inside the 0.4 D sphere
        com = (v[..., None] * np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)).sum((0, 1, 2)) / v.sum()
        assert np.linalg.norm(com) < 0.1 * box  # centred
    cc = np.corrcoef([vols[(k, 0.5)].ravel() for k in range(3)])
    assert cc[np.triu_indices(3, 1)].max() < 0.9  # classes differ clearly
    for k in range(3):
        c0, _, _ = ph.blobs(k, 0.0)
        c1, _, _ = ph.blobs(k, 1.0)
        assert np.linalg.norm(c0 - c1, axis=1).max() * box > 4.0  # several pixels of travel at box 32
        np.testing.assert_array_equal(c0[:6], ph.core_centers)  # the core never moves
        assert np.corrcoef(vols[(k, 0.0)].ravel(), vols[(k, 1.0)].ravel())[0, 1] < 0.95
    still = Phantom.make(3, np.random.default_rng(0), motion=False)
    np.testing.assert_array_equal(still.volume(1, 0.0, box), still.volume(1, 1.0, box))


def test_subunit_classes_are_assembly_states_no_rotation_maps_onto_each_other():
    """``classes_differ_by="subunits"``: one domain for all, class k with k subunits (more mass each),
    so a pose search cannot trade one class for a rotated other as with the domain design."""
    box = 32
    domain = Phantom.make(3, np.random.default_rng(0), motion=True)
    sub = Phantom.make(3, np.random.default_rng(0), motion=True, classes_differ_by="subunits")
    masses = [sub.volume(k, 0.5, box).sum() for k in range(3)]
    assert masses[0] < masses[1] < masses[2] and masses[1] / masses[0] > 1.2  # each subunit is substantial
    np.testing.assert_array_equal(sub.volume(0, 0.3, box), domain.volume(0, 0.3, box))  # class 0: the same particle
    for k in range(3):
        c, s, a = sub.blobs(k, 0.5)
        assert len(c) == 6 + 2 + 3 * k and len(s) == len(a) == len(c)
        assert np.linalg.norm(c, axis=1).max() < 0.24  # inside the taper like every blob
        np.testing.assert_allclose(c[6:8], sub.blobs(0, 0.5)[0][6:8])  # the shared domain
        c0, _, _ = sub.blobs(k, 0.0)
        np.testing.assert_array_equal(c0[8:], c[8:])  # the subunits do not move; the domain does
        assert np.linalg.norm(c0[6:8] - c[6:8], axis=1).max() * box > 2.0
    cc = np.corrcoef([sub.volume(k, 0.5, box).ravel() for k in range(3)])
    assert cc[np.triu_indices(3, 1)].max() < 0.93  # 0.885 and 0.918 between neighbours, at the identity
    with pytest.raises(ValueError, match="classes_differ_by"):
        Phantom.make(2, np.random.default_rng(0), classes_differ_by="colour")


def test_subunit_design_is_recorded_and_rebuilt_from_truth(tmp_path):
    import yaml

    out = tmp_path / "sub"
    simulate(out, n_particles=4, n_tilts=3, box=16, classes_differ_by="Subunits", seed=3)
    doc = yaml.safe_load((out / "truth" / "truth.yaml").read_text())
    assert doc["parameters"]["classes_differ_by"] == "subunits" and "subunits" in doc["phantom"]["classes"][1]
    phantom = load_phantom(out)
    assert phantom.classes_differ_by == "subunits"
    np.testing.assert_array_equal(phantom.volume(1, 0.5, 16), mrcfile.read(out / "truth" / "class_1.mrc"))
    # a truth file written before the option existed reads as the domain design
    old = tmp_path / "old"
    simulate(old, n_particles=4, n_tilts=3, box=16, seed=3)
    d = yaml.safe_load((old / "truth" / "truth.yaml").read_text())
    del d["parameters"]["classes_differ_by"]
    (old / "truth" / "truth.yaml").write_text(yaml.safe_dump(d))
    assert load_phantom(old).classes_differ_by == "domain"


# --- the written dataset ---------------------------------------------------------------------------


def test_truth_matches_star(tilt_set):
    out, summary = tilt_set
    df = starfile.read(out / "particles.star")
    truth = pd.read_csv(out / "truth" / "particles.csv")
    images = pd.read_csv(out / "truth" / "images.csv")
    assert list(df.columns) == STAR_COLUMNS
    assert len(df) == len(images) == summary["n_images"]

    # classes: exact counts for the fractions
    assert np.bincount(truth["class"], minlength=2).tolist() == [12, 28] == summary["class_counts"]
    assert truth["t"].between(0, 1).all() and truth["t"].std() > 0.2

    # particle names and grouping
    assert set(df["rlnGroupName"]) == set(truth["particle_name"])
    assert (df["rlnGroupName"].to_numpy() == images["particle_name"].to_numpy()).all()
    per = df.groupby("rlnGroupName", sort=False).size()
    assert (per.loc[truth["particle_name"]].to_numpy() == truth["n_images"].to_numpy()).all()
    assert per.min() >= TILT["min_tilts"] and per.max() <= TILT["n_tilts"] and per.nunique() > 1

    # tilts, doses and cos(tilt): the dose-symmetric scheme, pre-exposure = acquisition index x dose
    scheme = dose_symmetric_tilts(TILT["n_tilts"], TILT["tilt_step_deg"])
    frame = images["frame"].to_numpy()
    np.testing.assert_allclose(images["stage_tilt_deg"], scheme[frame])
    np.testing.assert_allclose(images["dose_e_per_A2"], frame * TILT["dose_per_tilt"])
    np.testing.assert_allclose(df["rlnCtfBfactor"], -4 * frame * TILT["dose_per_tilt"], atol=1e-6)
    np.testing.assert_allclose(df["rlnCtfScalefactor"], np.cos(np.deg2rad(scheme[frame])), atol=1e-7)
    for _, g in images.groupby("particle", sort=False):
        f = g["frame"].to_numpy()
        assert f[0] == 0 and (np.diff(f) > 0).all()  # 0° image kept, acquisition order
    by_particle = images.groupby("particle")["frame"]
    assert (by_particle.max() > by_particle.size() - 1).any()  # interior frames dropped, not only the last

    # rotations: A_image = rotation_y(tilt) @ A_particle (RELION matrices)
    pr = truth.set_index("particle_name").loc[df["rlnGroupName"]]
    a_particle = euler_to_matrix(pr["euler_rot_deg"], pr["euler_tilt_deg"], pr["euler_psi_deg"])
    a_image = euler_to_matrix(df["rlnAngleRot"], df["rlnAngleTilt"], df["rlnAnglePsi"])
    expected = rotation_y(images["stage_tilt_deg"].to_numpy()) @ a_particle
    np.testing.assert_allclose(a_image, expected, atol=1e-6)
    tilted = images["stage_tilt_deg"].to_numpy() != 0
    assert not np.allclose(a_image[tilted], (a_particle @ rotation_y(images["stage_tilt_deg"].to_numpy()))[tilted], atol=1e-3)

    # CTF draws: astigmatic, defocus near the mean, varies per tilt
    assert (df["rlnDefocusU"] >= df["rlnDefocusV"]).all() and (df["rlnDefocusU"] > df["rlnDefocusV"]).any()
    assert abs(df["rlnDefocusU"].mean() - 15000) < 3000
    assert df.groupby("rlnGroupName")["rlnDefocusU"].std().min() > 0
    shifts = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / TILT["pixel_size_A"]
    assert np.abs(shifts).max() <= 3.0 + 1e-9 and shifts.std() > 0.5


def test_files_and_truth_volumes(tilt_set):
    out, summary = tilt_set
    df = starfile.read(out / "particles.star")
    stacks = sorted({n.split("@")[1] for n in df["rlnImageName"]})
    assert len(stacks) == summary["n_stacks"] > 1  # images_per_stack=100 splits the set
    for s in stacks:
        with mrcfile.open(out / s) as m:
            assert m.data.dtype == np.float32 and m.data.shape[1:] == (32, 32) and m.is_image_stack()
            assert np.isclose(float(m.voxel_size.x), 8.0)
            assert int(m.header.nlabl) == 1
        idx = [int(n.split("@")[0]) for n in df["rlnImageName"] if n.endswith(s)]
        assert idx == list(range(1, len(idx) + 1))  # 1-based, contiguous, whole particles per stack
    assert df.groupby("rlnGroupName")["rlnImageName"].apply(lambda x: x.str.split("@").str[1].nunique()).max() == 1

    phantom = load_phantom(out)
    for k in range(2):
        vol = mrcfile.read(out / "truth" / f"class_{k}.mrc")
        np.testing.assert_array_equal(vol, phantom.volume(k, 0.5, 32))
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            np.testing.assert_array_equal(mrcfile.read(out / "truth" / f"class_{k}_t{round(100 * t):03d}.mrc"),
                                          phantom.volume(k, t, 32))
        with mrcfile.open(out / "truth" / f"class_{k}.mrc") as m:
            assert np.isclose(float(m.voxel_size.x), 8.0) and m.is_volume()
    import yaml

    doc = yaml.safe_load((out / "truth" / "truth.yaml").read_text())
    assert doc["seed"] == TILT["seed"] and doc["hetfield_version"]
    assert doc["snr"]["requested"] == TILT["snr"] and "definition" in doc["snr"]
    assert doc["tilt_scheme"]["stage_tilt_deg_by_acquisition"] == dose_symmetric_tilts(9, 7.0).tolist()
    assert not list(out.rglob(".*")), "temporary files left in the output"


def test_clean_images_follow_the_projection_convention(tilt_set):
    """clean = project(true volume at the particle's t, A_image) translated by -origin (cc > 0.99)."""
    out, _ = tilt_set
    df, clean = read_images(out, "clean/particles.star")
    truth = pd.read_csv(out / "truth" / "particles.csv").set_index("particle_name")
    phantom = load_phantom(out)
    a_image = euler_to_matrix(df["rlnAngleRot"], df["rlnAngleTilt"], df["rlnAnglePsi"])
    origin_px = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / df["rlnDetectorPixelSize"].to_numpy()[:, None]
    rows = np.arange(0, len(df), 3)
    expected, wrong_sign = [], []
    for r in rows:
        pr = truth.loc[df["rlnGroupName"].iloc[r]]
        proj = project(phantom.volume(int(pr["class"]), float(pr["t"]), 32), a_image[r : r + 1])
        expected.append(translate_images(proj, -origin_px[r : r + 1])[0].numpy())
        wrong_sign.append(translate_images(proj, origin_px[r : r + 1])[0].numpy())
    cc = corr(np.stack(expected), clean[rows])
    assert cc.min() > 0.99, cc.min()
    assert corr(np.stack(wrong_sign), clean[rows]).mean() < cc.mean() - 0.05


def test_snr_and_white_particles(tilt_set):
    """Measured SNR (from the files alone) within 20 % of the request; noise variance ~ 1/cos(tilt)."""
    out, summary = tilt_set
    df, noisy = read_images(out)
    _, clean = read_images(out, "clean/particles.star")
    signal = expected_noisy(df, clean)
    noise = noisy - signal
    snr = signal.var(axis=(1, 2)).sum() / noise.var(axis=(1, 2)).sum()
    assert abs(snr / TILT["snr"] - 1) < 0.2, snr
    assert abs(summary["snr_measured"] / TILT["snr"] - 1) < 0.05
    assert corr(signal, noisy).mean() > 0.3  # white: positively correlated with -(CTF * clean)
    cos_t = df["rlnCtfScalefactor"].to_numpy()
    ratio = noise.var(axis=(1, 2)) * cos_t
    assert ratio.std() / ratio.mean() < 0.15  # noise variance grows as 1 / cos(tilt)


@pytest.mark.parametrize("mode", ["tilt", "spa"])
def test_high_snr_images_are_minus_ctf_times_clean(tmp_path, mode):
    out = tmp_path / mode
    simulate(out, n_particles=12, n_tilts=5, mode=mode, snr=1e5, write_clean=True, seed=1)
    df, noisy = read_images(out)
    _, clean = read_images(out, "clean/particles.star")
    cc = corr(expected_noisy(df, clean), noisy)
    assert cc.min() > 0.95, cc.min()
    assert corr(-expected_noisy(df, clean), noisy).max() < -0.95  # the sign is white, not dark
    if mode == "spa":
        assert len(df) == 12 and df["rlnGroupName"].is_unique
        assert (df["rlnCtfBfactor"] == 0).all() and (df["rlnCtfScalefactor"] == 1).all()
        assert df["rlnMicrographName"].str.startswith("mic").all()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_particles=8, n_tilts=5, min_tilts=3, write_clean=True)
    simulate(tmp_path / "a", seed=7, **kw)
    simulate(tmp_path / "b", seed=7, threads=2, **kw)  # the thread count must not change a byte
    simulate(tmp_path / "c", seed=8, **kw)
    ha, hb, hc = (hashes(tmp_path / x) for x in "abc")
    assert ha == hb and len(ha) > 10
    assert ha.keys() == hc.keys()
    for f in ("particles.star", "stacks/particles_000.mrcs", "truth/particles.csv", "truth/class_0.mrc"):
        assert ha[f] != hc[f], f


def test_force_replaces_and_failure_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    simulate(out, n_particles=4, n_tilts=3)
    with pytest.raises(ConfigError, match="--force"):
        simulate(out, n_particles=4, n_tilts=3)
    simulate(out, n_particles=5, n_tilts=3, force=True)
    assert len(pd.read_csv(out / "truth" / "particles.csv")) == 5

    import hetfield.data.simulate.render as render_mod

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(render_mod, "render", boom)
    with pytest.raises(RuntimeError):
        simulate(tmp_path / "never", n_particles=4, n_tilts=3)
    with pytest.raises(RuntimeError):
        simulate(out, n_particles=6, n_tilts=3, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial output, no temp dirs
    assert len(pd.read_csv(out / "truth" / "particles.csv")) == 5  # the old output survived


@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(n_particles=0), "--n-particles"),
        (dict(n_classes=0), "--n-classes"),
        (dict(box=33), "--box"),
        (dict(box=8), "--box"),
        (dict(snr=0), "--snr"),
        (dict(snr=-1.0), "--snr"),
        (dict(class_fractions="0.5,0.4"), "--class-fractions"),
        (dict(class_fractions="0.5,0.3,0.2"), "--class-fractions"),
        (dict(class_fractions="a,b"), "--class-fractions"),
        (dict(n_tilts=31, tilt_step_deg=6), "--n-tilts"),
        (dict(min_tilts=12), "--min-tilts"),
        (dict(mode="cryo"), "--mode"),
        (dict(classes_differ_by="colour"), "--classes-differ-by"),
        (dict(pixel_size_A=0), "--pixel-size-A"),
        (dict(unknown_knob=1), "unknown"),
    ],
)
def test_bad_values_fail_before_work(tmp_path, kwargs, option):
    with pytest.raises(ConfigError) as err:
        simulate(tmp_path / "out", **kwargs)
    assert option in str(err.value) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_params_defaults_match_the_cli_contract():
    p = SimulationParams().validated()
    assert (p.n_particles, p.n_classes, p.box, p.pixel_size_A, p.mode, p.n_tilts, p.tilt_step_deg,
            p.dose_per_tilt, p.snr, p.motion, p.defocus_A, p.voltage_kV, p.seed) == (
        200, 2, 32, 8.0, "tilt", 11, 6.0, 3.0, 0.5, True, 15000.0, 300.0, 0)
    assert p.min_tilts == 11 and p.class_fractions == [0.5, 0.5] and p.classes_differ_by == "domain"


# --- the command line ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real entry point in a fresh interpreter (``python -m hetfield.cli.app`` = ``hetfield``)."""
    return subprocess.run([sys.executable, "-m", "hetfield.cli.app", "simulate", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ["--n-particles", "0"],
        ["--n-classes", "0"],
        ["--box", "31"],
        ["--box", "4"],
        ["--snr", "0"],
        ["--class-fractions", "0.6,0.6"],
        ["--class-fractions", "1.0"],
        ["--n-tilts", "41", "--tilt-step-deg", "5"],
        ["--min-tilts", "0"],
        ["--mode", "cryo"],
        ["--classes-differ-by", "colour"],
    ],
)
def test_cli_bad_options_exit_2(tmp_path, monkeypatch, capsys, args):
    """Through ``hetfield.cli.app.main`` in-process (fast); the subprocess test below covers the script."""
    from hetfield.cli.app import main

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["hetfield", "simulate", str(out), *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hetfield: error:") and args[0] in lines[0]
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_cli_existing_out_and_success(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    res = run_cli(str(out), "--n-particles", "6", "--n-tilts", "3", "--mode", "tilt", "--seed", "2")
    assert res.returncode == 0, res.stderr
    assert "SNR" in res.stdout and (out / "particles.star").is_file()
    before = hashes(out)
    res = run_cli(str(out), "--n-particles", "6", "--box", "30")
    assert res.returncode == 2 and "--force" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr and hashes(out) == before

    from hetfield.cli.app import main

    monkeypatch.setattr(sys, "argv", ["hetfield", "simulate", str(out), "--n-particles", "6", "--n-tilts", "3",
                                      "--seed", "2", "--force"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert hashes(out) == before  # same options: same bytes, through the CLI too


def test_small_boxes_get_shifts_that_fit(tmp_path):
    """Shift defaults scale with the box (box/8 at most), so --box 16 works without options."""
    from hetfield.data.simulate import simulate

    info = simulate(tmp_path / "b16", n_particles=4, box=16, n_tilts=3)
    import starfile

    df = starfile.read(tmp_path / "b16" / "particles.star")
    origin_px = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / 8.0
    assert abs(origin_px).max() <= 16 / 8 + 1e-6
    assert info
