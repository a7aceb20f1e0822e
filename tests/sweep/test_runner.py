"""The embedded sweep runner and the summary, end to end on a small simulated dataset."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hetfield.sweep.plan import make_plan
from hetfield.sweep.runner import run_sweep, run_status
from hetfield.train.rundir import RunDir

from helpers import simulate_and_setup

pytestmark = pytest.mark.slow

BASE = {"epochs": 5, "field_hidden": 96, "device": "cpu"}  # threads: the worker's share (conftest)
# On two-class data a mixture of two fields is clearly better than one homogeneous field.
GOOD, WORSE = "beta0-zdim0-k2", "beta0-zdim0-k1"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    d = simulate_and_setup(root, "d", n_particles=120, n_classes=2, n_tilts=9, box=24, snr=1.0, seed=11)
    plan = root / "plan.csv"
    plan.write_text(make_plan(zdim="0", n_classes="1,2", base=BASE).to_csv())
    log: list[str] = []
    result = run_sweep(plan, d / "dataset", root / "out", truth=d / "sim" / "truth", echo=log.append, use_umap=False, analysis_k=4)
    return {"root": root, "data": d, "plan": plan, "result": result, "log": log}


def test_summary_ranks_the_clearly_better_run_first(sweep):
    out = sweep["root"] / "out"
    doc = json.loads((out / "summary" / "summary.json").read_text())
    assert doc["recommended"] == GOOD and doc["ranking"][0] == GOOD
    assert doc["best_by_truth"] == GOOD and doc["truth_agrees"]
    rows = {r["run_id"]: r for r in doc["runs"]}
    assert rows[GOOD]["class_ari"] > 0.9 and rows[GOOD]["min_class_fraction"] > 0.3
    assert rows[GOOD]["val_loss_at_recommended"] < rows[WORSE]["val_loss_at_recommended"]
    assert "validation loss" in doc["rule"]
    table = list(csv.DictReader((out / "summary" / "summary.csv").read_text().splitlines()))
    assert [r["run_id"] for r in table] == doc["ranking"] and table[0]["rank"] == "1"
    # each run's training shows its progress, one line per epoch, tagged with the run
    for rid in (GOOD, WORSE):
        epochs = [line for line in sweep["log"] if line.startswith(f"[") and f"] {rid}: epoch " in line]
        assert len(epochs) == BASE["epochs"], (rid, sweep["log"])
    # the sweep ends by naming the run to use and where its analysis is
    last = sweep["log"][-1]
    good_row = next(r for r in doc["runs"] if r["run_id"] == GOOD)
    assert last.startswith(f"recommended: {GOOD} (") and f"epoch {good_row['recommended_epoch']}, " in last
    assert last.endswith("report.html") and (out / "runs" / GOOD).as_posix() in last


def test_summary_page_is_self_contained(sweep):
    page = sweep["root"] / "out" / "summary" / "summary.html"

    class Refs(HTMLParser):
        imgs, hrefs = [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.imgs.append(a["src"])
            if tag == "a":
                self.hrefs.append(a["href"])

    text = page.read_text()
    p = Refs()
    p.feed(text)
    assert p.imgs and all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert p.hrefs and all((page.parent / h).resolve().is_file() for h in p.hrefs)
    # every run id links to its analysis report, and the convergence report is linked beside it
    runs = sweep["root"] / "out" / "runs"
    for rid in (GOOD, WORSE):
        targets = {(page.parent / h).resolve() for h in p.hrefs}
        assert any(t.name == "report.html" and t.parent.parent == (runs / rid).resolve() and t.parent.name.startswith("analysis.") for t in targets), rid
        assert (runs / rid / "convergence" / "report.html").resolve() in targets, rid
        assert f">{rid}</a>" in text
    # the wide table scrolls in its own box; headers are words with units, not keys
    assert '<div class="scroll"><table>' in text and "overflow-x:auto" in text
    assert "<th>latent dimensions</th>" in text and "<th>zdim</th>" not in text
    # the recommended (two-class) run's class volumes are shown and linked
    assert f"Class volumes of the recommended run ({GOOD}" in text
    mrcs = [h for h in p.hrefs if h.endswith(".mrc")]
    assert sorted(Path(h).name for h in mrcs) == ["class_0.mrc", "class_1.mrc"]


def test_finished_runs_are_skipped_and_partial_ones_resumed(sweep, tmp_path):
    out = sweep["root"] / "out"
    good = RunDir(out / "runs" / GOOD)
    stamp = good.weights_path(5).stat().st_mtime_ns
    # one run lost its analysis, another is planned with more epochs than it has
    conv = json.loads((out / "runs" / WORSE / "convergence" / "convergence.json").read_text())
    import shutil

    shutil.rmtree(out / "runs" / WORSE / f"analysis.{conv['recommended_epoch']}")
    assert not run_status(out / "runs" / WORSE, 5).analysed
    log: list[str] = []
    run_sweep(sweep["plan"], sweep["data"] / "dataset", out, truth=sweep["data"] / "sim" / "truth", echo=log.append, use_umap=False, analysis_k=4)
    assert any(GOOD in line and "skipped" in line for line in log)
    assert any(WORSE in line and "analysis" in line for line in log)
    assert not any(WORSE in line and "training" in line for line in log)
    assert good.weights_path(5).stat().st_mtime_ns == stamp
    assert run_status(out / "runs" / WORSE, 5).done

    longer = tmp_path / "plan.csv"
    longer.write_text(make_plan(zdim="0", n_classes="2", base={**BASE, "epochs": 6}).to_csv())
    log = []
    run_sweep(longer, sweep["data"] / "dataset", out, echo=log.append, use_umap=False, analysis_k=4)
    assert any("resuming" in line for line in log)
    assert good.epochs()[-1] == 6 and len(good.metrics()) == 6
