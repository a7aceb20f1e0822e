"""benchmarks/train_throughput.py runs (tiny model, CPU, bf16 autocast) and reports what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


def test_the_throughput_benchmark_runs_on_cpu_and_counts_field_flops(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--tiny", "--boxes", "16", "--tilts", "3", "--classes", "3", "--steps", "2",
         "--precision", "bf16", "--peak-tflops", "100", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert (row["box"], row["classes"], row["precision"]) == (16, 3, "bf16-mixed")
    assert row["images_per_s"] > 0 and 0 < row["step_field_TFLOPs"] <= row["mlp_TFLOPs"] * 10
    assert row["bf16_peak_share"] > 0 and abs(row["bf16_peak_share"] - row["mlp_TFLOPs"] / 100) <= 1e-3 * row["bf16_peak_share"]


def test_field_flops_follow_the_shapes():
    sys.path.insert(0, str(BENCH.parent))
    try:
        from train_throughput import field_flops
    finally:
        sys.path.pop(0)
    from hetfield.model.fields import NeuralFields

    f = NeuralFields(16, n_classes=2, hidden=8, layers=3, n_features=4)  # P = 11
    fwd, total = field_flops(f, 10, 2)
    assert fwd == 2 * 10 * (2 * 11 * 8 + 2 * 2 * 8 * 8 + 2 * 8 * 2)
    assert total == 3 * fwd - 2 * 10 * 2 * 11 * 8


def test_the_class_cost_rows_run_sparse_decoding(tmp_path):
    """``--sparse``: one field per image, so the step's field FLOPs count one class (the ratio the
    README's K = 3 / K = 1 table reports comes from these rows)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--tiny", "--boxes", "16", "--tilts", "3", "--classes", "3", "--steps", "2", "--sparse", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert (row["classes"], row["decode"]) == (3, "sparse")
    assert row["images_per_s"] > 0 and row["images_per_cpu_s"] > 0 and row["peak_rss_MB"] > 0


def test_class_cost_prints_the_period_average_of_its_rows(tmp_path):
    """The README's "a period of the rule" rows: one full pass and class_full_pass_every − 1 sparse
    epochs, averaged in time per image, relative to K = 1."""
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH.with_name("class_cost.py")), "--boxes", "16", "--tilts", "3", "--steps", "1", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, full, sparse = (r["images_per_cpu_s"] for r in json.loads(out.read_text()))
    (line,) = [line for line in proc.stdout.splitlines() if "period 5" in line]
    avg, ratio = (float(v) for v in line.split()[5:7])
    assert abs(avg - 5 / (1 / full + 4 / sparse)) < 0.06 and abs(ratio - avg / one) < 0.006
