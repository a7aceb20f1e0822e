"""``hetfield convergence``: schema of convergence.json, the recommended epoch, the verdict rules."""

from __future__ import annotations

import json

import pytest

from hetfield.analysis.convergence import analysed_epochs
from hetfield.analysis.convergence_rule import THRESHOLDS, decide

NUM = {"type": ["number", "null"]}
SCHEMA = {
    "type": "object",
    "required": ["run_id", "kind", "saved_epochs", "analysed_epochs", "epochs", "representatives", "volumes", "thresholds",
                 "rule", "recommended_epoch", "verdict", "reasons", "files", "n_particles", "zdim", "n_classes"],
    "properties": {
        "run_id": {"type": "string", "minLength": 1},
        "kind": {"const": "convergence"},
        "saved_epochs": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "analysed_epochs": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "recommended_epoch": {"type": "integer", "minimum": 1},
        "verdict": {"enum": ["converged", "still moving", "signs of overfitting", "too few epochs"]},
        "reasons": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "rule": {"type": "string", "minLength": 80},
        "thresholds": {"type": "object", "additionalProperties": {"type": "number"}},
        "epochs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["epoch", "saved", "analysed"],
                "properties": {
                    "epoch": {"type": "integer"}, "saved": {"type": "boolean"}, "analysed": {"type": "boolean"},
                    "loss": NUM, "loss_rel_improvement": NUM, "latent_shift_median": NUM, "latent_shift_p90": NUM,
                    "class_change_fraction": NUM, "volume_cc_previous_min": NUM, "truth_cc_median": NUM,
                    "class_occupancy": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
        "volumes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["epoch", "representative", "class", "path"],
                "properties": {"cc_previous": {"type": "number", "minimum": -1, "maximum": 1}, "truth_cc": NUM, "path": {"type": "string"}},
            },
        },
        "files": {"type": "array", "items": {"type": "string"}},
    },
}


def _validate(doc):
    import jsonschema

    jsonschema.validate(doc, SCHEMA)


@pytest.mark.slow
def test_convergence_of_a_mixture_run(run_mixture, two_class, tmp_path, report_checker):
    from hetfield.analysis.convergence import run_convergence

    out, doc = run_convergence(run_mixture, out=tmp_path / "conv", every=2, truth_dir=two_class / "sim")
    on_disk = json.loads((out / "convergence.json").read_text())
    _validate(on_disk)
    assert on_disk["recommended_epoch"] in on_disk["saved_epochs"]
    assert on_disk["analysed_epochs"] == [1, 2, 4, 6]
    assert on_disk["n_classes"] == 2 and on_disk["zdim"] == 0
    # without a latent the representatives are the classes, one volume each per analysed epoch
    assert len(on_disk["volumes"]) == 2 * 4
    assert all(v.get("truth_cc") is not None for v in on_disk["volumes"])
    late = [v["truth_cc"] for v in on_disk["volumes"] if v["epoch"] == 6]
    assert min(late) > 0.9
    for rel in on_disk["files"]:
        assert (out / rel).is_file(), rel
    print("mixture run:", on_disk["recommended_epoch"], on_disk["verdict"], on_disk["reasons"])
    report_checker(out / "report.html")
    text = (out / "report.html").read_text()
    assert text.index("Recommended epoch") < text.index("Training")
    # analyze --epoch auto reads it
    from hetfield.analysis.analyze import run_analysis

    _, s = run_analysis(run_mixture, epoch="auto", convergence=out / "convergence.json", out=tmp_path / "an", class_idx=0)
    assert s["epoch"] == on_disk["recommended_epoch"]


@pytest.mark.slow
def test_convergence_of_a_latent_run(run_latent, tmp_path, report_checker):
    from hetfield.analysis.convergence import run_convergence

    out, doc = run_convergence(run_latent, out=tmp_path / "conv", every=2)
    _validate(doc)
    rows = {r["epoch"]: r for r in doc["epochs"]}
    assert rows[1].get("latent_shift_median") is None
    assert all(rows[e]["latent_shift_median"] >= 0 for e in doc["saved_epochs"][1:])
    assert doc["embedding"] == "UMAP" and 1 <= len(doc["representatives"]) <= 5
    assert all(r["particle"] is not None for r in doc["representatives"])
    assert len(doc["volumes"]) == len(doc["representatives"]) * len(doc["analysed_epochs"])
    report_checker(out / "report.html")


def _rows(losses, **series):
    rows = []
    for i, loss in enumerate(losses):
        e = i + 1
        r = {"epoch": e, "saved": True, "analysed": True, "loss": loss}
        if i:
            r["loss_rel_improvement"] = (losses[i - 1] - loss) / losses[i - 1]
        for key, values in series.items():
            if values[i] is not None:
                r[key] = values[i]
        rows.append(r)
    return rows


def test_rules_converged_still_moving_and_too_few():
    losses = [1.0, 0.8, 0.7, 0.698, 0.697, 0.6965]
    shifts = [None, 0.5, 0.2, 0.05, 0.03, 0.02]
    cc = [None, 0.9, 0.98, 0.995, 0.997, 0.998]
    d = decide(_rows(losses, latent_shift_median=shifts, volume_cc_previous_min=cc), list(range(1, 7)), list(range(1, 7)), 1, 4)
    assert d["verdict"] == "converged" and d["recommended_epoch"] == 3
    moving = [1.0, 0.8, 0.7, 0.6, 0.5, 0.4]
    d = decide(_rows(moving, latent_shift_median=shifts, volume_cc_previous_min=cc), list(range(1, 7)), list(range(1, 7)), 1, 4)
    assert d["verdict"] == "still moving" and d["recommended_epoch"] == 6 and "loss improved" in d["reasons"][0]
    d = decide(_rows([1.0, 0.9]), [1, 2], [1, 2], 1, 4)
    assert d["verdict"] == "too few epochs" and d["recommended_epoch"] == 2
    assert analysed_epochs([1, 2, 3, 4, 5, 6, 7], 5) == [1, 5, 7]
    assert analysed_epochs([3], 5) == [3]


def test_rules_signs_of_overfitting():
    e = list(range(1, 7))
    losses = [1.0, 0.8, 0.7, 0.698, 0.697, 0.6965]
    # correlation with the truth peaks at epoch 3, then falls
    d = decide(_rows(losses, truth_cc_median=[0.8, 0.9, 0.95, 0.93, 0.91, 0.90]), e, e, 1, 0)
    assert d["verdict"] == "signs of overfitting" and d["recommended_epoch"] == 3
    # validation loss rises while the training loss falls
    d = decide(_rows(losses, val_data_loss=[1.0, 0.85, 0.80, 0.82, 0.84, 0.86]), e, e, 1, 0)
    assert d["verdict"] == "signs of overfitting" and d["recommended_epoch"] == 3 and "validation" in d["reasons"][0]
    # class changes spike after having settled
    d = decide(_rows(losses, class_change_fraction=[None, 0.3, 0.01, 0.0, 0.12, 0.0]), e, e, 2, 0)
    assert d["verdict"] == "signs of overfitting" and d["recommended_epoch"] == 4
    # the training loss keeps falling clearly while the validation loss stalled
    falling = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    d = decide(_rows(falling, val_data_loss=[1.0, 0.9, 0.85, 0.84, 0.8405, 0.8401]), e, e, 1, 0)
    assert d["verdict"] == "signs of overfitting" and d["recommended_epoch"] == 4 and "validation" in d["reasons"][0]
    # … but a falling loss with volumes that no longer change at low resolution is just training
    d = decide(_rows(falling, volume_cc_previous_min=[None, 0.9, 0.999, 0.999, 0.999, 0.999]), e, e, 1, 0)
    assert d["verdict"] == "still moving"
    assert THRESHOLDS["volume_cc"] == 0.99
