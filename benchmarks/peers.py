"""hetfield against cryoDRGN side by side: the same simulated SPA set, K = 1, matched decoders.

    python benchmarks/peers.py --peer-venv /tmp/peer-venv            # 2 interleaved rounds
    python benchmarks/peers.py --peer-venv /tmp/peer-venv --rounds 1 --workdir /tmp/peers

The peer runs from its own virtual environment (``PEER_VENV/bin/cryodrgn``, cryoDRGN 4.3.1 from
PyPI, installed over a CPU torch); without one the script says so and exits 0. tomoDRGN and
DRGN-AI (Hydra) are not on PyPI, so they are not compared here.

The set: ``hetfield simulate --mode spa`` (1 296 images, box 32, one class), prepared once for each
program (``hetfield setup``; cryoDRGN's own ``parse_pose_star``/``parse_ctf_star`` write its pose and
CTF files). Both train 2 epochs, batch 16, zdim 8, one thread each, decoders matched in size:
cryoDRGN ``--dec-layers 3 --dec-dim 256`` (input layer, 3 residual layers, output: 224 770
parameters, Gaussian features of D/2 = 16 frequencies) and hetfield ``--field-layers 4
--field-hidden 256 --pe-features 48`` (the same layout: 225 538). Both decode the same points: half
of the circular mask of radius D/2 (399 an image at box 32; the other half is Hermitian). The
encoders differ in kind (cryoDRGN: an MLP on the masked pixels, ``--enc-layers 3 --enc-dim 256``;
hetfield: its default), and cost < 2 % of a step in hetfield.

Runs alternate (peer, hetfield, peer, ...) so that both see the same load; ``/proc/loadavg`` is
recorded around each. Reported: images/s of each training epoch (the programs' own epoch timers,
start-up excluded), the command's wall time (start-up included) and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

N_IMAGES, BOX, BATCH, ZDIM, EPOCHS = 1296, 32, 16, 8, 2
PEER_ARGS = ["--zdim", str(ZDIM), "-b", str(BATCH), "-n", str(EPOCHS), "--enc-layers", "3", "--enc-dim", "256", "--dec-layers", "3", "--dec-dim", "256"]
OURS_ARGS = ["--zdim", str(ZDIM), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--field-layers", "4", "--field-hidden", "256", "--pe-features", "48", "--threads", "1"]


def load() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.exists() else "?"


def run(cmd: list[str], log: Path, env: dict) -> tuple[float, float]:
    """``(wall seconds, peak RSS MB)`` of one command (its own rusage, not the script's)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} … failed ({proc.returncode}); see {log}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def prepare(work: Path, peer: Path, env: dict) -> None:
    hetfield = [sys.executable, "-m", "hetfield.cli.app"]
    if not (work / "sim" / "particles.star").exists():
        subprocess.run(hetfield + ["simulate", str(work / "sim"), "--mode", "spa", "--n-particles", str(N_IMAGES), "--n-classes", "1", "--box", str(BOX), "--seed", "0", "--force"],
                       check=True, env=env, capture_output=True)
    if not (work / "dataset").exists():
        subprocess.run(hetfield + ["setup", str(work / "dataset"), "--particles", str(work / "sim" / "particles.star")], check=True, env=env, capture_output=True)
    star = str(work / "sim" / "particles.star")
    apix = "8"  # simulate's default pixel size
    for command, name in (("parse_pose_star", "poses.pkl"), ("parse_ctf_star", "ctf.pkl")):
        if not (work / name).exists():  # written by cryoDRGN itself, in its own format
            subprocess.run([str(peer / "bin" / "cryodrgn"), command, star, "-D", str(BOX), "--Apix", apix, "-o", str(work / name)], check=True, env=env, capture_output=True)


def peer_epochs(log: Path) -> list[float]:
    """cryoDRGN's per-epoch training time ("Epoch: N ... Finished in H:MM:SS.ffffff")."""
    out = []
    for h, m, s in re.findall(r"Epoch: \d+ .*Finished in (\d+):(\d+):([\d.]+)", log.read_text()):
        out.append(int(h) * 3600 + int(m) * 60 + float(s))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-venv", type=Path, default=Path(os.environ.get("PEER_VENV", "/tmp/peer-venv")))
    parser.add_argument("--workdir", type=Path, help="keep the data and runs here (default: a folder removed afterwards)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved (peer, hetfield) pairs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    peer = args.peer_venv
    if not (peer / "bin" / "cryodrgn").exists():
        print(f"no cryoDRGN at {peer}/bin/cryodrgn: skipped (make a venv with a CPU torch, then pip install cryodrgn==4.3.1)")
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="hetfield-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepare(work, peer, env)
        rows = []
        print(f"{'program':<16} {'round':>5} {'epoch images/s':>16} {'wall s':>7} {'peak RSS MB':>11} {'load':>11}", flush=True)
        for r in range(args.rounds):
            out = work / f"cryodrgn_{r}"
            shutil.rmtree(out, ignore_errors=True)
            before = load()
            cmd = [str(peer / "bin" / "cryodrgn"), "train_vae", str(work / "sim" / "particles.star"), "--datadir", str(work / "sim"),
                   "--poses", str(work / "poses.pkl"), "--ctf", str(work / "ctf.pkl"), *PEER_ARGS, "--no-analysis", "--max-threads", "1", "--num-workers", "0", "-o", str(out)]
            wall, rss = run(cmd, work / f"cryodrgn_{r}.log", env)
            rates = [N_IMAGES / s for s in peer_epochs(work / f"cryodrgn_{r}.log")]
            rows.append(dict(program="cryoDRGN 4.3.1", round=r, images_per_s=rates, wall_s=wall, peak_rss_MB=rss, load=f"{before}-{load()}"))
            run_dir = work / f"hetfield_{r}"
            shutil.rmtree(run_dir, ignore_errors=True)
            before = load()
            wall, rss = run([sys.executable, "-m", "hetfield.cli.app", "train", str(run_dir), "--data", str(work / "dataset"), *OURS_ARGS, "-q"], work / f"hetfield_{r}.log", env)
            rates = [json.loads(line)["images_per_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            rows.append(dict(program="hetfield", round=r, images_per_s=rates, wall_s=wall, peak_rss_MB=rss, load=f"{before}-{load()}"))
            for row in rows[-2:]:
                rate = "/".join(f"{v:.1f}" for v in row["images_per_s"])
                print(f"{row['program']:<16} {r:>5} {rate:>16} {row['wall_s']:>7.1f} {row['peak_rss_MB']:>11.0f} {row['load']:>11}", flush=True)
        mean = lambda name: sum(sum(x["images_per_s"]) / len(x["images_per_s"]) for x in rows if x["program"] == name) / args.rounds  # noqa: E731
        print(f"hetfield / cryoDRGN, epoch images/s: {mean('hetfield') / mean('cryoDRGN 4.3.1'):.2f}x")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
