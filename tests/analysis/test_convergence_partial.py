"""``convergence`` on runs whose metrics.jsonl goes past the last checkpoint (issue 9, item 4).

That happens with ``--checkpoint-every > 1`` and whenever training is killed between writing an
epoch's metrics line and its checkpoint. It used to end in ``StopIteration``.
"""

from __future__ import annotations

import json
import shutil

from hetfield.analysis.convergence_rule import decide

from helpers import run_cli


def _rows(losses: dict[int, float], saved: set[int]) -> list[dict]:
    rows, prev = [], None
    for e in sorted(losses):
        r = {"epoch": e, "saved": e in saved, "analysed": e in saved, "loss": losses[e]}
        if prev is not None:
            r["loss_rel_improvement"] = (prev - losses[e]) / prev
        prev = losses[e]
        rows.append(r)
    return rows


def test_unsaved_epochs_after_the_last_checkpoint_still_moving():
    # Saved 2, 4, 6; the metrics go on to epoch 7, which still improves by 50 %.
    rows = _rows({1: 2.0, 2: 1.0, 3: 0.999, 4: 0.998, 5: 0.997, 6: 0.996, 7: 0.5}, {2, 4, 6})
    d = decide(rows, [2, 4, 6], [2, 4, 6], k=1, zdim=0)
    assert d["recommended_epoch"] == 6 and d["verdict"] == "still moving"
    assert any("epoch 7" in r for r in d["reasons"])


def test_unsaved_epochs_that_settle_do_not_change_the_recommendation():
    rows = _rows({1: 2.0, 2: 1.0, 3: 0.999, 4: 0.998, 5: 0.997, 6: 0.996, 7: 0.995}, {2, 4, 6})
    d = decide(rows, [2, 4, 6], [2, 4, 6], k=1, zdim=0)
    assert d["verdict"] == "converged" and d["recommended_epoch"] in (2, 4)


def test_convergence_cli_with_metrics_after_the_last_checkpoint(run_latent, tmp_path):
    """The kill between the two writes, as a user meets it: exit 0, the last saved epoch, a note saying why."""
    run = tmp_path / "run"
    shutil.copytree(run_latent, run, ignore=shutil.ignore_patterns("convergence", "analysis.*"))
    last = max(json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines())
    with open(run / "metrics.jsonl", "a") as fh:  # two more epochs trained, their checkpoints never written
        for e, loss in ((last + 1, 0.5), (last + 2, 0.25)):
            fh.write(json.dumps({"epoch": e, "loss": loss, "data_loss": loss, "kl": 0.0}) + "\n")
    proc = run_cli("convergence", run, "--no-umap", "-q", "--every", "10")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads((run / "convergence" / "convergence.json").read_text())
    assert doc["recommended_epoch"] == last and doc["verdict"] == "still moving"
    assert [r["epoch"] for r in doc["epochs"]][-2:] == [last + 1, last + 2]
    assert any("after the last checkpoint" in n and "--load latest" in n for n in doc["notes"])
