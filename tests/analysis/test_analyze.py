"""``hetfield analyze`` on small simulated runs: truth metrics, volumes, STAR exports, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixture_analysis(run_mixture, two_class, tmp_path_factory):
    from hetfield.analysis.analyze import run_analysis

    out, summary = run_analysis(run_mixture, truth_dir=two_class / "sim", out=tmp_path_factory.mktemp("an") / "mixture")
    return out, summary


def test_mixture_recovers_classes_and_volumes(mixture_analysis, mrc_checker):
    out, s = mixture_analysis
    tr = s["truth"]
    print("class ARI", tr["class_ari"], "FSC at half Nyquist", [round(r["fsc_half_nyquist"], 3) for r in tr["volumes_vs_truth"]],
          "resolution at FSC 0.5 (Å)", [round(r["resolution_fsc05_A"], 1) for r in tr["volumes_vs_truth"]])
    assert tr["class_ari"] >= 0.9
    assert len(tr["volumes_vs_truth"]) == 2
    assert {r["true_class"] for r in tr["volumes_vs_truth"]} == {0, 1}  # one-to-one matching
    for r in tr["volumes_vs_truth"]:
        assert r["fsc_half_nyquist"] >= 0.5
        assert r["cc"] >= 0.9
    # what was written matches what was measured: the class MRCs themselves
    from hetfield.analysis.metrics import fsc, soft_sphere_mask
    from hetfield.io.mrc import read_volume

    for r in tr["volumes_vs_truth"]:
        c = int(r["volume"].split()[-1])
        vol = mrc_checker(out / f"volumes/class_{c}.mrc", s["pixel_size_A"], 24)
        true, _ = read_volume(_truth_map(s, r))
        assert fsc(vol, true, s["pixel_size_A"], mask=soft_sphere_mask(24)).at_half_nyquist() == pytest.approx(r["fsc_half_nyquist"], abs=1e-4)
    # no latent: no k-means, no traversals; every class analysed in the one call
    assert s["zdim"] == 0 and s["classes_analysed"] == [0, 1]
    assert sorted(s["files"]["volumes"]) == ["volumes/class_0.mrc", "volumes/class_1.mrc"]
    assert sum(s["class_counts"]) == 80 and abs(sum(s["class_occupancy"]) - 1) < 1e-9


def _truth_map(summary, row):
    from pathlib import Path

    return Path(summary["truth"]["path"]) / f"{row['true_map']}.mrc"


def test_star_export_of_a_class_reads_back_with_exactly_its_particles(mixture_analysis, run_mixture, two_class):
    from hetfield.data.dataset import Dataset
    from hetfield.io.readers import read_particles
    from hetfield.train.rundir import RunDir

    out, s = mixture_analysis
    ds = Dataset.open(two_class / "dataset")
    cls = RunDir(run_mixture).latent(s["epoch"])["class_idx"]
    names = np.array(ds.particle_names)
    for c in (0, 1):
        path = out / "particles" / f"class_{c}.star"
        assert f"particles/class_{c}.star" in s["files"]["star"]
        table = read_particles(path, datadir=two_class / "sim")
        got = table.images.drop_duplicates("particle")["particle_name"].tolist()
        assert sorted(got) == sorted(names[cls == c].tolist())
        assert table.n_images == 6 * int((cls == c).sum())  # every tilt of every particle, nothing else


def test_mixture_report(mixture_analysis, report_checker):
    out, s = mixture_analysis
    tags = report_checker(out / "report.html")
    hrefs = {a["href"] for t, a in tags if t == "a" and "href" in a}
    assert {"volumes/class_0.mrc", "particles/class_0.star", "summary.json"} <= hrefs
    text = (out / "report.html").read_text()
    # the figures people look at first come first
    assert text.index("<h2>Classes</h2>") < text.index("Fraction of particles per class") < text.index("Class volumes") < text.index("ground truth")
    doc = json.loads((out / "summary.json").read_text())
    assert doc["run_id"] == s["run_id"] and doc["epoch"] == 6 and doc["kind"] == "analysis"
    for rel in doc["files"]["volumes"] + doc["files"]["star"] + doc["files"]["plots"]:
        assert (out / rel).is_file(), rel


def test_latent_run_full_analysis(run_latent, small, tmp_path, report_checker, mrc_checker):
    from hetfield.analysis.analyze import run_analysis

    out, s = run_analysis(run_latent, truth_dir=small / "sim", out=tmp_path / "a", k=8, n_traversal=4)
    g = s["groups"]["all"]
    assert s["embedding"] == "UMAP"
    assert g["kmeans"]["k"] == 8 and len(g["kmeans"]["centre_particles"]) == 8
    assert [t["pc"] for t in g["traversals"]] == [1, 2]
    assert len(s["files"]["volumes"]) == 1 + 8 + 2 * 4
    assert len(s["files"]["star"]) == 8
    tr = s["truth"]
    print("k-means(2) ARI", tr["kmeans_true_k"]["ari"], "|Spearman| PC1 vs t", tr["spearman_pc1_t"], tr["spearman_pc1_t_per_true_class"])
    assert -1 <= tr["kmeans_true_k"]["ari"] <= 1 and 0 <= tr["spearman_pc1_t"] <= 1
    assert set(tr["spearman_pc1_t_per_true_class"]) == {"0", "1"}
    assert len(tr["volumes_vs_truth"]) == 2  # k-means (k = 2) centre volumes matched to the true classes
    mrc_checker(out / "volumes/all/kmeans8/vol_000.mrc", s["pixel_size_A"], 16)
    # on-data centres: each centre particle is in its own cluster
    labels = np.loadtxt(out / "latent/all_kmeans8_labels.txt", dtype=int)
    for j, p in enumerate(g["kmeans"]["centre_particles"]):
        assert labels[p] == j
    # the k-means cluster exports partition the particles
    from hetfield.io.readers import read_particles

    names = [read_particles(out / f"particles/all_kmeans8_{j:03d}.star", check_images=False).images["particle_name"].unique().tolist() for j in range(8)]
    assert sorted(sum(names, [])) == sorted(set(sum(names, []))) and len(sum(names, [])) == 20
    report_checker(out / "report.html")


def test_one_class_and_auto_epoch(run_mixture, tmp_path):
    from hetfield.analysis.analyze import run_analysis

    out, s = run_analysis(run_mixture, class_idx="1", epoch="3", out=tmp_path / "c1")
    assert s["classes_analysed"] == [1] and s["epoch"] == 3
    assert s["files"]["volumes"] == ["volumes/class_1.mrc"]
    assert s["files"]["star"] == ["particles/class_1.star"]
    # --epoch auto without convergence.json: the last epoch, with a notice
    out, s = run_analysis(run_mixture, epoch="auto", out=tmp_path / "auto", convergence=None, class_idx=0)
    if not (run_mixture / "convergence" / "convergence.json").exists():
        assert s["epoch"] == 6 and any("no " in n and "convergence" in n for n in s["notes"])
    # with a convergence.json: its recommended epoch
    conv = tmp_path / "conv"
    conv.mkdir()
    (conv / "convergence.json").write_text(json.dumps({"run_id": s["run_id"], "recommended_epoch": 4, "verdict": "converged"}))
    out, s = run_analysis(run_mixture, epoch="auto", convergence=conv, out=tmp_path / "auto2", class_idx=0)
    assert s["epoch"] == 4 and s["epoch_choice"].startswith("auto")


def test_latent_run_against_maps_without_labels(run_latent, small, tmp_path):
    """A truth folder of maps only (tomo-sim-50S ships its class maps, no labels): a K = 1 run is
    decoded at the k-means centres of z, one per true map, not at the mean of z between the classes."""
    import shutil

    from hetfield.analysis.analyze import run_analysis

    maps = tmp_path / "maps"
    maps.mkdir()
    for j in (0, 1):
        shutil.copyfile(small / "sim" / "truth" / f"class_{j}.mrc", maps / f"true_{j}.mrc")
    _, s = run_analysis(run_latent, truth_dir=maps, out=tmp_path / "a", k=4, use_umap=False)
    tr = s["truth"]
    assert "kmeans_true_k" not in tr  # no labels, no label metrics
    assert sorted(r["volume"] for r in tr["volumes_vs_truth"]) == ["k-means(2) centre 0", "k-means(2) centre 1"]
    assert {r["true_map"] for r in tr["volumes_vs_truth"]} == {"true_0", "true_1"}  # one-to-one matching
    assert any("no particle labels" in n and "k-means(2)" in n for n in s["notes"])
