"""Training throughput (images/s), the field MLP's achieved TFLOP/s, and peak memory.

    python benchmarks/train_throughput.py                 # the CPU grid (fp32)
    python benchmarks/train_throughput.py --device cuda   # box 64 and 128, K = 1 and 3, bf16 and fp32
    python benchmarks/train_throughput.py --quick         # box 32 only
    python benchmarks/train_throughput.py --device cpu --tiny --boxes 16 --tilts 3 --steps 2 --precision fp32,bf16

The field MLP's FLOPs are counted from its shapes (per decoded point and class: 2·P·H for the first
layer, 2·H·H per hidden layer, 2·H·2 out; backward twice the forward, less the first layer's input
gradient, which nothing needs) and reported two ways: ``step_field_TFLOPs`` over the whole step's
time (what training gets), ``mlp_TFLOPs`` from the field forward+backward alone on the same shapes
(what the MLP itself reaches). ``bf16_peak_share`` divides by the GPU's dense bf16 peak (table below
by device name, or ``--peak-tflops``).

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
CUDA_BOXES, CUDA_TILTS = (64, 128), (40,)

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment, first match wins.
BF16_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]
TINY = dict(field_hidden=32, field_layers=2, pe_features=16, enc_hidden=32, enc_layers=1, enc_embed=16, enc_grid=4, zdim=2)


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def field_flops(fields, n_points: int, k: int) -> tuple[float, float]:
    """``(forward, forward + backward)`` FLOPs of the K field MLPs on ``n_points`` points."""
    p, h, layers = fields.features.out_dim, fields.hidden, fields.layers
    first, hidden, out = 2 * p * h, 2 * h * h * (layers - 1), 2 * h * 2
    fwd = k * n_points * (first + hidden + out)
    return fwd, 3 * fwd - k * n_points * first


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


def _mlp_tflops(model, q, z, k: int, dev, precision: str, repeats: int = 5) -> float:
    """TFLOP/s of the fields' forward+backward alone on ``q`` (the shapes of a training batch)."""
    import torch

    from hetfield.train.devices import autocast

    def once():
        with autocast(dev, precision):
            out = model.fields(q, z)
        out.float().square().mean().backward()

    once()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return repeats * field_flops(model.fields, q.shape[0] * q.shape[1], k)[1] / (time.perf_counter() - t0) / 1e12


def run_one(
    box: int, tilts: int, k: int, device: str, steps: int, precision: str = "auto", tiny: bool = False, peak_tflops: float | None = None, sparse: bool = False,
    keep: bool = False,
) -> dict:
    """``sparse`` (K > 1): each particle decoded by one class (``particle % K``), the steady state of
    sparse class decoding once posteriors are confident (train.class_decoding). ``keep``: every
    class's activations kept for the backward (``--no-field-recompute``)."""
    import resource

    import torch


    from hetfield.data.batching import ParticleBatches
    from hetfield.train.config import TrainConfig
    from hetfield.train.devices import autocast, resolve_device, resolve_precision, set_up_torch, to_device
    from hetfield.train.factory import build_model
    from hetfield.train.optim import Optimizers

    # field_recompute only when asked: the same script then also measures older trees
    cfg = TrainConfig(n_classes=k, device=device, **(TINY if tiny else {"zdim": 8}), **({"field_recompute": False} if keep else {}))
    dev = resolve_device(device)
    precision = resolve_precision({"auto": "auto", "bf16": True, "fp32": False}[precision], dev)
    with tempfile.TemporaryDirectory() as tmp:
        n_particles = cfg.batch_size * (steps + 3)
        ds = _dataset(Path(tmp), box, tilts, n_particles)
        model, _ = build_model(ds, cfg)
        model.to(dev).train()
        opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, 0.0)
        gen = torch.Generator().manual_seed(0)
        amp = dev.type == "cuda"
        set_up_torch(dev, None, 0)  # TF32 on CUDA, as training has it
        loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=0, dose_mask=cfg.dose_mask)
        images = points = 0
        t0 = c0 = None
        last = None
        for i, batch in enumerate(loader.epoch(0)):
            if i == 3:  # warm-up done (allocator, autotuning, first reads)
                if amp:
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                if amp:
                    torch.cuda.reset_peak_memory_stats()
            classes = None
            if sparse and k > 1:
                from hetfield.model.forward import ClassSelection

                active = torch.nn.functional.one_hot(batch.particles % k, k).bool()
                classes = ClassSelection.of(active, batch.image_particle)
            batch = to_device(batch, dev)
            with autocast(dev, precision):
                # ``classes`` only when sparse: the same script then also measures older trees
                out = model(batch, beta=cfg.effective_beta, std_noise=cfg.std_noise, generator=gen, **({"classes": classes} if classes is not None else {}))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            if t0 is not None:
                images += batch.n_images
                points += batch.n_images * batch.extent
            last = batch
        if amp:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
        # The training steps' peak, before the MLP-alone measurement below (which runs every class).
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        q = model.points.frequencies_3d(last.rotation, last.extent)
        z = torch.zeros(q.shape[0], model.zdim, device=dev) if model.zdim else None
        mlp = _mlp_tflops(model, q, z, k, dev, precision)
    name = torch.cuda.get_device_name(dev) if amp else f"{torch.get_num_threads()} CPU threads"
    peak = peak_tflops or (bf16_peak(name) if amp else None)
    step_tflops = field_flops(model.fields, points, 1 if sparse and k > 1 else k)[1] / seconds / 1e12  # sparse: one field per image
    result = {
        "device": f"{dev} ({name})",
        "precision": precision,
        "box": box,
        "tilts": tilts,
        "classes": k,
        "decode": "sparse" if sparse and k > 1 else "full, kept" if keep and k > 1 else "full",
        "images_per_s": round(images / seconds, 1),
        # On a shared machine the CPU time the process got is the steadier measure of its work.
        "images_per_cpu_s": round(images / cpu_seconds, 1),
        "particles_per_s": round(images / tilts / seconds, 2),
        "step_field_TFLOPs": float(f"{step_tflops:.4g}"),
        "mlp_TFLOPs": float(f"{mlp:.4g}"),
        "bf16_peak_TFLOPs": peak,
        "bf16_peak_share": float(f"{mlp / peak:.4g}") if peak else None,
        "peak_rss_MB": round(peak_rss, 1),
    }
    if amp:
        result["peak_gpu_MB"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps per configuration")
    parser.add_argument("--quick", action="store_true", help="box 32 only")
    parser.add_argument("--boxes", help="comma-separated boxes (default: 64,128 on CUDA, the CPU grid's otherwise)")
    parser.add_argument("--tilts", help="comma-separated tilts per particle (default: 40 on CUDA, 10,40 otherwise)")
    parser.add_argument("--classes", default="1,3", help="comma-separated K")
    parser.add_argument("--precision", help="comma-separated bf16/fp32 (default: bf16,fp32 on CUDA, fp32 elsewhere)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if its name is not in the table")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (fields 2x32): checks that the benchmark runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sparse", action="store_true", help="K > 1: one decoded class per particle (sparse class decoding's steady state)")
    parser.add_argument("--keep", action="store_true", help="keep every class's activations (--no-field-recompute)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        box, tilts, k, precision = args.one.split(",")
        print(json.dumps(run_one(int(box), int(tilts), int(k), args.device, args.steps, precision, args.tiny, args.peak_tflops, args.sparse, args.keep)))
        return
    rows = []
    cuda = args.device.startswith("cuda") or (args.device == "auto" and _cuda_available())
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    boxes = ints(args.boxes) if args.boxes else ([32] if args.quick else list(CUDA_BOXES) if cuda else sorted({b for b, _, _ in GRID}))
    tilts_list = ints(args.tilts) if args.tilts else (list(CUDA_TILTS) if cuda else sorted({t for _, t, _ in GRID}))
    precisions = (args.precision or ("bf16,fp32" if cuda else "fp32")).split(",")
    grid = [(b, t, k, p) for b in boxes for t in tilts_list for k in ints(args.classes) for p in precisions]
    print(f"{'box':>4} {'tilts':>5} {'K':>2} {'prec':>10} {'images/s':>9} {'step TF/s':>9} {'MLP TF/s':>9} {'peak %':>6} {'RSS MB':>8}  device", flush=True)
    for box, tilts, k, precision in grid:
        cmd = [sys.executable, __file__, "--one", f"{box},{tilts},{k},{precision}", "--device", args.device, "--steps", str(args.steps)]
        cmd += (["--tiny"] if args.tiny else []) + (["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []) + (["--sparse"] if args.sparse else []) + (["--keep"] if args.keep else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(proc.returncode)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        extra = f"  GPU {r['peak_gpu_MB']} MB" if "peak_gpu_MB" in r else ""
        share = f"{100 * r['bf16_peak_share']:.1f}" if r["bf16_peak_share"] is not None else "-"
        print(f"{box:>4} {tilts:>5} {k:>2} {r['precision']:>10} {r['images_per_s']:>9} {r['step_field_TFLOPs']:>9.3g} {r['mlp_TFLOPs']:>9.3g} {share:>6} "
              f"{r['peak_rss_MB']:>8}  {r['device']}{extra}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
