"""Training throughput (images/s) and peak memory for fixed synthetic settings.

    python benchmarks/train_throughput.py                 # the full grid on the default device
    python benchmarks/train_throughput.py --device cuda   # bf16 autocast on a GPU
    python benchmarks/train_throughput.py --quick         # box 32 only

Each configuration (box × tilts per particle × classes) runs in its own process so that the peak
resident memory it reports is its own. The data are random (throughput does not depend on
content) but laid out exactly like a prepared dataset: a memory-mapped ``images.npy`` read in
batches, with real CTF, dose and tilt arrays, so reading, batching, rendering and the backward pass
are all measured. Model: the defaults (fields 3×256, 64 Fourier features, encoder 2×256, zdim 8,
4 particles per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = [(box, tilts, k) for box in (32, 64) for tilts in (10, 40) for k in (1, 3)]


def _dataset(root: Path, box: int, tilts: int, n_particles: int):
    import numpy as np

    from hetfield.data.dataset import Dataset
    from hetfield.imaging.rotations import random_rotations, rotation_y

    rng = np.random.default_rng(0)
    n = n_particles * tilts
    images = np.lib.format.open_memmap(root / "images.npy", mode="w+", dtype=np.float32, shape=(n, box + 1, box + 1))
    images[:] = rng.standard_normal(images.shape, dtype=np.float32)
    images.flush()
    images = np.load(root / "images.npy", mmap_mode="r")
    order = np.array([0] + [s * i for i in range(1, tilts) for s in (1, -1)][: tilts - 1])
    stage = np.clip(order * 3.0, -60, 60)
    rot = np.concatenate([rotation_y(stage) @ a for a in random_rotations(n_particles, rng)]).astype(np.float32)
    f32 = lambda v: np.full(n, v, np.float32)  # noqa: E731
    arrays = {
        "particle": np.repeat(np.arange(n_particles), tilts),
        "particle_offsets": np.arange(0, n + 1, tilts),
        "rotation": rot,
        "origin_px": rng.uniform(-2, 2, (n, 2)).astype(np.float32),
        "pixel_size_A": f32(4.0),
        "voltage_kV": f32(300.0),
        "cs_mm": f32(2.7),
        "amplitude_contrast": f32(0.1),
        "defocus_u_A": rng.uniform(20000, 30000, n).astype(np.float32),
        "defocus_v_A": rng.uniform(20000, 30000, n).astype(np.float32),
        "defocus_angle_deg": f32(30.0),
        "phase_shift_deg": f32(0.0),
        "ctf_bfactor_A2": f32(0.0),
        "ctf_scale": f32(1.0),
        "dose_e_per_A2": np.tile(np.arange(tilts) * 3.0, n_particles).astype(np.float32),
        "stage_tilt_deg": np.tile(stage, n_particles).astype(np.float32),
        "ctf_premultiplied": np.zeros(n, bool),
        "dose_weighted": np.zeros(n, bool),
    }
    meta = {"box": box, "lattice": box + 1, "pixel_size_A": 4.0, "n_images": n, "n_particles": n_particles, "fingerprint": "bench", "has_poses": True}
    return Dataset(root, meta, images, arrays)


def run_one(box: int, tilts: int, k: int, device: str, steps: int) -> dict:
    import resource

    import torch

    from hetfield.data.batching import ParticleBatches
    from hetfield.train.config import TrainConfig
    from hetfield.train.devices import resolve_device
    from hetfield.train.factory import build_model
    from hetfield.train.optim import Optimizers

    cfg = TrainConfig(zdim=8, n_classes=k, device=device)
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        n_particles = cfg.batch_size * (steps + 3)
        ds = _dataset(Path(tmp), box, tilts, n_particles)
        model, _ = build_model(ds, cfg)
        model.to(dev).train()
        opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, 0.0)
        gen = torch.Generator(device=dev).manual_seed(0)
        amp = dev.type == "cuda"
        if amp:
            torch.backends.cuda.matmul.allow_tf32 = True
        loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=0, dose_mask=cfg.dose_mask)
        images = 0
        t0 = None
        for i, batch in enumerate(loader.epoch(0)):
            if i == 3:  # warm-up done (allocator, autotuning, first reads)
                if amp:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                if amp:
                    torch.cuda.reset_peak_memory_stats()
            batch = batch.to(dev)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                out = model(batch, beta=cfg.effective_beta, std_noise=cfg.std_noise, generator=gen)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            if t0 is not None:
                images += batch.n_images
        if amp:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    result = {
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)}, bf16)" if amp else f" ({torch.get_num_threads()} threads)"),
        "box": box,
        "tilts": tilts,
        "classes": k,
        "images_per_s": round(images / seconds, 1),
        "particles_per_s": round(images / tilts / seconds, 2),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if amp:
        result["peak_gpu_MB"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps per configuration")
    parser.add_argument("--quick", action="store_true", help="box 32 only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        box, tilts, k = map(int, args.one.split(","))
        print(json.dumps(run_one(box, tilts, k, args.device, args.steps)))
        return
    rows = []
    grid = [g for g in GRID if not args.quick or g[0] == 32]
    print(f"{'box':>4} {'tilts':>5} {'K':>2} {'images/s':>9} {'particles/s':>11} {'peak RSS MB':>11}  device", flush=True)
    for box, tilts, k in grid:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", f"{box},{tilts},{k}", "--device", args.device, "--steps", str(args.steps)],
            capture_output=True, text=True, env=dict(os.environ),
        )
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(proc.returncode)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        extra = f"  GPU {r['peak_gpu_MB']} MB" if "peak_gpu_MB" in r else ""
        print(f"{box:>4} {tilts:>5} {k:>2} {r['images_per_s']:>9} {r['particles_per_s']:>11} {r['peak_rss_MB']:>11}  {r['device']}{extra}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
