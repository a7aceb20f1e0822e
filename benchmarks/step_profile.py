"""Where one training step's time goes: a timing table by part (forward by component, backward,
optimiser), and the backward's heaviest operators from torch.profiler.

    python benchmarks/step_profile.py                       # box 32, 10 tilts, K = 1, default model
    python benchmarks/step_profile.py --classes 3 --sparse  # K = 3, one class decoded per particle
    python benchmarks/step_profile.py --box 64 --markdown   # a table for docs/internals.md
    python benchmarks/step_profile.py --tilts 1 --batch-size 16 --field-layers 4 --pe-features 48  # the peer comparison's SPA model

Each part is timed by wrapping the function that does it (exclusive of the parts nested inside
it, so the rows add up to the step): centring phases, CTF × exposure, rotated lattice,
back-projection (the encoder's input), encoder MLP, Fourier features, field MLP, field assembly
(half-space fold, Hermitian sign, amplitude profile, per-class scatter), loss, the rest of the
forward, backward, optimiser, and reading the batch. Data and model as in train_throughput.py
(random images laid out as a prepared dataset, default model: fields 3×256, 64 features, encoder
2×256, zdim 8, 4 particles a batch).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_throughput import _dataset  # noqa: E402

ORDER = [
    "read batch", "centring phases", "CTF × exposure", "rotated lattice", "back-projection (encoder input)", "encoder MLP",
    "Fourier features", "field MLP", "field assembly", "loss", "forward, other", "backward", "optimiser",
]


class Timers:
    """Exclusive wall time per label: a part nested in another is charged to itself only."""

    def __init__(self):
        self.total = collections.defaultdict(float)
        self._stack: list[list] = []

    def wrap(self, label: str, fn):
        def timed(*args, **kwargs):
            self._stack.append([label, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, t0, inner = self._stack.pop()
                dt = time.perf_counter() - t0
                self.total[name] += dt - inner
                if self._stack:
                    self._stack[-1][2] += dt

        return timed

    def block(self, label: str):
        timers = self

        class _Block:
            def __enter__(self):
                timers._stack.append([label, time.perf_counter(), 0.0])

            def __exit__(self, *exc):
                name, t0, inner = timers._stack.pop()
                dt = time.perf_counter() - t0
                timers.total[name] += dt - inner
                if timers._stack:
                    timers._stack[-1][2] += dt

        return _Block()


def instrument(timers: Timers) -> None:
    import hetfield.model.fields as fields
    import hetfield.model.forward as forward
    import hetfield.model.points as points
    import hetfield.model.reconstruction as rec
    from hetfield.model.encoder import TiltSetEncoder

    forward.translate_hartley_pair = timers.wrap("centring phases", forward.translate_hartley_pair)
    forward.transfer_of = timers.wrap("CTF × exposure", forward.transfer_of)
    points.LatticePoints.frequencies_3d = timers.wrap("rotated lattice", points.LatticePoints.frequencies_3d)
    rec.encoder_features = timers.wrap("back-projection (encoder input)", rec.encoder_features)
    TiltSetEncoder.forward = timers.wrap("encoder MLP", TiltSetEncoder.forward)
    fields.FourierFeatures.forward = timers.wrap("Fourier features", fields.FourierFeatures.forward)
    fields.NeuralFields._mlp = timers.wrap("field MLP", fields.NeuralFields._mlp)
    fields.NeuralFields.forward = timers.wrap("field assembly", fields.NeuralFields.forward)
    rec.Reconstruction.field_values = timers.wrap("field assembly", rec.Reconstruction.field_values)
    rec.objective = timers.wrap("loss", rec.objective)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--box", type=int, default=32)
    parser.add_argument("--tilts", type=int, default=10)
    parser.add_argument("--classes", type=int, default=1)
    parser.add_argument("--sparse", action="store_true", help="K > 1: one decoded class per particle")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4, help="particles a batch")
    parser.add_argument("--field-layers", type=int, default=3)
    parser.add_argument("--pe-features", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hetfield.data.batching import ParticleBatches
    from hetfield.model.forward import ClassSelection
    from hetfield.train.config import TrainConfig
    from hetfield.train.factory import build_model
    from hetfield.train.optim import Optimizers

    timers = Timers()
    instrument(timers)
    cfg = TrainConfig(n_classes=args.classes, device="cpu", zdim=8, batch_size=args.batch_size, field_layers=args.field_layers, pe_features=args.pe_features)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp), args.box, args.tilts, cfg.batch_size * (args.steps + 2))
        model, _ = build_model(ds, cfg)
        model.train()
        opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, 0.0, cfg.lr_encoder)
        gen = torch.Generator().manual_seed(0)
        loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=0, dose_mask=cfg.dose_mask, prefetch=False)
        images = 0
        backward_ops = None
        batches = iter(loader.epoch(0))
        for step in range(args.steps + 2):
            if step == 2:
                timers.total.clear()
                t0 = time.perf_counter()
            with timers.block("read batch"):
                batch = next(batches)
            classes = None
            if args.sparse and args.classes > 1:
                classes = ClassSelection.of(torch.nn.functional.one_hot(batch.particles % args.classes, args.classes).bool(), batch.image_particle)
            with timers.block("forward, other"):
                out = model(batch, beta=cfg.effective_beta, std_noise=cfg.std_noise, generator=gen, classes=classes)
            opt.zero_grad()
            if step == args.steps + 1:  # the last step's backward, by operator
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof, timers.block("backward"):
                    out["loss"].backward()
                backward_ops = prof.key_averages()
            else:
                with timers.block("backward"):
                    out["loss"].backward()
            with timers.block("optimiser"):
                opt.step()
            if step >= 2:
                images += batch.n_images
                points = batch.extent
        wall = time.perf_counter() - t0
        params = sum(p.numel() for p in model.fields.parameters())
    steps = args.steps
    step_ms = 1000 * wall / steps
    title = f"box {args.box}, {args.tilts} tilts, K = {args.classes}" + (" (sparse: one class per particle)" if args.sparse and args.classes > 1 else "")
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{title}: {step_ms:.0f} ms a step of {images / steps:.0f} images, {images / wall:.1f} images/s, {args.threads} thread(s), load {load}; "
          f"{points} decoded points an image, field {params} parameters")
    rows = [(label, 1000 * timers.total.get(label, 0.0) / steps) for label in ORDER]
    if args.markdown:
        print("| part | ms / step | share |\n|---|---:|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} | {100 * ms / step_ms:.0f} % |" if args.markdown else f"{label:<34} {ms:8.1f} ms  {100 * ms / step_ms:5.1f} %")
    accounted = sum(ms for _, ms in rows)
    print(("| (not in a part) | " + f"{step_ms - accounted:.1f} | {100 * (step_ms - accounted) / step_ms:.0f} % |") if args.markdown else f"{'(not in a part)':<34} {step_ms - accounted:8.1f} ms")
    if backward_ops is not None:
        top = sorted((e for e in backward_ops if not e.key.startswith("autograd::")), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        total = sum(e.self_cpu_time_total for e in backward_ops) or 1
        print("backward, heaviest operators (one step): " + ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f} %" for e in top))


if __name__ == "__main__":
    main()
