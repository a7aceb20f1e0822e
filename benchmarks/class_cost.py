"""What a mixture costs: images/s of K = 1 and K = 3 (every class decoded, and sparse class decoding's
steady state), the K = 3 / K = 1 ratios and peak memory, at box 32 and 64.

    python benchmarks/class_cost.py                  # box 32 and 64, 10 tilts, K = 1 and 3
    python benchmarks/class_cost.py --boxes 32 --steps 6 --threads 1

Each row runs in its own process (``train_throughput.py --one``), so its peak RSS is its own. The
sparse row decodes one class per particle: what :mod:`hetfield.train.class_decoding` does once the
posteriors are confident (every ``class_full_pass_every``-th epoch after the hold is a full pass, so a
run averages the two rows: ``(full + (N-1)·sparse)/N`` in time per image). ``--keep`` adds a full
pass that keeps every class's activations for the backward (``--no-field-recompute``): faster, K×
the activations. ``images/CPU-s`` divides
by the CPU time the process got, the steadier figure on a shared machine; the machine's load
(``/proc/loadavg``) is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from hetfield.train.config import TrainConfig

BENCH = Path(__file__).with_name("train_throughput.py")


def measure(box: int, tilts: int, k: int, steps: int, sparse: bool, env: dict, keep: bool = False) -> dict:
    cmd = [sys.executable, str(BENCH), "--one", f"{box},{tilts},{k},auto", "--device", "cpu", "--steps", str(steps)] + (["--sparse"] if sparse else []) + (["--keep"] if keep else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(proc.returncode)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load"] = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", default="32,64")
    parser.add_argument("--tilts", type=int, default=10)
    parser.add_argument("--classes", type=int, default=3, help="K of the mixture rows")
    parser.add_argument("--steps", type=int, default=8, help="timed optimiser steps per row")
    parser.add_argument("--threads", type=int, help="torch CPU threads (OMP_NUM_THREADS) for every row")
    parser.add_argument("--no-sparse", action="store_true", help="skip the sparse rows (e.g. to measure a tree without sparse decoding)")
    parser.add_argument("--keep", action="store_true", help="also a full pass keeping every class's activations (--no-field-recompute)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    k = args.classes
    rows = []
    print(f"{'box':>4} {'tilts':>5} {'K':>2} {'decode':>10} {'images/s':>9} {'images/CPU-s':>12} {'vs K=1':>7} {'peak RSS MB':>11} {'load':>5}", flush=True)
    period = TrainConfig().class_full_pass_every
    for box in (int(b) for b in args.boxes.split(",")):
        one = None
        by_kind = {}
        for classes, sparse, keep in ((1, False, False), (k, False, False)) + (((k, False, True),) if args.keep else ()) + (() if args.no_sparse else ((k, True, False),)):
            r = measure(box, args.tilts, classes, args.steps, sparse, env, keep)
            rows.append(r)
            one = one or r
            by_kind[(classes, sparse, keep)] = r["images_per_cpu_s"]
            ratio = r["images_per_cpu_s"] / one["images_per_cpu_s"]
            print(f"{box:>4} {args.tilts:>5} {classes:>2} {r['decode']:>10} {r['images_per_s']:>9} {r['images_per_cpu_s']:>12} {ratio:>7.2f} {r['peak_rss_MB']:>11} {r['load']:>5}", flush=True)
        if (k, True, False) in by_kind:
            # one full pass every `period` epochs, sparse ones between: the average in time per image
            avg = period / (1 / by_kind[(k, False, False)] + (period - 1) / by_kind[(k, True, False)])
            print(f"{box:>4} {args.tilts:>5} {k:>2} {'period ' + str(period):>10} {'':>9} {avg:>12.1f} {avg / one['images_per_cpu_s']:>7.2f}"
                  "   (1 full pass + sparse epochs, class_full_pass_every)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
