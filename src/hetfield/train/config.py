"""Training settings: defaults, a YAML base file, command-line overrides, and validation.

Precedence: built-in defaults < ``--config FILE`` < options given on the command line. Every value
is checked before any work starts; a bad one is a :class:`~hetfield.errors.ConfigError` naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Collection

from hetfield.errors import ConfigError

CONF_ESTIMATION = ("encoder", "autodecoder", "none")
POSE_ESTIMATION = ("fixed", "refine", "abinit")
LATENT_START = ("factor", "none")


@dataclass
class TrainConfig:
    # heterogeneity
    zdim: int = 8
    # None: 2·std_noise², the ELBO's own weight. The data term is a per-value mean of squared errors
    # and the KL is spread over the particle's n values, so the Gaussian log-likelihood n·err/(2σ²)
    # plus the KL, divided by n/(2σ²), is err + 2σ²·KL/n. tomoDRGN's 1/zdim (0.25 at zdim 4)
    # under-weights the KL 8×: latents became overconfident and, from the factor start, the motion's
    # ordering decayed (|Spearman| 0.95 → 0.63 in 9 epochs; docs/internals.md, the K = 1 latent).
    beta: float | None = None
    n_classes: int = 1
    std_noise: float = 1.0
    class_init_epochs: int = 1
    class_hold_epochs: int = 2
    # sparse class decoding (K > 1; train.class_decoding): a particle's images are decoded only by the
    # classes whose last posterior is >= the threshold (its best class always), except in every
    # class_full_pass_every-th epoch after the hold, which decodes all. 0 or 1: always all classes.
    class_decode_threshold: float = 0.01
    class_full_pass_every: int = 5
    # ... and only once the partition has settled: an epoch that changed the most probable class of
    # more than this share of the particles is followed by a full pass (1: the period alone). With the
    # field prior the partition still moved after the first free epoch (12 % of three simulated
    # classes), and sparse epochs froze it there: ARI 0.79 against 0.95.
    class_settled_change: float = 0.02
    # A training step keeps one field's activations over the batch and runs the rest again in the
    # backward (model.fields): a full pass of K fields then needs about one field's memory, not K×.
    field_recompute: bool = True
    conf_estimation: str = "encoder"
    # The encoder's latent starts from a low-resolution factor model (train.latent_start); "none":
    # random networks only (tomoDRGN's start; k-means ARI ≈ 0 on tomo-sim-50S, 0.97 with it).
    latent_start: str = "factor"
    # A Gaussian prior per shell on the fields, from the data's half-map FSC (train.field_prior):
    # tomo-sim-50S class maps correlate 0.81 with the truth unfiltered with it, 0.55 without.
    field_prior: bool = True
    # RELION's regularisation parameter T: the prior's SNR × T. At T = 1 (the consensus's Wiener
    # filter) the fields' high shells learned slowly: tomo-sim-50S, 12 maps, FSC to the truth at
    # shell 8 0.13-0.58, at T = 4 0.24-0.63, the same map cc (docs/internals.md, "The K = 1 latent").
    field_prior_tau2_fudge: float = 4.0
    # The prior damps the fields' output by the signal's share s(r) of each shell, and with it their
    # gradients there: the high shells learned slowly (tomo-sim-50S, K = 1 seed 0: 40 epochs reached
    # FSC 0.62 at shell 9 where 20 reached 0.46). The backward scales each shell's gradient by
    # min(1/s(r), this) (1: none). None: 4 for one field (3 seeds: map cc +0.011 to +0.020), 1 for a
    # mixture (its cc −0.001 to −0.007 at 4) (docs/internals.md, "The K = 1 latent").
    field_prior_precondition: float | None = None
    pose_estimation: str = "fixed"
    # optimisation
    epochs: int = 20
    batch_size: int = 4
    # Fields learn fine structure faster at 3e-3; the encoder's latent is steadier at 1e-3
    # (3 simulated seeds: |Spearman(z, t)| 0.86 vs 0.76, FSC at half Nyquist 0.61 vs 0.43).
    lr: float = 3e-3
    lr_encoder: float | None = 1e-3  # None: the same as lr
    lr_latent: float = 0.1
    lr_score_table: float = 1e-2
    lr_pose: float = 3e-3
    pose_warmup_epochs: int = 2
    # --pose-estimation abinit (train/abinit.py): search rounds, coarsest grid, shift range
    pose_search_epochs: int = 6
    pose_search_base_nside: int = 4
    pose_search_max_shift_px: float | None = None  # None: box / 10
    # rounds of gold-standard refinement of the start's poses (train/abinit_refine.py; 0: none)
    pose_search_refine_rounds: int = 3
    # K > 1: the start's classes held through the search rounds, each particle searched and trained
    # in its own class's frame (released, tilt series 200 particles: ARI 0.92 at the start fell to 0.36)
    pose_search_hold_classes: bool = True
    weight_decay: float = 0.0
    val_fraction: float = 0.05
    # imaging
    dose_weight: bool = True
    tilt_weight: bool = True
    dose_mask: bool = True
    # architecture
    field_hidden: int = 256
    field_layers: int = 3
    pe_features: int = 64
    pe_sigma: float = 0.25
    enc_hidden: int = 256
    enc_layers: int = 2
    enc_embed: int = 128
    enc_grid: int = 8
    # run
    seed: int = 0
    device: str = "auto"
    # bf16 autocast of the networks: "auto" (on GPU, not on CPU), true (also on CPU) or false.
    amp: bool | str = "auto"
    checkpoint_every: int = 1
    threads: int | None = None

    @property
    def effective_beta(self) -> float:
        if self.beta is not None:
            return float(self.beta)
        return 2.0 * float(self.std_noise) ** 2 if self.zdim > 0 else 0.0

    @property
    def effective_field_prior_precondition(self) -> float:
        if self.field_prior_precondition is not None:
            return float(self.field_prior_precondition)
        return 4.0 if self.n_classes == 1 else 1.0

    @property
    def effective_conf_estimation(self) -> str:
        return "none" if self.zdim == 0 else self.conf_estimation

    @property
    def effective_class_init_epochs(self) -> int:
        """The mixture's EM start (epochs of consensus before it); abinit: 0, its low-resolution start
        gives the classes (train.abinit)."""
        return 0 if self.pose_estimation == "abinit" else self.class_init_epochs

    @property
    def class_start_held(self) -> bool:
        """Whether the first ``class_hold_epochs`` hold the starting partition (EM or abinit's start)."""
        return self.effective_class_init_epochs > 0 or self.pose_estimation == "abinit"

    @property
    def effective_class_hold_epochs(self) -> int:
        """Epochs after the start in which the partition is held: abinit with ``pose_search_hold_classes``
        holds its low-resolution start's classes through the search rounds too (train.abinit)."""
        if self.pose_estimation == "abinit" and self.pose_search_hold_classes and self.n_classes > 1:
            return max(self.class_hold_epochs, 1 + self.pose_search_epochs)
        return self.class_hold_epochs

    @property
    def class_hold_end(self) -> int:
        """(0-based) first epoch whose partition is free, after the consensus and the hold (0 when no
        start is held): sparse decoding, the trainer's hold and abinit's held search all end here."""
        return self.effective_class_init_epochs + self.effective_class_hold_epochs if self.class_start_held else 0

    @property
    def effective_pose_warmup_epochs(self) -> int:
        """First epoch whose steps move the pose table: abinit refines by gradient after its search rounds."""
        return 1 + self.pose_search_epochs if self.pose_estimation == "abinit" else self.pose_warmup_epochs

    def validate(self, where: str | None = None, config_file: tuple[str | Path, Collection[str]] | None = None) -> "TrainConfig":
        """Check every value; ``where`` names a stored file the values came from (else the options);
        ``config_file`` is a ``--config`` YAML and the options read from it (a bad one is named there,
        not as the command-line option the user did not type)."""

        def bad(option: str, message: str):
            if where:
                name, todo = f"{where}: train.{option}", f"fix train.{option} in that file"
            elif config_file is not None and option in config_file[1]:
                name, todo = f"--config {config_file[0]}: {option}", f"fix {option} in that file"
            else:
                name = f"--{option.replace('_', '-')}"
                todo = f"change {name} (hetfield train --help lists each option's range)"
            # A message that already says what to do (after a ';') keeps its own advice.
            raise ConfigError(f"{name} {getattr(self, option)!r}: {message}" + ("" if ";" in message else f"; {todo}"))

        ints_min = {
            "zdim": 0, "n_classes": 1, "epochs": 1, "batch_size": 1, "field_hidden": 1, "field_layers": 1,
            "pe_features": 1, "enc_hidden": 1, "enc_layers": 1, "enc_embed": 1, "enc_grid": 2, "checkpoint_every": 1,
        }
        for name, lo in ints_min.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, "must be a whole number")
            if v < lo:
                bad(name, f"must be at least {lo}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "must be a whole number of at least 1")
        if self.lr_encoder is not None and (isinstance(self.lr_encoder, bool) or not isinstance(self.lr_encoder, (int, float)) or not self.lr_encoder > 0):
            bad("lr_encoder", "must be a positive number")
        p = self.field_prior_precondition
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1):
            bad("field_prior_precondition", "must be a number of at least 1 (1: no preconditioning)")
        positive = ("std_noise", "lr", "lr_latent", "lr_score_table", "lr_pose", "pe_sigma", "field_prior_tau2_fudge")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                bad(name, "must be a positive number")
        if self.beta is not None and (isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not self.beta >= 0):
            bad("beta", "must be zero or positive (the KL weight)")
        if isinstance(self.pose_warmup_epochs, bool) or not isinstance(self.pose_warmup_epochs, int) or self.pose_warmup_epochs < 0:
            bad("pose_warmup_epochs", "must be a whole number of epochs, 0 or more")
        if isinstance(self.class_init_epochs, bool) or not isinstance(self.class_init_epochs, int) or self.class_init_epochs < 0:
            bad("class_init_epochs", "must be a whole number of epochs, 0 or more")
        if isinstance(self.class_hold_epochs, bool) or not isinstance(self.class_hold_epochs, int) or self.class_hold_epochs < 0:
            bad("class_hold_epochs", "must be a whole number of epochs, 0 or more")
        if isinstance(self.class_decode_threshold, bool) or not isinstance(self.class_decode_threshold, (int, float)) or not 0 <= self.class_decode_threshold <= 1:
            bad("class_decode_threshold", "must be in [0, 1]: the posterior below which a class is not decoded for a particle (0: decode every class)")
        if isinstance(self.class_full_pass_every, bool) or not isinstance(self.class_full_pass_every, int) or self.class_full_pass_every < 1:
            bad("class_full_pass_every", "must be a whole number of epochs, at least 1 (1: every epoch decodes every class)")
        if isinstance(self.class_settled_change, bool) or not isinstance(self.class_settled_change, (int, float)) or not 0 <= self.class_settled_change <= 1:
            bad("class_settled_change", "must be in [0, 1]: the share of particles changing class above which the next epoch decodes every class (1: the period alone)")
        if isinstance(self.pose_search_epochs, bool) or not isinstance(self.pose_search_epochs, int) or self.pose_search_epochs < 1:
            bad("pose_search_epochs", "must be a whole number of epochs, 1 or more")
        r = self.pose_search_refine_rounds
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            bad("pose_search_refine_rounds", "must be a whole number of rounds, 0 or more (0: the start's poses as they are)")
        if self.pose_search_base_nside not in (1, 2, 4, 8) or isinstance(self.pose_search_base_nside, bool):
            bad("pose_search_base_nside", "choose 1, 2, 4 or 8 (HEALPix nside of the coarsest grid: 58.6°/nside)")
        m = self.pose_search_max_shift_px
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not m >= 0):
            bad("pose_search_max_shift_px", "must be zero or a positive number of pixels")
        if self.pose_estimation == "abinit" and self.epochs <= self.pose_search_epochs + 1:
            bad("epochs", f"--pose-estimation abinit needs more than 1 + --pose-search-epochs {self.pose_search_epochs} epochs (the low-resolution start, the search rounds, then refinement)")
        if self.n_classes > 1 and self.class_init_epochs >= self.epochs:
            bad("class_init_epochs", f"must be smaller than --epochs {self.epochs}: the classes are learned after it")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 0.5:
            bad("val_fraction", "must be in [0, 0.5): the share of particles held out to measure generalisation")
        for name in ("dose_weight", "tilt_weight", "dose_mask", "field_prior", "field_recompute", "pose_search_hold_classes"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if not isinstance(self.amp, bool) and self.amp != "auto":
            bad("amp", "must be auto (bf16 on GPU, fp32 on CPU), true (bf16 mixed precision) or false (fp32)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            bad("seed", "must be a whole number")
        if not isinstance(self.device, str):
            bad("device", "choose auto, cpu, cuda or cuda:N")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            bad("weight_decay", "must be zero or positive")
        if self.latent_start not in LATENT_START:
            bad("latent_start", f"choose one of {', '.join(LATENT_START)}")
        if self.conf_estimation not in CONF_ESTIMATION:
            bad("conf_estimation", f"choose one of {', '.join(CONF_ESTIMATION)}")
        if self.pose_estimation not in POSE_ESTIMATION:
            bad("pose_estimation", f"choose one of {', '.join(POSE_ESTIMATION)}")
        if self.conf_estimation == "none" and self.zdim > 0:
            bad("zdim", "--conf-estimation none is the homogeneous model; use --zdim 0 with it")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            bad("device", "choose auto, cpu, cuda or cuda:N")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))

# What runs and checkpoints written before an option existed were trained with.
PREDATED = {
    "latent_start": "none", "field_prior": False, "field_prior_tau2_fudge": 1.0, "field_prior_precondition": 1.0, "class_decode_threshold": 0.0, "class_full_pass_every": 1,
    "class_settled_change": 1.0, "field_recompute": False,
    # no ab initio then: any value reads the same
    "pose_search_epochs": 6, "pose_search_base_nside": 4, "pose_search_max_shift_px": None,
    "pose_search_hold_classes": False,  # abinit K > 1 before it released the start's classes after class_hold_epochs
    "pose_search_refine_rounds": 0,  # abinit before the start's poses were refined against half maps
}

# What a default of None means, for the help text (the defaults themselves come from TrainConfig).
_NONE_MEANS = {"field_prior_precondition": "4 for one field, 1 (none) for a mixture", "pose_search_max_shift_px": "box/10", "beta": "2·std_noise², the ELBO's", "lr_encoder": "the same as --lr", "threads": "torch's choice"}


def option_default_text(name: str) -> str:
    """The default of option ``name`` as ``train --help`` shows it, read from :class:`TrainConfig`."""
    value = {f.name: f.default for f in fields(TrainConfig)}[name]
    if value is None:
        return _NONE_MEANS[name]
    if isinstance(value, bool):
        return f"--{name.replace('_', '-')}" if value else f"--no-{name.replace('_', '-')}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def load_config_file(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}: unreadable YAML{where}; fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"--config {path}: unknown option(s) {', '.join(unknown)}; remove or rename them (valid: {', '.join(FIELD_NAMES)})")
    return data


def resolve_config(config_file: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < YAML file < non-None ``overrides`` (the options given on the command line)."""
    from_file = load_config_file(Path(config_file)) if config_file is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    return layered_config({}, config_file, from_file, given)


def layered_config(stored: dict[str, Any], config_file: Path | None, from_file: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """``stored`` < ``from_file`` (read from ``config_file``) < ``given`` (the command line), validated;
    a bad value from the file is named there."""
    try:
        cfg = TrainConfig(**{**stored, **from_file, **given})
    except TypeError as err:
        raise ConfigError(f"invalid training options: {err}") from None
    return cfg.validate(config_file=None if config_file is None else (config_file, set(from_file) - set(given)))
