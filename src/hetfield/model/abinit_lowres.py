"""Low-resolution ab initio: stochastic projection matching on a Fourier voxel grid.

The neural fields cannot start an ab initio run by themselves: searched against a field trained
on random poses (the rotational average), poses stayed random or settled on a self-consistent
wrong map (an elongated "rod", median error 60–75° on the research branch research/15-abinit). So the run starts with
the classic, cheap solution at low resolution, as cryoSPARC's ab initio does:

1. **Centring.** The particles at random rotations average into a (nearly) spherically symmetric
   map, whose projections are the same from every direction: matching each image's shift against
   it centres the image on the particle's projected centre of mass, without knowing any rotation.
   Searching wide shifts during the ab initio itself let the map grow into a rod (images slid along
   it); after centring the search needs only a ±``shift_window_px`` window.
2. **Stochastic iterations.** A running Fourier reconstruction (direct inversion on a grid
   oversampled twice: ``V = Σ f Y_c / (Σ f² + λ)`` with trilinear splatting, the numerator and the
   denominator decayed by ``decay`` per iteration, so the map averages the last ~``1/(1 - decay)``
   mini-batches) starts from a mini-batch at random rotations; every iteration searches a new
   mini-batch against it (:func:`~hetfield.model.pose_search.search_poses`, low band) and adds the
   mini-batch at the poses found. Symmetry breaks on the noise of the first mini-batches and the
   next ones align to it; a few hundred iterations of 100 particles find the particle's low
   resolution shape. Hard assignments are used: soft ones (a posterior over the 64 best grid
   rotations, annealed) were 5× slower per iteration and not more reliable in our tests.
   The band widens from ``band[0]`` to ``band[1]`` over the first ``anneal`` of the iterations
   (matched at the full band from the start, 400 high-SNR particles settled on a wrong map, 45°
   median error; annealed, 5°). Before a mini-batch is searched, its particles' earlier images
   are taken out of the maps (at the weight the decays have left them), so the map holds every
   image at most once and never the one searched against it: in a set of a few mini-batches a
   particle came back while its last image still weighed ``decay^(P/B)`` (0.26 at 300 particles)
   and was matched to its own noise at its own pose, which locked every chain (150 particles of
   one class, box 24, SNR 4: 73.5° median error, 7.0° without its own images; at 1 000 particles
   the weight is 0.01 and nothing changes).
3. A final search of every particle against the map gives the poses the fields start from. It and
   the starts' scoring keep a beam of ``n_keep`` = 32 candidates per level (the iterations 8): a
   class that is nearly symmetric at this band loses its true pose in a narrower beam.

K > 1 classes: K maps are reconstructed at once from random shares of the first mini-batch; every
particle of a mini-batch joins the class whose map explains it best, and every class keeps at least
``min_share / K`` of each assignment (:func:`_assign`: a starving class takes the particles that lose
least by moving), so one map cannot take every particle.

Everything is in terms of :class:`~hetfield.model.pose_search.SearchData` (images on the half
lattice, CTF factors, weights, tilt geometry), so it knows nothing of datasets or fields.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from hetfield.imaging.rotations import random_rotations
from hetfield.model.fourier_grid import FourierAccumulator, FourierGrid
from hetfield.model.pose_search import search_poses
from hetfield.model.search_data import SearchData, SearchSettings


@dataclass(frozen=True)
class LowresSettings:
    """``band`` (coarsest, finest level) and ``max_shift_px`` (centring range) are in lattice pixels."""

    iterations: int = 200
    batch_particles: int = 50
    restarts: int = 4
    select_particles: int = 200
    decay: float = 0.8
    band: tuple[float, float] = (3.2, 8.0)
    base_nside: int = 2
    n_levels: int = 4
    # The search's beam (candidates kept per level) in the final search and the starts' scoring: 8
    # lost the true pose of a nearly symmetric class at the coarse levels, even against its true map
    # (docs/internals.md, ab initio). The stochastic iterations keep 8: 32 there cost 2x for little.
    n_keep: int = 32
    chain_n_keep: int = 8
    shift_window_px: float = 1.0
    max_shift_px: float = 3.2
    ridge: float = 1e-3  # λ relative to the mean of the denominator
    oversample: float = 2.0
    min_share: float = 0.5  # K > 1: every class keeps at least min_share / K of each assignment
    anneal: float = 0.6  # share of the iterations over which the band widens to band[1]
    seed: int = 0

    @classmethod
    def for_box(cls, box: int, **kw) -> "LowresSettings":
        """Bands of 0.1 and 0.25 of the box, centring within ±box/10."""
        return cls(band=(0.1 * box, 0.25 * box), max_shift_px=box / 10, **kw)

    def search(self) -> SearchSettings:
        """The final search's ladder (also the starts' scoring): ``band`` over ``n_levels`` levels, a
        beam of ``n_keep``, shifts within ±``shift_window_px`` of the centred images."""
        return SearchSettings(base_nside=self.base_nside, radius_px=tuple(float(r) for r in np.linspace(self.band[0], self.band[1], self.n_levels)),
                              n_keep=self.n_keep, max_shift_px=self.shift_window_px, shift_points=5 if self.shift_window_px > 0 else 1)


def centre_data(data: SearchData, origin_px: torch.Tensor) -> SearchData:
    """``data`` with every image translated by ``+origin_px (n, 2)`` (``Y e^{-2πi k·t}``)."""
    phi = 2 * math.pi * (origin_px.float() @ data.k.float().T)
    c, s = torch.cos(phi), torch.sin(phi)
    yr, yi = data.y[..., 0], data.y[..., 1]
    return replace(data, y=torch.stack([yr * c + yi * s, yi * c - yr * s], -1))


def add_images(acc: FourierAccumulator, data: SearchData, images: torch.Tensor, rotation_img: torch.Tensor, origin_px: torch.Tensor | None,
               scale: torch.Tensor | None = None) -> None:
    """Add ``images`` at their rotations ``(n_sel, 3, 3)`` and origins (``None``: already centred),
    each times ``scale (n_sel,)`` if given (negative: take them out)."""
    y, f, w = data.y[images], data.factor[images].float(), data.weight[images].float()
    if data.image_weight is not None:
        w = w * data.image_weight[images, None].float()
    if scale is not None:
        w = w * scale[:, None].float()
    k = data.k.float()
    m = k.shape[0]
    if origin_px is not None:
        phi = 2 * math.pi * (origin_px.float() @ k.T)
        c, s = torch.cos(phi), torch.sin(phi)
        yr, yi = y[..., 0] * c + y[..., 1] * s, y[..., 1] * c - y[..., 0] * s
    else:
        yr, yi = y[..., 0], y[..., 1]
    q = torch.einsum("md,nde->nme", torch.cat([k, torch.zeros(m, 1, device=k.device)], 1), rotation_img.float())
    wf = w * f
    acc.add(q.reshape(-1, 3), torch.stack([wf * yr, wf * yi], -1).reshape(-1, 2), (wf * f).reshape(-1))


def image_rotations(sub: SearchData, particle_rotation: torch.Tensor) -> torch.Tensor:
    """``(n, 3, 3)`` rotation of every image of ``sub`` from its particle's ``(P, 3, 3)``, within the tilt geometry."""
    r = particle_rotation[sub.image_particle]
    return r if sub.geometry is None else sub.geometry.float() @ r


@torch.no_grad()
def lowres_abinit(data: SearchData, settings: LowresSettings | None = None, log=None, n_classes: int = 1) -> dict:
    """Ab initio poses of every particle of ``data`` at low resolution (module docstring).

    Returns ``rotation (P, 3, 3)`` particle rotations, ``origin_px (n, 2)`` image origins,
    ``volume`` (the final :class:`FourierGrid`), ``seconds`` and ``centring_px (n, 2)``.
    """
    s = settings or LowresSettings()
    t0 = time.perf_counter()
    dev = data.y.device
    rng = np.random.default_rng([s.seed, 1515])
    p_all = data.n_particles
    offsets = data.particle_offsets()
    data = data.within(s.band[1])

    # 1. centring against the rotational average
    acc = FourierAccumulator(data.box, s.band[1], s.oversample, dev)
    rand = torch.as_tensor(random_rotations(p_all, rng), dtype=torch.float32, device=dev)
    add_images(acc, data, torch.arange(data.n_images, device=dev), image_rotations(data, rand), None)
    centring = SearchSettings(base_nside=1, radius_px=(s.band[1],), n_keep=1, max_shift_px=s.max_shift_px, shift_points=17)
    centre = search_poses(acc.volume(s.ridge), data, 1, centring).shift_px[:, 0]
    data = centre_data(data, centre)

    # 2. stochastic iterations, from several random starts; the maps that explain a fixed subset
    # of particles best win (about half of the starts settle on a wrong, self-consistent map).
    search = s.search()
    select = np.sort(rng.choice(p_all, size=min(p_all, s.select_particles), replace=False))
    sel_data, _ = data.subset(select, offsets)
    k = max(int(n_classes), 1)
    best, scores = None, []
    for restart in range(max(s.restarts, 1)):
        accs = _chain(data, offsets, s, search, np.random.default_rng([s.seed, 1515, restart]), dev, k)
        err = search_poses(_maps(accs, s.ridge), sel_data, k, search).error
        score = float(err.min(1).values.mean())
        scores.append(score)
        if log is not None:
            log(f"low-resolution ab initio: start {restart + 1}/{s.restarts}, mean error {score:.5g} on {len(select)} particles")
        if best is None or score < best[0]:
            best = (score, accs)

    # 3. every particle against the final maps, in its best class (at least min_share of them each)
    volume = _maps(best[1], s.ridge)
    final = search_poses(volume, data, k, search)
    cls = _assign(final.error, s.min_share)
    rows = torch.arange(p_all, device=dev)
    img_cls = cls[data.image_particle]
    return {
        "rotation": final.rotation[rows, cls],
        "origin_px": centre + final.shift_px[torch.arange(data.n_images, device=dev), img_cls],
        "classes": cls,
        "volume": volume,
        "centring_px": centre,
        "error": final.error[rows, cls],
        "seconds": time.perf_counter() - t0,
        "restart_errors": scores,
    }


def reconstruct(data: SearchData, rotation: torch.Tensor, origin_px: torch.Tensor, classes: torch.Tensor | None = None,
                n_classes: int = 1, radius_px: float | None = None, ridge: float = 1e-3, oversample: float = 2.0) -> FourierGrid:
    """Maps by direct inversion from every image of ``data`` at its particle's rotation ``(P, 3, 3)``
    (within the tilt geometry) and its origin ``(n, 2)`` px, one per class of ``classes (P,)``
    (None: one map), up to ``radius_px`` (default: the data's band)."""
    radius_px = float(data.k.norm(dim=-1).max() * data.box) if radius_px is None else float(radius_px)
    dev = data.y.device
    img_rot = image_rotations(data, rotation.to(dev).float())
    img_cls = torch.zeros(data.n_images, dtype=torch.long, device=dev) if classes is None else classes.to(dev)[data.image_particle]
    accs = [FourierAccumulator(data.box, radius_px, oversample, dev) for _ in range(max(int(n_classes), 1))]
    for c, acc in enumerate(accs):
        sel = (img_cls == c).nonzero()[:, 0]
        add_images(acc, data, sel, img_rot[sel], origin_px.to(dev)[sel])
    return _maps(accs, ridge)


def _maps(accs: list[FourierAccumulator], ridge: float) -> FourierGrid:
    vols = [a.volume(ridge) for a in accs]
    return FourierGrid(torch.cat([v.values for v in vols]), vols[0].box, vols[0].oversample)


def _assign(error: torch.Tensor, min_share: float) -> torch.Tensor:
    """Each particle's best class ``(P,)`` from ``error (P, K)``, with every class given at least
    ``min_share / K`` of the particles: a starving class takes those that lose least by moving to it
    (the guard against one map taking every particle)."""
    cls = error.argmin(1)
    p, k = error.shape
    if k == 1:
        return cls
    need = int(math.ceil(min_share * p / k))
    for c in range(k):
        short = need - int((cls == c).sum())
        if short > 0:
            loss = error[:, c] - error.gather(1, cls[:, None])[:, 0]
            counts = torch.bincount(cls, minlength=k)
            movable = (cls != c) & (counts[cls] > need)  # never empty another class below the share
            loss = torch.where(movable, loss, torch.full_like(loss, float("inf")))
            take = torch.topk(loss, min(short, int(movable.sum())), largest=False).indices
            cls[take] = c
    return cls


def _chain(data: SearchData, offsets: np.ndarray, s: LowresSettings, search: SearchSettings, rng: np.random.Generator, dev, k: int = 1) -> list[FourierAccumulator]:
    """One run of the stochastic iterations from a random start; returns its ``k`` reconstructions."""
    p_all = data.n_particles
    accs = [FourierAccumulator(data.box, s.band[1], s.oversample, dev) for _ in range(k)]
    order = rng.permutation(p_all)
    pos = 0

    def next_batch() -> np.ndarray:
        nonlocal order, pos
        if pos + s.batch_particles > p_all:
            order, pos = rng.permutation(p_all), 0
        b = np.sort(order[pos : pos + s.batch_particles])
        pos += s.batch_particles
        return b

    # Each image's latest contribution (rotation, origin, class, iteration): taken out of the maps
    # before its particle is searched again (module docstring, item 2).
    last = _Contributions(data.n_images, dev)
    first = next_batch()
    sub, ti = data.subset(first, offsets)
    rot = image_rotations(sub, torch.as_tensor(random_rotations(len(first), rng), dtype=torch.float32, device=dev))
    split = torch.as_tensor(rng.integers(0, k, len(first)), device=dev)[sub.image_particle]
    for c in range(k):  # each class starts from its own random share of the first mini-batch
        add_images(accs[c], data, ti[split == c], rot[split == c], None)
    last.record(ti, rot, torch.zeros(len(ti), 2, device=dev), split, -1)
    # A set of at most two mini-batches is seen whole every iteration or two: 60 iterations are 30+
    # passes over it (tests; real sets keep ``iterations``: fewer failed on 400 particles).
    n_iter = s.iterations if p_all > 2 * s.batch_particles else min(s.iterations, 60)
    for it in range(n_iter):
        sub, ti = data.subset(next_batch(), offsets)
        last.remove(accs, data, ti, it, s.decay)
        # The band widens from band[0] to band[1] over the first ``anneal`` of the iterations: matched
        # at the final band from the start, early maps locked onto their own noise (wrong shapes).
        hi = s.band[0] + (s.band[1] - s.band[0]) * min(1.0, (it + 1) / max(s.anneal * n_iter, 1))
        step = replace(search, n_keep=s.chain_n_keep, radius_px=tuple(float(r) for r in np.linspace(0.6 * hi, hi, s.n_levels)))
        res = search_poses(_maps(accs, s.ridge), sub, k, step)
        cls = _assign(res.error, s.min_share)
        img_cls = cls[sub.image_particle]
        n = torch.arange(sub.n_images, device=dev)
        rot = image_rotations(sub, res.rotation[torch.arange(sub.n_particles, device=dev), cls])
        shift = res.shift_px[n, img_cls]
        for c in range(k):
            accs[c].decay(s.decay)
            sel = img_cls == c
            add_images(accs[c], data, ti[sel], rot[sel], shift[sel])
        last.record(ti, rot, shift, img_cls, it)
    return accs


class _Contributions:
    """What the chain last added for every image: ``rotation (n, 3, 3)``, ``origin_px (n, 2)``, ``cls``
    (-1: never added) and the iteration (-1: the first mini-batch), so :meth:`remove` can take an
    image out of the maps, at the weight the decays since have left it, before it is searched again."""

    def __init__(self, n_images: int, dev):
        self.rotation = torch.zeros(n_images, 3, 3, device=dev)
        self.origin_px = torch.zeros(n_images, 2, device=dev)
        self.cls = torch.full((n_images,), -1, dtype=torch.long, device=dev)
        self.iteration = torch.zeros(n_images, dtype=torch.long, device=dev)

    def record(self, images: torch.Tensor, rotation: torch.Tensor, origin_px: torch.Tensor, cls: torch.Tensor, iteration: int) -> None:
        self.rotation[images], self.origin_px[images], self.cls[images] = rotation.float(), origin_px.float(), cls
        self.iteration[images] = iteration

    def remove(self, accs: list[FourierAccumulator], data: SearchData, images: torch.Tensor, iteration: int, decay: float) -> None:
        """Subtract ``images``' latest contributions from ``accs`` (added at iteration ``j``, decayed
        once at every iteration after it: weight ``decay^(iteration - 1 - j)``)."""
        for c in range(len(accs)):
            sel = images[self.cls[images] == c]
            if len(sel) == 0:
                continue
            weight = -(decay ** (iteration - 1 - self.iteration[sel]).float())
            add_images(accs[c], data, sel, self.rotation[sel], self.origin_px[sel], weight)
