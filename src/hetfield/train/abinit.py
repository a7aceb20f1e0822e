"""``--pose-estimation abinit``: the schedule, and the search of each training batch (the loop's hook).

Schedule (epochs counted from 0; ``S = pose_search_epochs``; the input poses are never read):

* epoch 0 starts with the **low-resolution ab initio** (:mod:`hetfield.model.abinit_lowres`):
  images centred against the rotational average, then stochastic projection matching on a Fourier
  voxel map up to ``box/4`` from several random starts, the best start kept; then
  ``pose_search_refine_rounds`` rounds of **gold-standard refinement** of its poses
  (:mod:`hetfield.train.abinit_refine`: each half of the particles searched against the other
  half's class maps to ``0.45 · box``, Wiener-filtered by their FSC). The poses fill the pose table,
  and the fields train on them for the epoch;
* epochs ``1 … S``, **search**: every training batch is searched (global coarse-to-fine search,
  :mod:`hetfield.model.pose_search`) against the fields just before its training step, and the
  step uses the poses found. The fields are decoded onto the search grid once per epoch. The
  band widens with the round, the coarsest level from ``0.20`` to ``0.25 · box`` and the finest
  from ``0.35`` to ``0.45 · box``;
* epochs ``S + 1 …``, **refine**: the pose table is trained by gradient with the fields
  (``lr_pose``), as ``--pose-estimation refine`` does.

K > 1: the low-resolution start reconstructs K maps at once (each mini-batch particle goes to the
class whose map explains it best; every class keeps at least ``min_share / K`` of each assignment, the
guard against one map taking every particle, :func:`hetfield.model.abinit_lowres._assign`); its
classes seed the score table (as the EM start of :mod:`hetfield.train.class_start` would). Each
class's map has its own frame while the pose table holds one pose per image, so with
``pose_search_hold_classes`` the start's classes are held through the search rounds and each
particle's pose is written under its held class (after a refined start every round but the last
keeps the start's poses, :func:`keep_rounds`; without the refinement round 1 keeps them, the rounds
up to ``LOCAL_ROUNDS`` of them refine locally, the rest search globally); without it they are held for
``class_hold_epochs`` and each particle takes the pose found under its most probable class; after each round
:meth:`BatchSearch.rebalance` gives a class left below ``MIN_SHARE / K`` the particles that lose
least by moving to it (the guard once the start's partition is released). Fields with a
per-particle latent are searched at a consensus latent (the prior mean ``z = 0`` for an encoder, the
class mean of the table for an autodecoder).

Tilt series: the search keeps each particle's tilt geometry and searches one rotation per particle,
scored over all its tilts. The geometry is each image's rotation relative to the particle's first
image (``G_i = R_i R_first^T``) from the metadata (the relative tilt geometry, not the particle's
pose), or from the stage tilts (about y) when the input has no poses.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hetfield.model.pose_search import search_poses
from hetfield.model.search_data import SearchSettings
from hetfield.train.abinit_search import (
    SEARCH_BATCH_PARTICLES, better_of, consensus_latent, current_poses, field_grid, held_classes, local_search, search_data,
    tilt_geometry, write_poses,
)
from hetfield.train.abinit_start import lowres_start

# Bands (coarsest level, finest level) as fractions of the box, in the first and in the last round.
BAND_FIRST = (0.20, 0.35)
BAND_LAST = (0.25, 0.45)
MIN_SHARE = 0.5  # K > 1: after each search round every class keeps at least MIN_SHARE / K of the particles
LOCAL_ROUNDS = 0.5  # K > 1, classes held: this share of the search rounds refines the poses locally first
KEEP_ROUNDS = 1  # ... of which the first keep the start's poses (the fields train another epoch on them)


def keep_rounds(cfg) -> int:
    """Search rounds that keep the start's poses (held classes, or one class after a refined start,
    ``BatchSearch.anchored``): after a refined start every round but the last (searched against
    the fields, the refined poses got worse: tilt-subunits class 0 9.9° → 26°, the fields' error
    being in-sample), else ``KEEP_ROUNDS``; none when that leaves no round."""
    n = cfg.pose_search_epochs - 1 if cfg.pose_search_refine_rounds > 0 else KEEP_ROUNDS
    return n if cfg.pose_search_epochs > n else 0


def phase(cfg, epoch: int) -> str:
    """``lowres`` (epoch 0) | ``search`` | ``refine`` for ``epoch`` (0-based)."""
    if epoch == 0:
        return "lowres"
    return "search" if epoch <= cfg.pose_search_epochs else "refine"


def search_settings(cfg, box: int, round_index: int) -> SearchSettings:
    """Level radii of search round ``round_index`` (0-based): see the module docstring."""
    n_rounds = max(cfg.pose_search_epochs, 1)
    frac = round_index / (n_rounds - 1) if n_rounds > 1 else 1.0
    lo = box * (BAND_FIRST[0] + (BAND_LAST[0] - BAND_FIRST[0]) * frac)
    hi = box * (BAND_FIRST[1] + (BAND_LAST[1] - BAND_FIRST[1]) * frac)
    radii = tuple(float(r) for r in np.linspace(lo, hi, 5))
    max_shift = cfg.pose_search_max_shift_px if cfg.pose_search_max_shift_px is not None else box / 10
    return SearchSettings(base_nside=cfg.pose_search_base_nside, radius_px=radii, max_shift_px=float(max_shift), n_keep=8)


class PoseSchedule:
    """What the training loop calls (three lines of it): :meth:`start_epoch` before an epoch's
    batches, the object itself before every training step, :meth:`end_epoch` after the epoch's
    validation. Without ``--pose-estimation abinit`` every call does nothing."""

    def __init__(self, model, ds, cfg, device, log, val_particles=None, dd=None):
        self.on = cfg.pose_estimation == "abinit"
        self.model, self.ds, self.cfg, self.device, self.log, self.dd = model, ds, cfg, device, log, dd
        self.val_particles = val_particles if val_particles is not None else np.zeros(0, np.int64)
        self.searcher: BatchSearch | None = None
        self.stats: dict = {}

    def start_epoch(self, epoch: int, first: int, resp) -> None:
        self.searcher, self.stats = None, {}
        if not self.on:
            return
        if epoch == 0 and first == 0:
            self.stats = lowres_start(self.model, self.ds, self.cfg, self.device, self.log, resp, self.val_particles)
            if self.dd is not None:  # torchrun: every rank ran the same start; keep rank 0's bits
                tables = [self.model.poses.rot6d.weight.data, self.model.poses.origin.weight.data]
                tables += [self.model.scores.scores.data, resp] if self.model.scores is not None and resp is not None else []
                for t in tables:
                    self.dd.broadcast_(t)
        elif phase(self.cfg, epoch) == "search":
            self.searcher = BatchSearch(self.model, self.ds, self.cfg, self.device, epoch, resp)

    def __call__(self, batch) -> None:
        if self.searcher is not None:
            self.searcher(batch)

    def share(self) -> None:
        """Under torchrun: the rows every rank searched so far this epoch, on every rank (before a
        checkpoint: the epoch's end, or a stop)."""
        if self.searcher is not None and self.dd is not None and self.dd.enabled:
            self.searcher.share(self.dd)

    def end_epoch(self) -> dict:
        """The epoch's search figures (for metrics.jsonl); the held-out particles are searched here."""
        if self.searcher is not None:
            self.share()
            self.searcher.search_all(self.val_particles)
            self.searcher.rebalance()
            self.stats = self.searcher.stats()
            self.log(self.searcher.describe())
        return self.stats


class BatchSearch:
    """The search of one epoch, batch by batch: each training batch is searched just before its step.

    The fields are decoded onto the search grid (:class:`FourierGrid`) at the epoch's first batch
    and, with ``refresh``, again every ``refresh`` batches; one decoding per epoch is enough once
    the low-resolution start has put the fields near the answer (decoding costs more than
    searching a batch). Held-out particles, which no training batch visits, are searched at the
    end of the epoch (:meth:`search_all`).
    """

    def __init__(self, model, ds, cfg, device, epoch: int, resp: torch.Tensor | None, refresh: int | None = None):
        self.model, self.ds, self.cfg, self.device, self.resp = model, ds, cfg, device, resp
        self.round_index = epoch - 1
        self.settings = search_settings(cfg, ds.box, self.round_index)
        consensus = cfg.n_classes > 1 and epoch < cfg.effective_class_init_epochs
        self.k_eval = 1 if consensus else cfg.n_classes
        # The start's classes held (pose_search_hold_classes): poses are written under the held class.
        self.held = self.k_eval > 1 and cfg.pose_search_hold_classes and model.scores is not None and epoch < cfg.class_hold_end
        self.agree = [0, 0]  # K > 1: particles whose best class by the search is their class, of those searched
        # The first rounds of a hold refine the start's poses locally: searched globally against fields
        # trained one epoch (a 200-particle tilt set: 48 steps), one class's median error went from the
        # start's 11.6° to 82.8° in round 1 and was still 47° after round 6.
        self.local = self.held and self.round_index < int(LOCAL_ROUNDS * cfg.pose_search_epochs)
        # One class after a refined start: its poses are kept and guarded as a held class's (K = 1,
        # spa1: the refined start's 8.2° went to 12.9° in a global round against the fields).
        self.anchored = self.held or (cfg.n_classes == 1 and cfg.pose_search_refine_rounds > 0)
        self.keep = self.anchored and self.round_index < keep_rounds(cfg)
        geo = tilt_geometry(ds)
        self.geometry = torch.as_tensor(geo, device=device) if geo is not None else None
        self.refresh = max(int(refresh), 1) if refresh else None
        self.volume = None
        self.cache: dict = {}
        self.steps = 0
        self.seconds = {"decode": 0.0, "search": 0.0}
        self.levels: dict[str, float] = {}
        self.n_images = 0
        self.moved = 0
        self.kept = 0  # particles whose current pose, refined locally, beat the global search (held rounds)
        # Particles this process searched (under torchrun each rank searches its own share of every batch: share)
        self.mine = torch.zeros(ds.n_particles, dtype=torch.bool, device=device)
        if self.k_eval > 1:  # every particle's search under every class, for the rebalancing
            n_p, k = ds.n_particles, self.k_eval
            self.err = torch.full((n_p, k), float("nan"), device=device)
            self.rot = torch.zeros(n_p, k, 3, 3, device=device)
            self.shift = torch.zeros(ds.n_images, k, 2, device=device)

    @torch.no_grad()
    def __call__(self, batch) -> None:
        """Search ``batch``'s particles and write their poses into the pose table."""
        if self.keep:
            return
        model = self.model
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        if self.volume is None or (self.refresh and self.steps % self.refresh == 0):
            z = consensus_latent(model, self.resp, self.k_eval)
            self.volume = field_grid(model, self.settings.radius_px[-1], self.k_eval, z)
            self.cache = {}
        t1 = time.perf_counter()
        data = search_data(batch, model.points, self.geometry, self.ds.box, self.cfg.dose_weight, self.cfg.dose_mask, self.cfg.tilt_weight)
        if self.local:
            res = local_search(self.volume, data, *current_poses(model, batch, data.geometry), self.k_eval, self.settings.radius_px)
        else:
            res = search_poses(self.volume, data, self.k_eval, self.settings, cache=self.cache)
            if self.anchored:  # the guard: a particle keeps (the local refinement of) its pose where the global search found worse
                loc = local_search(self.volume, data, *current_poses(model, batch, data.geometry), self.k_eval, self.settings.radius_px)
                res, took_local = better_of(res, loc, data.image_particle)
                cls = held_classes(model, batch.particles, res.error) if self.held else torch.zeros(batch.n_particles, dtype=torch.long)
                self.kept += int(took_local.gather(1, cls[:, None].to(took_local.device)).sum())
        write_poses(model, batch, data, res, self.resp, self.k_eval, self.held)
        self.mine[batch.particles] = True
        if self.k_eval > 1 and not self.local:  # a local round's errors compare the classes at one class's frame
            self.err[batch.particles], self.rot[batch.particles], self.shift[batch.images] = res.error, res.rotation, res.shift_px
            self.agree[0] += int((res.error.argmin(1) == self.classes(batch.particles, res.error)).sum())
            self.agree[1] += batch.n_particles
        t2 = time.perf_counter()
        self.seconds["decode"] += t1 - t0
        self.seconds["search"] += t2 - t1
        for name, sec in res.seconds.items():
            self.levels[name] = self.levels.get(name, 0.0) + sec
        self.n_images += batch.n_images
        self.steps += 1
        model.train(was_training)

    def search_all(self, particles) -> None:
        """Search ``particles`` (e.g. the held-out ones, which no training batch visits)."""
        from hetfield.data.batching import ParticleBatches

        if len(particles) == 0 or self.keep:
            return
        self.volume = None
        loader = ParticleBatches(self.ds, self.model.points, SEARCH_BATCH_PARTICLES, shuffle=False, particles=particles, prefetch=False, dose_mask=self.cfg.dose_mask)
        for batch in loader.epoch(0):
            self.steps = 1  # one decoding for all of them
            self(batch.to(self.device))

    @torch.no_grad()
    def share(self, dd) -> None:
        """Every rank's searched rows (pose table, and the per-class results the rebalancing reads) on
        every rank, and the particle counters summed. A row two ranks wrote (a rank whose share of the last
        batch is empty repeats a particle of another's) takes their mean: the same search of the same
        images against the same fields."""
        counts = torch.as_tensor(np.diff(np.asarray(self.ds.offsets)), device=self.mine.device)
        mine_images = self.mine.repeat_interleave(counts)  # a searched particle's every image was written
        poses = self.model.poses
        for table in (poses.rot6d.weight, poses.origin.weight):
            table.data.copy_(_mean_of_writers(dd, table.data, mine_images))
        if self.k_eval > 1:
            self.err = _mean_of_writers(dd, self.err, self.mine)
            self.rot = _mean_of_writers(dd, self.rot, self.mine)
            self.shift = _mean_of_writers(dd, self.shift, mine_images)
        summed = dd.all_sum(torch.tensor([self.kept, *self.agree], dtype=torch.float64, device=self.device))
        self.kept, self.agree = int(summed[0]), [int(summed[1]), int(summed[2])]  # the search times stay this rank's own
        self.mine.zero_()

    @torch.no_grad()
    def rebalance(self, min_share: float = MIN_SHARE) -> int:
        """K > 1, after the epoch's search: a class left with fewer than ``min_share / K`` of the
        searched particles (by their most probable class) takes those that lose least by moving to
        it (search errors), with their poses under it; returns how many moved. The guard against a
        collapse into one class once the start's partition is released."""
        from hetfield.imaging.rotations import matrix_to_rot6d
        from hetfield.model.abinit_lowres import _assign
        from hetfield.train.class_start import SCORE_STRENGTH

        if self.k_eval == 1 or self.resp is None or self.model.scores is None:
            return 0
        seen = torch.isfinite(self.err).all(1).nonzero()[:, 0]
        if len(seen) < 2 * self.k_eval:
            return 0
        before = self.classes(seen, self.err[seen])
        # Each particle stays in its class unless moved: the others cost what the search says moving loses.
        err = (self.err[seen] - self.err[seen].gather(1, before[:, None])).clamp_min(0.0)
        err.scatter_(1, before[:, None], -1.0)
        after = _assign(err, min_share)
        moved = seen[after != before]
        if len(moved) == 0:
            return 0
        cls = after[after != before]
        scores = torch.zeros(len(moved), self.k_eval, device=self.resp.device)
        scores[torch.arange(len(moved)), cls] = SCORE_STRENGTH
        self.model.scores.scores[moved] = scores.to(self.model.scores.scores.dtype)
        self.resp[moved] = torch.softmax(scores, -1).to(self.resp.dtype)
        offsets = torch.as_tensor(np.asarray(self.ds.offsets), device=moved.device)
        counts = offsets[moved + 1] - offsets[moved]
        images = torch.cat([torch.arange(int(offsets[p]), int(offsets[p + 1]), device=moved.device) for p in moved.tolist()])
        img_cls = torch.repeat_interleave(cls, counts)
        a = self.rot[torch.repeat_interleave(moved, counts), img_cls]
        if self.geometry is not None:
            a = self.geometry[images] @ a
        poses = self.model.poses
        poses.rot6d.weight[images] = matrix_to_rot6d(a).to(poses.rot6d.weight.dtype)
        poses.origin.weight[images] = (self.shift[images, img_cls] / poses.origin_unit_px).to(poses.origin.weight.dtype)
        self.moved = len(moved)
        return self.moved

    def classes(self, particles: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """Each of ``particles``' class: the held one during the hold, else the most probable."""
        if self.held:
            return held_classes(self.model, particles, error).to(error.device)
        return self.resp[particles.to(self.resp.device)].argmax(1).to(error.device)

    def stats(self) -> dict:
        per = self.seconds["search"] / max(self.n_images * self.k_eval, 1)
        extra = {"search_class_agreement": round(self.agree[0] / self.agree[1], 4)} if self.agree[1] else {}
        return {
            **extra,
            "search_rebalanced": self.moved,
            "search_kept_current": self.kept,
            "search_seconds": round(self.seconds["search"] + self.seconds["decode"], 3),
            "search_decode_seconds": round(self.seconds["decode"], 3),
            "search_s_per_image_class": per,
            "search_radius_px": [round(r, 2) for r in self.settings.radius_px],
            "search_classes": self.k_eval,
            "search_local": self.local,
        }

    def describe(self) -> str:
        st = self.stats()
        s = self.settings
        return (
            f"pose search (round {self.round_index + 1}/{self.cfg.pose_search_epochs}{', start poses kept' if self.keep else ', local, held classes' if self.local else ''}, band {s.radius_px[0]:.1f}–{s.radius_px[-1]:.1f} px, "
            f"{self.k_eval} class{'es' if self.k_eval > 1 else ''}, final spacing {s.final_spacing_deg():.1f}°): "
            f"{st['search_seconds']:.1f} s ({st['search_decode_seconds']:.1f} s decoding), "
            f"{1e3 * st['search_s_per_image_class']:.2f} ms per image per class"
            + (f"; {self.kept} particles kept their refined pose over the global search's" if self.kept else "")
            + (f"; {self.moved} particles moved to keep every class above {MIN_SHARE:g}/K" if self.moved else "")
        )


def _mean_of_writers(dd, x: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    """``x (R, ...)`` with each row the mean over the ranks that wrote it (``mine (R,)`` on each); a row
    no rank wrote is kept as it is (the same on every rank: unsearched rows are NaN errors or the
    poses every rank already shares)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    n = dd.all_sum(mine.to(x.dtype)).view(shape)
    total = dd.all_sum(torch.where(mine.view(shape), x, torch.zeros_like(x)))
    return torch.where(n > 0, total / n.clamp_min(1), x)

