"""Ab initio end to end on simulated data (issue 15's figures): class ARI, median pose error after the
best global rotation (either hand; also per learned class, each class's field having its own frame),
and the maps' correlation with the truth after the same alignment.

    python benchmarks/abinit.py --out /tmp/abinit             # SPA 1 000 particles and tilt 200, K = 2
    python benchmarks/abinit.py --cases spa1 --out /tmp/abinit  # homogeneous SPA (K = 1, one class)

Cases: ``spa`` (two classes, box 32, SNR 0.5, 1 000 particles), ``tilt`` (two classes, 200 particles of
11 tilts), ``spa-subunits`` and ``tilt-subunits`` (the same, with classes that differ by a subunit,
``simulate --classes-differ-by subunits``, instead of by where the domain sits: those two are close
under a free rotation), ``spa1`` (one class without motion, 1 000 particles, K = 1). Input poses are in the files
(the simulator writes them) and ignored by ``--pose-estimation abinit``. Prints one JSON line per
case with the machine's load average (the benchmark machine is shared).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CASES = {
    "spa": dict(sim=dict(mode="spa", n_particles=1000, n_classes=2, box=32, snr=0.5), k=2),
    "tilt": dict(sim=dict(mode="tilt", n_particles=200, n_classes=2, box=32, snr=0.5), k=2),
    "spa-subunits": dict(sim=dict(mode="spa", n_particles=1000, n_classes=2, box=32, snr=0.5, classes_differ_by="subunits"), k=2),
    "tilt-subunits": dict(sim=dict(mode="tilt", n_particles=200, n_classes=2, box=32, snr=0.5, classes_differ_by="subunits"), k=2),
    "spa1": dict(sim=dict(mode="spa", n_particles=1000, n_classes=1, box=32, snr=0.5, motion=False), k=1),
}


def run_case(name: str, root: Path, epochs: int, search_epochs: int, seed: int) -> dict:
    from hetfield.analysis.analyze import run_analysis
    from hetfield.data.preprocess import prepare_dataset
    from hetfield.data.simulate import simulate
    from hetfield.train.config import TrainConfig
    from hetfield.train.loop import train

    case = CASES[name]
    out = root / name
    if not (out / "dataset").is_dir():
        simulate(out / "sim", seed=seed, **case["sim"])
        prepare_dataset(out / "dataset", out / "sim" / "particles.star")
    cfg = TrainConfig(zdim=0, n_classes=case["k"], pose_estimation="abinit", epochs=epochs, pose_search_epochs=search_epochs, threads=1, seed=seed)
    t0 = time.perf_counter()
    train(out / "run", out / "dataset", cfg, force=True)
    seconds = time.perf_counter() - t0
    _, summary = run_analysis(out / "run", epoch="last", truth_dir=out / "sim", use_umap=False, device="cpu")
    truth = summary.get("truth", {})
    poses = truth.get("poses", {})
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return {
        "case": name, **case["sim"], "k": case["k"], "epochs": epochs, "pose_search_epochs": search_epochs,
        "class_ari": truth.get("class_ari"),
        "median_pose_error_deg": poses.get("median_error_deg"),
        "per_class_median_pose_error_deg": poses.get("per_class_median_error_deg"),
        "fraction_within_10deg": poses.get("fraction_within_10deg"),
        "map_cc": [round(r["cc"], 3) for r in truth.get("volumes_vs_truth", [])],
        "class_occupancy": rows[-1].get("class_occupancy"),
        "search_s_per_image_class": [round(r["search_s_per_image_class"], 4) for r in rows if "search_s_per_image_class" in r],
        "train_seconds": round(seconds, 1),
        "load_avg": open("/proc/loadavg").read().split()[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default="spa,tilt")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--pose-search-epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for name in args.cases.split(","):
        print(json.dumps(run_case(name, args.out, args.epochs, args.pose_search_epochs, args.seed)), flush=True)


if __name__ == "__main__":
    main()
