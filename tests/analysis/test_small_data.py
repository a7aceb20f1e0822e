"""Tiny inputs never crash: 6 particles, N < zdim, N < k, zdim = 0, zdim = 1; 1–2 epochs for convergence."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_no_latent_two_classes(tiny_runs, tiny, tmp_path, report_checker, mrc_checker):
    from hetfield.analysis.analyze import run_analysis
    from hetfield.analysis.convergence import run_convergence

    out, s = run_analysis(tiny_runs["zdim0_k2"], out=tmp_path / "a", truth_dir=tiny / "sim")
    assert s["zdim"] == 0 and s["embedding"] is None
    assert sorted(s["files"]["volumes"]) == ["volumes/class_0.mrc", "volumes/class_1.mrc"]
    for c in (0, 1):
        mrc_checker(out / f"volumes/class_{c}.mrc", s["pixel_size_A"], 16)
    assert len(s["files"]["star"]) == sum(1 for n in s["class_counts"] if n)  # empty classes export nothing
    assert "class_ari" in s["truth"]
    report_checker(out / "report.html")
    out, doc = run_convergence(tiny_runs["zdim0_k2"], out=tmp_path / "c")
    assert doc["verdict"] == "too few epochs" and doc["recommended_epoch"] == 2
    report_checker(out / "report.html")


def test_one_dimensional_latent(tiny_runs, tmp_path, report_checker):
    from hetfield.analysis.analyze import run_analysis
    from hetfield.analysis.convergence import run_convergence

    out, s = run_analysis(tiny_runs["zdim1"], out=tmp_path / "a", k=20)
    g = s["groups"]["all"]
    assert s["embedding"] is None  # nothing to embed in 2D: a histogram instead
    assert (out / "plots" / "all_pc1_histogram.png").is_file()
    assert [t["pc"] for t in g["traversals"]] == [1]
    assert g["kmeans"]["k"] == 6 and g["kmeans"]["k_requested"] == 20
    report_checker(out / "report.html")
    out, doc = run_convergence(tiny_runs["zdim1"], out=tmp_path / "c")
    assert doc["verdict"] == "too few epochs" and doc["recommended_epoch"] == 2
    assert doc["embedding"] == "PCA"  # 6 particles: no UMAP


def test_fewer_particles_than_latent_dimensions(tiny_runs, tmp_path, report_checker):
    from hetfield.analysis.analyze import run_analysis

    out, s = run_analysis(tiny_runs["zdim8"], out=tmp_path / "a", k=20)
    g = s["groups"]["all"]
    assert s["zdim"] == 8 and s["n_particles"] == 6
    assert len(g["pca_explained_variance_ratio"]) <= 6
    assert g["kmeans"]["k"] <= 6 and s["embedding"] == "PCA"
    report_checker(out / "report.html")
    assert json.loads((out / "summary.json").read_text())["groups"]["all"]["n_particles"] == 6


def test_classes_with_latents_all_in_one_call(tiny_runs, tmp_path, report_checker):
    from hetfield.analysis.analyze import run_analysis

    out, s = run_analysis(tiny_runs["k2_zdim2"], out=tmp_path / "a", k=3, n_traversal=2)
    assert s["classes_analysed"] == [0, 1] and set(s["groups"]) == {"class_0", "class_1"}
    assert {"volumes/class_0.mrc", "volumes/class_1.mrc"} <= set(s["files"]["volumes"])
    for c, g in enumerate(s["groups"].values()):
        assert g["n_particles"] == s["class_counts"][c]
        if g["n_particles"]:
            assert g["kmeans"]["k"] <= min(3, g["n_particles"])
            assert f"particles/class_{c}.star" in s["files"]["star"]
        else:
            assert g["skipped"] and f"volumes/class_{c}.mrc" in s["files"]["volumes"]
    report_checker(out / "report.html")


@pytest.mark.shared_data
def test_sta_ribosome_run(ribosome_run, tmp_path, report_checker):
    from hetfield.analysis.analyze import run_analysis
    from hetfield.analysis.convergence import run_convergence

    out, doc = run_convergence(ribosome_run, out=tmp_path / "c")
    assert doc["recommended_epoch"] == 2 and doc["verdict"] == "too few epochs"
    report_checker(out / "report.html")
    out, s = run_analysis(ribosome_run, epoch="auto", convergence=tmp_path / "c", out=tmp_path / "a", k=20)
    assert s["epoch"] == 2 and s["n_particles"] == 6
    assert s["groups"]["all"]["kmeans"]["k"] == 6
    assert len(s["files"]["star"]) == 6  # one per cluster, in the user's own (image-series) format
    report_checker(out / "report.html")


def test_k_auto_adapts_to_the_particle_count(tiny_runs, tmp_path):
    """The default --k: one cluster per 5 particles, 2 to 20, recorded as asked and as used."""
    from hetfield.analysis.analyze import run_analysis
    from hetfield.analysis.latent import parse_k, resolve_k

    assert [resolve_k("auto", n) for n in (3, 10, 14, 15, 99, 100, 5000)] == [2, 2, 2, 3, 19, 20, 20]
    assert resolve_k(7, 3) == 7  # a number is taken as given (kmeans caps it)
    _, s = run_analysis(tiny_runs["zdim1"], out=tmp_path / "a")
    g = s["groups"]["all"]
    assert s["k_requested"] == "auto"
    assert g["kmeans"]["k"] == resolve_k("auto", g["n_particles"]) == g["kmeans"]["k_requested"]
    assert parse_k("AUTO") == "auto" and parse_k("12") == 12
    for bad in ("0", "-3", "2.5", "many"):
        with pytest.raises(Exception, match=r"--k .*give a whole number >= 1, or auto"):
            parse_k(bad)
