"""Batches of whole particles (all their images), read from the memory-mapped cache.

A batch holds ``P`` particles and the ``n`` images that belong to them, flat (``image_particle`` and
``slot`` say whose and where): the forward model works on flat images, the encoder on the ``(P, T)``
padded layout built from ``slot``. Construction is vectorised (no loop over particles or tilts) and a
background thread reads the next batch while the current one trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from hetfield.data.cache import PER_IMAGE_FLOAT
from hetfield.imaging.transfer import dose_cutoff_radius_px

if TYPE_CHECKING:  # annotations only: torch is imported where batches are built
    import torch


@dataclass
class Batch:
    particles: "torch.Tensor"  # (P,) global particle indices
    images: "torch.Tensor"  # (n,) global image indices
    image_particle: "torch.Tensor"  # (n,) 0..P-1
    slot: "torch.Tensor"  # (n,) position of the image within its particle
    n_slots: int  # T, the largest image count in the batch
    extent: int  # radius-sorted points to decode (largest dose-mask radius of the batch)
    y_k: "torch.Tensor"  # (n, M) data at the decoded half-points
    y_mk: "torch.Tensor"  # (n, M) data at their partners -k
    rotation: "torch.Tensor"  # (n, 3, 3)
    origin_px: "torch.Tensor"  # (n, 2)
    ctf_premultiplied: "torch.Tensor"  # (n,) bool
    dose_weighted: "torch.Tensor"  # (n,) bool
    pixel_size_A: "torch.Tensor"
    voltage_kV: "torch.Tensor"
    cs_mm: "torch.Tensor"
    amplitude_contrast: "torch.Tensor"
    defocus_u_A: "torch.Tensor"
    defocus_v_A: "torch.Tensor"
    defocus_angle_deg: "torch.Tensor"
    phase_shift_deg: "torch.Tensor"
    ctf_bfactor_A2: "torch.Tensor"
    ctf_scale: "torch.Tensor"
    dose_e_per_A2: "torch.Tensor"
    stage_tilt_deg: "torch.Tensor"

    @property
    def n_particles(self) -> int:
        return int(self.particles.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "Batch":
        import torch

        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return Batch(**moved)


class ParticleBatches:
    """Iterate a dataset in batches of ``batch_size`` particles, in a seeded order per epoch."""

    def __init__(self, dataset, points, batch_size: int, seed: int = 0, shuffle: bool = True, particles=None, prefetch: bool = True, dose_mask: bool = True):
        self.ds = dataset
        self.points = points
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.prefetch = prefetch
        self.dose_mask = dose_mask
        self.particles = np.arange(dataset.n_particles) if particles is None else np.asarray(particles)
        self.offsets = dataset.offsets
        self.counts = np.diff(self.offsets)
        self.radius_sorted = points.radius_px.cpu().numpy().astype(np.float64)
        a = dataset.arrays
        self.cutoff_px = (
            dose_cutoff_radius_px(a["dose_e_per_A2"], a["pixel_size_A"], a["voltage_kV"], dataset.box)
            if dose_mask
            else np.full(dataset.n_images, np.inf)
        )

    def __len__(self) -> int:
        return -(-len(self.particles) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.particles
        return self.particles[np.random.default_rng([self.seed, epoch]).permutation(len(self.particles))]

    def make_batch(self, parts: np.ndarray) -> Batch:
        import torch

        counts = self.counts[parts]
        starts = self.offsets[parts]
        n = int(counts.sum())
        first = np.repeat(np.cumsum(counts) - counts, counts)
        slot = np.arange(n) - first
        img = np.repeat(starts, counts) + slot
        image_particle = np.repeat(np.arange(len(parts)), counts)
        # Memory-mapped rows are read in file order, then put back in batch order.
        order = np.argsort(img, kind="stable")
        data = np.empty((n,) + self.ds.images.shape[1:], np.float32)
        data[order] = self.ds.images[img[order]]
        flat = data.reshape(n, -1)
        max_r = float(self.cutoff_px[img].max())
        extent = max(int(np.searchsorted(self.radius_sorted, max_r + 1e-6, side="right")), 1)
        pts_half = self.points.half_index_np[:extent]
        pts_partner = self.points.partner_index_np[:extent]
        a = self.ds.arrays
        kw = {name: torch.from_numpy(np.ascontiguousarray(a[name][img], dtype=np.float32)) for name in PER_IMAGE_FLOAT}
        return Batch(
            particles=torch.from_numpy(parts.astype(np.int64)),
            images=torch.from_numpy(img.astype(np.int64)),
            image_particle=torch.from_numpy(image_particle.astype(np.int64)),
            slot=torch.from_numpy(slot.astype(np.int64)),
            n_slots=int(counts.max()),
            extent=extent,
            y_k=torch.from_numpy(np.ascontiguousarray(flat[:, pts_half])),
            y_mk=torch.from_numpy(np.ascontiguousarray(flat[:, pts_partner])),
            rotation=torch.from_numpy(a["rotation"][img].astype(np.float32)),
            origin_px=torch.from_numpy(a["origin_px"][img].astype(np.float32)),
            ctf_premultiplied=torch.from_numpy(a["ctf_premultiplied"][img].astype(bool)),
            dose_weighted=torch.from_numpy(a["dose_weighted"][img].astype(bool)),
            **kw,
        )

    def epoch(self, epoch: int, start_particle: int = 0) -> Iterator[Batch]:
        """Batches of one epoch, skipping its first ``start_particle`` particles (to resume mid-epoch:
        with an unchanged batch size the remaining batches are exactly those of an uninterrupted run)."""
        order = self.order(epoch)
        chunks = [order[i : i + self.batch_size] for i in range(start_particle, len(order), self.batch_size)]
        if not self.prefetch or len(chunks) < 2:
            for c in chunks:
                yield self.make_batch(c)
            return
        yield from _prefetched(self.make_batch, chunks)


def _prefetched(make, chunks, depth: int = 2):
    """Build batches in a background thread, ``depth`` ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for c in chunks:
                if stop.is_set():
                    return
                q.put(make(c))
        except BaseException as err:  # surfaced in the consumer
            q.put(err)
            return
        q.put(None)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)
