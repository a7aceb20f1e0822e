"""``sweep summarize`` says which runs are damaged, and never ranks one whose numbers it cannot trust."""

from __future__ import annotations

import json
import shutil

import yaml

from helpers import run_cli
from mutations import truncate


def _copy_run(pristine, dest, run_id):
    shutil.copytree(pristine / "run", dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["run_id"] = run_id
    cfg["dataset"]["path"] = str(pristine / "ds")
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def test_damaged_runs_are_named_and_not_ranked(pristine, tmp_path):
    sweep = tmp_path / "sweep"
    _copy_run(pristine, sweep / "good", "good")
    bad = _copy_run(pristine, sweep / "bad", "bad")
    torn = _copy_run(pristine, sweep / "torn", "torn")
    truncate("latent.2.npz", 0.4)(bad)
    with open(torn / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "loss": 0.1\n')  # a torn line: flagged, the run is still ranked
    # The damaged run would otherwise win: it has the lowest loss.
    lines = (bad / "metrics.jsonl").read_text().splitlines()
    (bad / "metrics.jsonl").write_text("\n".join(json.dumps({**json.loads(l), "data_loss": 1e-6}) for l in lines) + "\n")

    proc = run_cli("sweep", "summarize", sweep, "--out", tmp_path / "summary")
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("hetfield: warning:")]
    assert any("bad" in w and "latent.2.npz" in w and "unreadable" in w for w in warnings), proc.stderr
    assert any("torn" in w and "metrics.jsonl" in w and "line(s) 3" in w for w in warnings), proc.stderr
    doc = json.loads((tmp_path / "summary" / "summary.json").read_text())
    rows = {r["run_id"]: r for r in doc["runs"]}
    assert rows["bad"]["excluded"] and "bad" not in doc["ranking"]
    assert not rows["torn"]["excluded"] and "torn" in doc["ranking"]
    assert doc["recommended"] in ("good", "torn")
    assert any(n.startswith("bad is not ranked") for n in doc["notes"])
    page = (tmp_path / "summary" / "summary.html").read_text()
    assert "Damaged runs" in page and "latent.2.npz" in page
    table = (tmp_path / "summary" / "summary.csv").read_text()
    assert "problems" in table.splitlines()[0]


def test_a_stale_convergence_is_not_trusted(pristine, tmp_path):
    sweep = tmp_path / "sweep"
    good = _copy_run(pristine, sweep / "good", "good")
    other = _copy_run(pristine, sweep / "other", "other")
    (other / "convergence").mkdir()
    (other / "convergence" / "convergence.json").write_text(json.dumps({"run_id": "other", "recommended_epoch": 9, "verdict": "converged"}))
    proc = run_cli("sweep", "summarize", sweep, "--out", tmp_path / "summary")
    assert proc.returncode == 0, proc.stderr
    assert "recommends epoch 9" in proc.stderr and "hetfield convergence" in proc.stderr
    doc = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert doc["ranking"] == ["good"] and good.name == "good"
