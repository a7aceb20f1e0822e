"""Shared, session-scoped fixtures for the analysis tests: a few small simulated datasets and runs,
trained once (tiny models, a few seconds each on 2 cores), and checkers for reports and MRC files."""

from __future__ import annotations

import base64
import html.parser
from pathlib import Path

import numpy as np
import pytest

# Small but informative: 80 particles of two classes, 6 tilts, box 24, SNR 2 (480 images).
TWO_CLASS = dict(n_particles=80, n_classes=2, box=24, n_tilts=6, snr=2.0, seed=3)
# For the latent path (UMAP needs >= 15 particles) and the small-data fall-backs (6 particles).
SMALL = dict(n_particles=20, n_classes=2, box=16, n_tilts=3, snr=2.0, seed=5, max_shift_px=2.0, shift_sd_px=1.0)
TINY = dict(SMALL, n_particles=6, seed=4)


def _train(run: Path, data: Path, **kw) -> Path:
    from hetfield.train.config import TrainConfig
    from hetfield.train.loop import train

    cfg = dict(field_hidden=64, enc_hidden=64, enc_embed=32, device="cpu")
    cfg.update(kw)
    train(run, data, TrainConfig(**cfg))
    return run


@pytest.fixture(scope="session")
def two_class(tmp_path_factory) -> Path:
    """``ROOT/sim`` (simulator output with truth/) and ``ROOT/dataset``."""
    from helpers import simulate_and_setup

    return simulate_and_setup(tmp_path_factory.mktemp("an_two_class"), "d", **TWO_CLASS)


@pytest.fixture(scope="session")
def run_mixture(two_class, tmp_path_factory) -> Path:
    """Hydra-style mixture: K = 2 fields, no latent, 6 epochs."""
    return _train(tmp_path_factory.mktemp("an_runs") / "mixture", two_class / "dataset", zdim=0, n_classes=2, epochs=6, lr=0.01)


@pytest.fixture(scope="session")
def small(tmp_path_factory) -> Path:
    from helpers import simulate_and_setup

    return simulate_and_setup(tmp_path_factory.mktemp("an_small"), "d", **SMALL)


@pytest.fixture(scope="session")
def run_latent(small, tmp_path_factory) -> Path:
    """tomoDRGN-style: K = 1, zdim = 2 encoder, 3 epochs on 20 particles."""
    return _train(tmp_path_factory.mktemp("an_runs") / "latent", small / "dataset", zdim=2, n_classes=1, epochs=3, lr=0.003)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """6 particles, box 16: the dataset for the small-data fall-backs."""
    from helpers import simulate_and_setup

    return simulate_and_setup(tmp_path_factory.mktemp("an_tiny"), "d", **TINY)


@pytest.fixture(scope="session")
def tiny_runs(tiny, tmp_path_factory) -> dict[str, Path]:
    """Runs on 6 particles: no latent with 2 classes, zdim 1, zdim 8 (> N), and 2 classes with zdim 2."""
    root = tmp_path_factory.mktemp("an_tiny_runs")
    return {
        "k2_zdim2": _train(root / "k2_zdim2", tiny / "dataset", zdim=2, n_classes=2, epochs=2),
        "zdim0_k2": _train(root / "zdim0_k2", tiny / "dataset", zdim=0, n_classes=2, epochs=2),
        "zdim1": _train(root / "zdim1", tiny / "dataset", zdim=1, epochs=2),
        "zdim8": _train(root / "zdim8", tiny / "dataset", zdim=8, epochs=1),
    }


@pytest.fixture(scope="session")
def ribosome_run(shared_data, tmp_path_factory) -> Path:
    """``sta-ribosome`` (6 real particles), downsampled to 32 px, 2 epochs of a tiny model."""
    import warnings

    from hetfield.data.cache import PreprocessSettings
    from hetfield.data.preprocess import prepare_dataset

    root = tmp_path_factory.mktemp("an_ribosome")
    src = shared_data / "sta-ribosome"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_dataset(root / "dataset", src / "sta_testing_bin8.star", datadir=src, settings=PreprocessSettings(downsample=32))
    return _train(root / "run", root / "dataset", zdim=2, epochs=2, field_hidden=32, enc_hidden=32, enc_embed=16, pe_features=16)


# -- checkers -----------------------------------------------------------------------------------------
class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def check_report(path: Path) -> list[tuple[str, dict]]:
    """A self-contained page: parses, images are PNG data URIs, every link is a relative path that exists."""
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<!DOCTYPE html>")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    tags = parser.tags
    names = [t for t, _ in tags]
    assert "script" not in names and "iframe" not in names
    assert not any(t == "link" and a.get("rel") == "stylesheet" for t, a in tags)
    imgs = [a for t, a in tags if t == "img"]
    assert imgs, "a report without figures"
    for a in imgs:
        src = a.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for t, a in tags:
        href = a.get("href")
        if href is None:
            continue
        assert "://" not in href and not href.startswith(("/", "javascript:", "#")), href
        assert (path.parent / href).exists(), f"dead link {href} in {path}"
    return tags


def check_mrc(path: Path, voxel_size_A: float, box: int) -> np.ndarray:
    import mrcfile

    with mrcfile.open(path, permissive=False) as m:
        assert m.data.dtype == np.float32
        assert m.data.shape == (box, box, box)
        assert np.isclose(float(m.voxel_size.x), voxel_size_A, rtol=1e-4)
        assert float(m.header.origin.x) == 0 and float(m.header.origin.y) == 0 and float(m.header.origin.z) == 0
        assert int(m.header.nxstart) == 0 and int(m.header.nzstart) == 0
        return np.array(m.data)


@pytest.fixture(scope="session")
def report_checker():
    return check_report


@pytest.fixture(scope="session")
def mrc_checker():
    return check_mrc
