"""``hetfield train``: K neural fields with an encoder or autodecoder latent, checkpoints, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hetfield.train.config import TrainConfig, option_default_text

_ARCH = "Architecture"
_OPT = "Optimisation"
_HET = "Heterogeneity"
_IMG = "Imaging"
_RUN = "Run"


def _help(name: str, text: str) -> str:
    """An option's help with its default, read from :class:`TrainConfig` (the one source of defaults).

    The bracket is escaped: rich markup would otherwise take ``[default: …]`` for a style and drop it.
    """
    return f"{text} \\[default: {option_default_text(name)}]"


def train(
    run: Path = typer.Argument(..., help="Run directory to create (or resume with --load)."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory (from `hetfield setup`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of training options; command-line options override it. With --load it may change only the settings a resume may change."),
    zdim: Optional[int] = typer.Option(None, "--zdim", help=_help("zdim", "Latent dimension; 0 trains a homogeneous model per class."), rich_help_panel=_HET),
    beta: Optional[float] = typer.Option(None, "--beta", help=_help("beta", "KL weight of the encoder (prior weight of autodecoder latents)."), rich_help_panel=_HET),
    n_classes: Optional[int] = typer.Option(None, "--n-classes", help=_help("n_classes", "Number of neural fields K; K > 1 learns a class per particle."), rich_help_panel=_HET),
    std_noise: Optional[float] = typer.Option(None, "--std-noise", help=_help("std_noise", "Noise standard deviation of the class likelihood, in normalised data units (data have unit variance)."), rich_help_panel=_HET),
    class_init_epochs: Optional[int] = typer.Option(None, "--class-init-epochs", help=_help("class_init_epochs", "K > 1: epochs of one consensus field before the classes start from low-resolution EM (0: start from identical fields)."), rich_help_panel=_HET),
    class_hold_epochs: Optional[int] = typer.Option(None, "--class-hold-epochs", help=_help("class_hold_epochs", "K > 1: epochs after the EM start in which each field trains on its EM class only, before the posterior may move particles."), rich_help_panel=_HET),
    class_decode_threshold: Optional[float] = typer.Option(None, "--class-decode-threshold", help=_help("class_decode_threshold", "K > 1, sparse class decoding: after the hold, a particle's images are decoded only by the classes whose last posterior is at least this (its most probable class always); 0 decodes every class. The dropped classes' posterior mass is what the fields' gradients then miss; held-out particles are always decoded by every class."), rich_help_panel=_HET),
    class_full_pass_every: Optional[int] = typer.Option(None, "--class-full-pass-every", help=_help("class_full_pass_every", "K > 1, sparse class decoding: every N-th epoch after the hold (the first included) decodes every class, so particles can still move to any class; 1 makes every epoch a full pass."), rich_help_panel=_HET),
    class_settled_change: Optional[float] = typer.Option(None, "--class-settled-change", help=_help("class_settled_change", "K > 1, sparse class decoding: an epoch that changed the most probable class of more than this share of the particles is followed by a full pass (the partition is still moving); 1: the period alone."), rich_help_panel=_HET),
    field_prior_tau2_fudge: Optional[float] = typer.Option(None, "--field-prior-tau2-fudge", help=_help("field_prior_tau2_fudge", "With --field-prior: RELION's regularisation parameter T (--tau2_fudge); the prior's SNR is multiplied by it (1: the Wiener filter of the consensus back-projection; larger: a weaker prior, sharper and noisier maps)."), rich_help_panel=_HET),
    field_prior_precondition: Optional[float] = typer.Option(None, "--field-prior-precondition", help=_help("field_prior_precondition", "With --field-prior: the backward scales the fields' gradient at each shell by min(1/s, this), s the signal's share of the shell's amplitude that the prior damps the output by, so the high shells learn at the pace of the low ones; the values the fields decode are unchanged. 1: no scaling."), rich_help_panel=_HET),
    conf_estimation: Optional[str] = typer.Option(None, "--conf-estimation", help=_help("conf_estimation", "Latent source: encoder, autodecoder or none."), rich_help_panel=_HET),
    latent_start: Optional[str] = typer.Option(None, "--latent-start", help=_help("latent_start", "Encoder: factor (its output starts as the posterior of a low-resolution factor model fitted to the data; the networks learn the rest; it needs input poses: not with --pose-estimation abinit) or none (random networks, tomoDRGN's start)."), rich_help_panel=_HET),
    field_prior: Optional[bool] = typer.Option(None, "--field-prior/--no-field-prior", help=_help("field_prior", "Regularise the fields per resolution shell with a Gaussian prior from the data's half-map FSC (RELION's Wiener prior; it needs input poses: not with --pose-estimation abinit)."), rich_help_panel=_HET),
    field_recompute: Optional[bool] = typer.Option(None, "--field-recompute/--no-field-recompute", help=_help("field_recompute", "K > 1: a training step keeps one field's activations over the batch and computes the other classes' again in the backward (the same gradients), so a full pass needs about one field's memory; --no-field-recompute keeps them all: faster full passes, K× the memory."), rich_help_panel=_HET),
    pose_estimation: Optional[str] = typer.Option(None, "--pose-estimation", help=_help("pose_estimation", "Poses: fixed (from the input), refine (pose table from the input poses) or abinit (input poses ignored, tilt geometry kept; schedule: --pose-search-epochs)."), rich_help_panel=_HET),
    pose_search_epochs: Optional[int] = typer.Option(None, "--pose-search-epochs", help=_help("pose_search_epochs", "abinit, S: epoch 1 is a low-res start (K maps to 0.25 box, then --pose-search-refine-rounds against half maps); epochs 2..S+1 search each batch before its step (fields decoded once an epoch; band 0.20-0.35 box, widening to 0.25-0.45); then gradient refinement."), rich_help_panel=_HET),
    pose_search_base_nside: Optional[int] = typer.Option(None, "--pose-search-base-nside", help=_help("pose_search_base_nside", "abinit: HEALPix nside of the coarsest grid (12n^2 directions x 6n in-plane angles, ~58.6/n deg), then 4 finer levels, 8 candidates kept."), rich_help_panel=_HET),
    pose_search_max_shift_px: Optional[float] = typer.Option(None, "--pose-search-max-shift-px", help=_help("pose_search_max_shift_px", "abinit: largest origin searched, in pixels."), rich_help_panel=_HET),
    pose_search_refine_rounds: Optional[int] = typer.Option(None, "--pose-search-refine-rounds", help=_help("pose_search_refine_rounds", "abinit, in epoch 1 after the low-res start: rounds of gold-standard refinement of its poses (particles in two fixed halves; each half searched against the other half's map of its class, to 0.45 box, Wiener-filtered by the halves' FSC; locally, the last round globally too; a class whose halves disagree (FSC < 0.143 at 0.25 box) keeps its poses). The search rounds then keep these poses but the last (K = 1, or K > 1 held), which searches globally and keeps a particle's locally refined pose where its error is smaller; 0: none."), rich_help_panel=_HET),
    pose_search_hold_classes: Optional[bool] = typer.Option(None, "--pose-search-hold-classes/--no-pose-search-hold-classes", help=_help("pose_search_hold_classes", "abinit, K > 1: hold the low-resolution start's classes through the search rounds (each class has its own frame; each particle is searched and trained in its own class's): after a refined start (--pose-search-refine-rounds) rounds 1..S-1 keep its poses; without it round 1 keeps them, rounds up to S/2 refine them locally; later rounds search globally and keep each particle's locally refined pose where its error is smaller; released for the refinement epochs."), rich_help_panel=_HET),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=_help("epochs", "Epochs (passes over all particles)."), rich_help_panel=_OPT),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=_help("batch_size", "Particles per batch (each with all its tilt images)."), rich_help_panel=_OPT),
    lr: Optional[float] = typer.Option(None, "--lr", help=_help("lr", "Learning rate of the fields."), rich_help_panel=_OPT),
    lr_encoder: Optional[float] = typer.Option(None, "--lr-encoder", help=_help("lr_encoder", "Learning rate of the encoder."), rich_help_panel=_OPT),
    lr_latent: Optional[float] = typer.Option(None, "--lr-latent", help=_help("lr_latent", "Learning rate of autodecoder latents (lazy Adam: one step per visit)."), rich_help_panel=_OPT),
    lr_score_table: Optional[float] = typer.Option(None, "--lr-score-table", help=_help("lr_score_table", "Learning rate of the class score table (K > 1)."), rich_help_panel=_OPT),
    lr_pose: Optional[float] = typer.Option(None, "--lr-pose", help=_help("lr_pose", "Learning rate of the pose table (--pose-estimation refine; shifts in units of box/4 pixels)."), rich_help_panel=_OPT),
    pose_warmup_epochs: Optional[int] = typer.Option(None, "--pose-warmup-epochs", help=_help("pose_warmup_epochs", "--pose-estimation refine: epochs the fields learn from the input poses before the poses move."), rich_help_panel=_OPT),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help=_help("val_fraction", "Share of particles held out of training to measure the validation loss (none below 20 particles, none for autodecoder latents)."), rich_help_panel=_OPT),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=_help("weight_decay", "AdamW weight decay of the networks."), rich_help_panel=_OPT),
    dose_weight: Optional[bool] = typer.Option(None, "--dose-weight/--no-dose-weight", help=_help("dose_weight", "Apply the exposure (dose) filter to predictions."), rich_help_panel=_IMG),
    tilt_weight: Optional[bool] = typer.Option(None, "--tilt-weight/--no-tilt-weight", help=_help("tilt_weight", "Weight each image's error by cos(tilt)."), rich_help_panel=_IMG),
    dose_mask: Optional[bool] = typer.Option(None, "--dose-mask/--no-dose-mask", help=_help("dose_mask", "Skip frequencies exposed beyond 2.51284·Ne(s)."), rich_help_panel=_IMG),
    field_hidden: Optional[int] = typer.Option(None, "--field-hidden", help=_help("field_hidden", "Width of each field's MLP."), rich_help_panel=_ARCH),
    field_layers: Optional[int] = typer.Option(None, "--field-layers", help=_help("field_layers", "Layers of each field's MLP."), rich_help_panel=_ARCH),
    pe_features: Optional[int] = typer.Option(None, "--pe-features", help=_help("pe_features", "Gaussian Fourier features of the 3D frequency."), rich_help_panel=_ARCH),
    pe_sigma: Optional[float] = typer.Option(None, "--pe-sigma", help=_help("pe_sigma", "Spread of the Fourier features as a fraction of the box."), rich_help_panel=_ARCH),
    enc_hidden: Optional[int] = typer.Option(None, "--enc-hidden", help=_help("enc_hidden", "Width of the encoder MLPs."), rich_help_panel=_ARCH),
    enc_layers: Optional[int] = typer.Option(None, "--enc-layers", help=_help("enc_layers", "Hidden layers of the encoder MLPs."), rich_help_panel=_ARCH),
    enc_embed: Optional[int] = typer.Option(None, "--enc-embed", help=_help("enc_embed", "Per-image embedding size before pooling."), rich_help_panel=_ARCH),
    enc_grid: Optional[int] = typer.Option(None, "--enc-grid", help=_help("enc_grid", "Points per axis of the encoder's back-projection grid."), rich_help_panel=_ARCH),
    seed: Optional[int] = typer.Option(None, "--seed", help=_help("seed", "Random seed (initialisation, batch order, latent noise)."), rich_help_panel=_RUN),
    device: Optional[str] = typer.Option(None, "--device", help=_help("device", "auto, cpu, cuda or cuda:N."), rich_help_panel=_RUN),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help=_help("amp", "bf16 mixed precision of the networks: auto (neither option) is bf16 on GPU and fp32 on CPU; --amp also on CPU. Phases and Fourier features stay fp32."), rich_help_panel=_RUN),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help=_help("checkpoint_every", "Save weights and latents every N epochs (the last is always saved)."), rich_help_panel=_RUN),
    threads: Optional[int] = typer.Option(None, "--threads", help=_help("threads", "CPU threads for torch."), rich_help_panel=_RUN),
    load: Optional[str] = typer.Option(None, "--load", help="Resume: 'latest' (the newest state, mid-epoch included) or an epoch number.", rich_help_panel=_RUN),
    force: bool = typer.Option(False, "--force", help="Start over in a directory that already holds a run (with --load N: discard what was trained after epoch N).", rich_help_panel=_RUN),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines.", rich_help_panel=_RUN),
) -> None:
    """Train K neural fields on a prepared dataset (tomoDRGN's train_vae, Hydra's mixture, cryoDRGN's train_vae/train_nn).

    With --load, the run's stored settings apply; --config and options may change only epochs,
    batch_size, device, threads, amp and checkpoint_every (any other difference is an error).
    """
    import sys

    from hetfield.cli._common import command_line
    from hetfield.errors import Interrupted
    from hetfield.train.config import resolve_config
    from hetfield.train.prepare import resume_config

    overrides = {k: v for k, v in locals().items() if k in TrainConfig.__dataclass_fields__}
    sources = None
    if load is not None:
        cfg, sources = resume_config(run, config, overrides)
    else:
        cfg = resolve_config(config, overrides)
    # torch only now: a bad option, dataset path or run directory is answered in a fraction of a
    # second, not after its import (seconds); train() checks all of them again, the dataset fully
    from hetfield.data.dataset import Dataset
    from hetfield.train.prepare import check_location, refuse
    from hetfield.train.rundir import RunDir

    ds, run_dir = Dataset.open(data), RunDir(run)
    check_location(run_dir, load)
    refuse(run_dir, cfg, ds, load, force, sources)
    from hetfield.train.loop import train as run_training

    from rich.console import Console

    console = Console(stderr=True)
    echo = None if quiet else (lambda msg: console.print(msg, highlight=False, markup=False, soft_wrap=True))
    with _TrainProgress(enabled=not quiet and console.is_terminal, console=console) as progress:
        try:
            run_training(run, data, cfg, load=load, force=force, command=command_line(), echo=echo, progress=progress.update, sources=sources)
        except Interrupted as stop:  # not an error: one line saying where it stopped and how to go on
            print(f"hetfield: {stop}", file=sys.stderr)
            sys.exit(stop.exit_code)


class _TrainProgress:
    """Rich progress bar of one epoch with the running loss and images/s (read at most 4×/s)."""

    def __init__(self, enabled: bool, console):
        self.enabled, self.console = enabled, console
        self._progress = None
        self._task = None
        self._epoch = None
        self._last = 0.0

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} images/s"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def update(self, epoch: int, step: int, info: dict) -> None:
        if self._progress is None:
            return
        import time

        if self._epoch != epoch:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task("train", total=info["steps"], epoch=epoch + 1, loss="…", speed="…")
            self._epoch = epoch
        now = time.perf_counter()
        fields = {}
        if now - self._last > 0.25 or step == info["steps"]:
            s = info["sums"]
            p = float(s[3])  # a host sync, at most a few times per second
            fields = {"loss": f"{float(s[0]) / max(p, 1):.4f}", "speed": f"{info['images'] / max(now - info['t0'], 1e-9):.0f}"}
            self._last = now
        self._progress.update(self._task, completed=step, **fields)
