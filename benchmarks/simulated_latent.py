"""What the K = 1 tilt-set encoder's latent holds on simulated tilt series (issue 13's second goal), per seed.

    python benchmarks/simulated_latent.py                    # both sets, zdim 4, 20 epochs, seeds 0 1 2
    python benchmarks/simulated_latent.py --sets motion --epochs 10 --set latent_start=none

Two sets of 240 particles × 11 tilts at box 32 and SNR 0.1 (``hetfield simulate``, data seed 0):
``motion`` (one class whose domain swings with t) and ``three`` (three compositional classes, each
with its motion). Trains the defaults (plus ``--set`` overrides) with one field and reports, per
epoch checkpoint: |Spearman(PC1 of z_mu, t)| (per true class on ``three``) and, on ``three``,
k-means(3) ARI on z_mu against the true classes. Writes ``OUT/results.json``.

Figures: docs/internals.md, "The K = 1 latent".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SETS = {
    "motion": dict(n_particles=240, n_classes=1, snr=0.1, motion=True, seed=0),
    "three": dict(n_particles=240, n_classes=3, snr=0.1, motion=True, seed=0),
}


def _scores(run: Path, truth) -> list[dict]:
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    classes = truth["class"].to_numpy()
    t = truth["t"].to_numpy()
    k = len(np.unique(classes))
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        epoch = json.loads(line)["epoch"]
        z = np.load(run / f"latent.{epoch}.npz")["z_mu"]
        row = {"epoch": epoch, "spearman_pc1_t": []}
        for c in range(k):
            sel = classes == c
            pc1 = PCA(1).fit_transform(z[sel])[:, 0]
            row["spearman_pc1_t"].append(round(float(abs(spearmanr(pc1, t[sel]).statistic)), 3))
        if k > 1:
            row["kmeans_ari"] = round(float(adjusted_rand_score(classes, KMeans(k, n_init=10, random_state=0).fit_predict(z))), 3)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_simulated_latent"))
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--zdim", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="training options (YAML values)")
    args = ap.parse_args()
    import pandas as pd
    import yaml

    from hetfield.data.preprocess import prepare_dataset
    from hetfield.data.simulate import simulate
    from hetfield.train.config import TrainConfig
    from hetfield.train.loop import train

    args.out.mkdir(parents=True, exist_ok=True)
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    results = []
    for name in args.sets:
        sim, data = args.out / f"{name}_sim", args.out / f"{name}_dataset"
        if not (sim / "truth").is_dir():
            simulate(sim, **SETS[name])
        if not (data / "dataset.yaml").is_file():
            prepare_dataset(data, sim / "particles.star")
        truth = pd.read_csv(sim / "truth" / "particles.csv").sort_values("particle")
        for seed in args.seeds:
            tag = f"{name}_z{args.zdim}_s{seed}"
            run = args.out / tag
            cfg = TrainConfig(**{"zdim": args.zdim, "epochs": args.epochs, "seed": seed, "threads": args.threads, "device": "cpu", **extra}).validate()
            t0 = time.perf_counter()
            train(run, data, cfg, force=True)
            rows = _scores(run, truth)
            results.append({"run": tag, "settings": {"zdim": args.zdim, **extra, "seed": seed}, "wall_s": round(time.perf_counter() - t0, 1), "epochs": rows})
            rho = [min(r["spearman_pc1_t"]) for r in rows]
            ari = [r["kmeans_ari"] for r in rows if "kmeans_ari" in r]
            print(f"{tag}: min over classes of |Spearman(PC1, t)| from {min(rho):.3f} to {max(rho):.3f} (last {rho[-1]:.3f})"
                  + (f", k-means ARI from {min(ari):.3f} to {max(ari):.3f} (last {ari[-1]:.3f})" if ari else ""), flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
