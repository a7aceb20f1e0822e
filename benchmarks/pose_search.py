"""Seconds of CPU per image per class of the ab initio pose search (the README's performance table).

    python benchmarks/pose_search.py              # box 32, SPA and 11-tilt series, K = 1 and 2
    python benchmarks/pose_search.py --threads 2 --box 64

What is timed is what ``--pose-estimation abinit`` runs per training batch (train/abinit.py):
decoding the fields (the defaults: 3 × 256, 64 Fourier features) onto the oversampled search grid,
and the coarse-to-fine search of the batch's particles (level 0: 4 608 rotations × 49 shifts, then
4 levels of 8 children × 9 shifts for 8 candidates, bands of the last search round). The decoding is
shared by ``refresh`` batches (4 in training) and reported both alone and amortised. Times are
process CPU seconds (``time.process_time``), so a loaded machine inflates them less than wall time;
Hydra's reference figure (ANCHORS.md) is ~1.35 s per image per class on CPU.

Data are random (the cost does not depend on content) but laid out like a prepared dataset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _dataset(box: int, n_particles: int, tilts: int):
    import numpy as np

    from hetfield.data.dataset import Dataset
    from hetfield.imaging.rotations import random_rotations, rotation_y

    rng = np.random.default_rng(0)
    n = n_particles * tilts
    stage = np.clip(np.array([0] + [s * i for i in range(1, tilts) for s in (1, -1)][: tilts - 1]) * 6.0, -60, 60)
    rot = np.concatenate([rotation_y(stage) @ a for a in random_rotations(n_particles, rng)]).astype(np.float32)
    f32 = lambda v: np.full(n, v, np.float32)  # noqa: E731
    arrays = {
        "particle": np.repeat(np.arange(n_particles), tilts),
        "particle_offsets": np.arange(0, n + 1, tilts),
        "rotation": rot,
        "origin_px": rng.uniform(-2, 2, (n, 2)).astype(np.float32),
        "pixel_size_A": f32(8.0), "voltage_kV": f32(300.0), "cs_mm": f32(2.7), "amplitude_contrast": f32(0.1),
        "defocus_u_A": rng.uniform(14000, 16000, n).astype(np.float32), "defocus_v_A": rng.uniform(14000, 16000, n).astype(np.float32),
        "defocus_angle_deg": f32(30.0), "phase_shift_deg": f32(0.0), "ctf_bfactor_A2": f32(0.0), "ctf_scale": f32(1.0),
        "dose_e_per_A2": np.tile(np.arange(tilts) * 3.0, n_particles).astype(np.float32),
        "stage_tilt_deg": np.tile(stage, n_particles).astype(np.float32),
        "ctf_premultiplied": np.zeros(n, bool), "dose_weighted": np.zeros(n, bool),
    }
    images = rng.standard_normal((n, box + 1, box + 1), dtype=np.float32)
    meta = {"box": box, "lattice": box + 1, "pixel_size_A": 8.0, "n_images": n, "n_particles": n_particles, "fingerprint": "bench", "has_poses": True}
    return Dataset(Path("bench"), meta, images, arrays)


def measure(box: int, tilts: int, n_classes: int, batch_particles: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches
    from hetfield.imaging.so3_grid import SO3Grid
    from hetfield.model.pose_search import search_poses
    from hetfield.model.reconstruction import Reconstruction
    from hetfield.model.shape import ModelShape
    from hetfield.train import abinit, abinit_search
    from hetfield.train.config import TrainConfig

    cfg = TrainConfig(zdim=0, n_classes=n_classes, pose_estimation="abinit", epochs=20)
    ds = _dataset(box, batch_particles * repeats, tilts)
    model = Reconstruction(ModelShape(box=box, n_particles=ds.n_particles, n_images=ds.n_images, zdim=0, n_classes=n_classes, conf_estimation="none", pose_estimation="abinit")).eval()
    settings = abinit.search_settings(cfg, box, cfg.pose_search_epochs - 1)  # the widest bands
    geo = abinit_search.tilt_geometry(ds)
    geometry = torch.as_tensor(geo) if geo is not None else None
    with torch.no_grad():
        t = time.process_time()
        volume = abinit_search.field_grid(model, settings.radius_px[-1], n_classes, None)
        decode = time.process_time() - t
        loader = ParticleBatches(ds, model.points, batch_particles, shuffle=False, prefetch=False)
        search, n_images, levels = 0.0, 0, {}
        cache: dict = {}
        for batch in loader.epoch(0):
            data = abinit_search.search_data(batch, model.points, geometry, box, True, True, True)
            t = time.process_time()
            res = search_poses(volume, data, n_classes, settings, cache=cache)
            search += time.process_time() - t
            n_images += batch.n_images
            for k, v in res.seconds.items():
                levels[k] = levels.get(k, 0.0) + v
    per = search / (n_images * n_classes)
    refresh_images = 4 * batch_particles * tilts  # images searched per decoding in training
    return {
        "box": box, "tilts": tilts, "n_classes": n_classes, "batch_particles": batch_particles, "images": n_images,
        "rotations_level0": SO3Grid(settings.base_nside).size(0), "load_avg": open("/proc/loadavg").read().split()[:3], "final_spacing_deg": round(settings.final_spacing_deg(), 2),
        "band_px": [round(r, 1) for r in settings.radius_px],
        "search_s_per_image_class": round(per, 5),
        "decode_s_per_class": round(decode / n_classes, 3),
        "total_s_per_image_class": round(per + decode / (n_classes * refresh_images), 5),
        "speedup_vs_hydra_1.35s": round(1.35 / (per + decode / (n_classes * refresh_images)), 1),
        "level_share": {k: round(v / max(sum(levels.values()), 1e-9), 3) for k, v in levels.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-particles", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=4, help="batches measured per configuration")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON lines here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for tilts in (1, 11):
        for k in (1, 2):
            row = measure(args.box, tilts, k, args.batch_particles, args.repeats)
            row["threads"] = args.threads
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
