"""tomo-sim-50S (../shared/data/tomo-sim-50S): what K = 1 (encoder) and K = 2 recover, per seed.

    python benchmarks/tomo_sim_50s.py                       # K = 1, zdim 4, 20 epochs, seeds 0 1 2
    python benchmarks/tomo_sim_50s.py --zdim 2 8 --k2       # more latent sizes, and the K = 2 mixture
    python benchmarks/tomo_sim_50s.py --zdim --k2 --epochs 20       # the K = 2 mixture alone
    python benchmarks/tomo_sim_50s.py --set beta=0.25 --out /tmp/b   # any training option

Prepares the two-class set as tomoDRGN's users would (``setup --uninvert-data``), trains with the
defaults (plus ``--set`` overrides) and reports, per run and per epoch checkpoint: k-means(2) ARI on
``z_mu`` against the truth (particle names ``000_*`` = class D, ``001_*`` = class E), the mixture's
argmax ARI (K = 2), and seconds per epoch; then, for the last epoch, the masked correlation and FSC
of the volumes against the true maps as ``hetfield analyze --truth`` computes them (K = 1: volumes at
the k-means(2) centres of z, one per true map, each matched to one). First it prints the data's own
bound on that correlation: the cc a per-shell Wiener estimate of each true class reaches from its
images at the true poses. Writes ``OUT/results.json`` and prints one line per run.

Figures (3 seeds, 2 shared CPU cores) and what else was tried: docs/internals.md, "The K = 1 latent".
Compare with the start before issue 13: ``--set latent_start=none field_prior=false beta=0.25``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("HETFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "tomo-sim-50S"


def _labels(ds):
    import numpy as np

    names = ds.table.groupby("particle")["particle_name"].first().sort_index()
    return np.array([0 if str(n).startswith("000_") else 1 for n in names])


def _scores(run: Path, ds, truth) -> list[dict]:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        lat = np.load(run / f"latent.{m['epoch']}.npz")
        row = {"epoch": m["epoch"], "seconds": m["seconds"]}
        if "z_mu" in lat:
            z = lat["z_mu"]
            row["kmeans_ari"] = round(float(adjusted_rand_score(truth, KMeans(2, n_init=10, random_state=0).fit_predict(z))), 3)
        if lat["class_probs"].shape[1] > 1:
            row["class_ari"] = round(float(adjusted_rand_score(truth, lat["class_idx"])), 3)
        rows.append(row)
    return rows


def _maps(run: Path, data: Path, out: Path) -> list[dict]:
    from hetfield.analysis.analyze import run_analysis

    _, summary = run_analysis(run, epoch="last", truth_dir=DATA, out=out, use_umap=False, device="cpu", data=data)
    res = summary.get("truth", {})
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "fsc"} | {"fsc": [round(x, 3) for x in r["fsc"]]}
            for r in res.get("volumes_vs_truth", [])]


def _cc_bound(ds, truth) -> dict:
    """Per true class: the masked cc with its true map that a per-shell Wiener estimate reaches from
    the class's own images at the true poses (metrics.wiener_correlation_bound of their half-map FSC):
    what the data allow a linear estimate, however well the classes are found."""
    import mrcfile
    import numpy as np

    from hetfield.analysis.backproject import backproject
    from hetfield.analysis.metrics import soft_sphere_mask, wiener_correlation_bound

    out = {}
    for label, name in enumerate("DE"):
        result = backproject(ds, particles=np.flatnonzero(truth == label))
        true_map = mrcfile.read(DATA / f"10076_class{name}_32.mrc")
        out[name] = round(wiener_correlation_bound(true_map, result.fsc.fsc, soft_sphere_mask(ds.box)), 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_tomo_sim_50s"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--zdim", type=int, nargs="*", default=[4], help="K = 1 latent sizes; none with --k2: the mixture alone")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--k2", action="store_true", help="also train the K = 2 mixture (zdim 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="training options (YAML values)")
    args = ap.parse_args()
    if not args.zdim and not args.k2:
        ap.error("--zdim with no values trains no K = 1 run: add --k2 for the mixture alone")
    if not DATA.is_dir():
        print(f"tomo-sim-50S not found at {DATA}; set HETFIELD_SHARED_DATA", file=sys.stderr)
        return 2
    import yaml

    from hetfield.data.dataset import Dataset
    from hetfield.data.preprocess import PreprocessSettings, prepare_dataset
    from hetfield.train.config import TrainConfig
    from hetfield.train.loop import train

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "dataset"
    if not (data / "dataset.yaml").is_file():
        prepare_dataset(data, DATA / "10076_both_32_sim.star", datadir=DATA, settings=PreprocessSettings(invert=False))
    ds = Dataset.open(data)
    truth = _labels(ds)
    bound = _cc_bound(ds, truth)
    print(f"the data's bound on the map cc (per-shell Wiener estimate of each true class at the true poses): {bound}", flush=True)
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    settings = [("k1", dict(zdim=z)) for z in args.zdim] + ([("k2", dict(zdim=0, n_classes=2))] if args.k2 else [])
    results = []
    for name, kw in settings:
        for seed in args.seeds:
            tag = f"{name}_z{kw['zdim']}_s{seed}"
            run = args.out / tag
            cfg = TrainConfig(**{**kw, "epochs": args.epochs, "seed": seed, "threads": args.threads, "device": "cpu", **extra}).validate()
            t0 = time.perf_counter()
            train(run, data, cfg, force=True)
            rows = _scores(run, ds, truth)
            maps = _maps(run, data, args.out / f"{tag}.analysis")
            res = {"run": tag, "settings": {**kw, **extra, "seed": seed}, "wall_s": round(time.perf_counter() - t0, 1), "epochs": rows, "maps": maps,
                   "map_cc_bound": bound}
            results.append(res)
            last = rows[-1]
            key = "class_ari" if "class_ari" in last else "kmeans_ari"
            per_epoch = sorted(r["seconds"] for r in rows)[len(rows) // 2]
            print(f"{tag}: {key} at epochs 5/10/20 = {[r.get(key) for r in rows if r['epoch'] in (5, 10, 20)]}, "
                  f"median {per_epoch:.1f} s/epoch, map cc {[m['cc'] for m in maps]}", flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
