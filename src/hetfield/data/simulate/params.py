"""The simulator's parameters and their validation (cheap: no numpy or torch at import).

Every check runs before any work and raises :class:`~hetfield.errors.ConfigError` with one line that
names the command-line option (``--box``…), the bad value and what to do. Library callers pass the
same names as keyword arguments (``box=32``), so the message maps onto either spelling.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hetfield.errors import ConfigError

MODES = ("tilt", "spa")
CLASS_DIFFERENCES = ("domain", "subunits")  # how the phantom's classes differ (phantoms.Phantom.make)
MIN_BOX = 16
MAX_BOX = 512


@dataclass
class SimulationParams:
    """Everything that defines a simulated dataset; the same values and seed give identical bytes."""

    n_particles: int = 200
    n_classes: int = 2
    box: int = 32
    pixel_size_A: float = 8.0
    mode: str = "tilt"
    n_tilts: int = 11
    min_tilts: int | None = None  # None: every particle has all n_tilts images
    tilt_step_deg: float = 6.0
    dose_per_tilt: float = 3.0  # e/Å² per tilt image
    snr: float = 0.5
    motion: bool = True
    classes_differ_by: str = "domain"  # "domain": where each class's domain sits; "subunits": k extra subunits
    class_fractions: list[float] | None = None  # None: balanced
    defocus_A: float = 15000.0
    voltage_kV: float = 300.0
    seed: int = 0
    write_clean: bool = False
    force: bool = False
    # Finer knobs (library only; recorded in truth.yaml).
    defocus_spread_A: float = 1500.0  # sd of the per-micrograph / per-tomogram mean defocus
    astigmatism_A: float = 300.0  # max of (dU - dV) / 2, drawn uniformly per micrograph / tomogram
    tilt_defocus_sd_A: float = 100.0  # per-tilt defocus jitter within a tilt series
    ice_thickness_A: float = 800.0  # particle depths uniform in +-thickness/2
    field_half_width_A: float = 2000.0  # particle x positions uniform in +-this (defocus gradient at tilt)
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    phase_shift_deg: float = 0.0
    shift_sd_px: float | None = None  # default: min(1.5, box/16)
    max_shift_px: float | None = None  # default: min(3, box/8), so small boxes work out of the box
    motion_angle_deg: float = 100.0  # swing of the moving domain over t in [0, 1]
    tilt_noise_scaling: bool = True  # noise variance of a tilt image grows as 1/cos(tilt)
    particles_per_group: int = 50  # particles per tomogram / micrograph
    images_per_stack: int = 10000
    threads: int = 1  # torch CPU threads while simulating; the output does not depend on it (tested)
    truth_t_values: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SimulationParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(f"simulate: unknown parameter(s) {unknown}; use one of {sorted(names)}")
        return cls(**kwargs).validated()

    # ------------------------------------------------------------------------------------------
    def validated(self) -> SimulationParams:
        """Check and normalise every value (types, ranges, fractions); return ``self``."""
        self.n_particles = _int(self.n_particles, "--n-particles")
        self.n_classes = _int(self.n_classes, "--n-classes")
        self.box = _int(self.box, "--box")
        self.n_tilts = _int(self.n_tilts, "--n-tilts")
        self.seed = _int(self.seed, "--seed")
        self.particles_per_group = _int(self.particles_per_group, "particles_per_group")
        self.images_per_stack = _int(self.images_per_stack, "images_per_stack")
        self.threads = _int(self.threads, "--threads")
        if self.max_shift_px is None:
            self.max_shift_px = min(3.0, self.box / 8)
        if self.shift_sd_px is None:
            self.shift_sd_px = min(1.5, self.box / 16)
        if self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: need at least 1 CPU thread; give --threads 1 or more")
        for name, opt in (
            ("pixel_size_A", "--pixel-size-A"), ("tilt_step_deg", "--tilt-step-deg"),
            ("dose_per_tilt", "--dose-per-tilt"), ("snr", "--snr"), ("defocus_A", "--defocus-A"),
            ("voltage_kV", "--voltage-kV"), ("defocus_spread_A", "defocus_spread_A"),
            ("astigmatism_A", "astigmatism_A"), ("tilt_defocus_sd_A", "tilt_defocus_sd_A"),
            ("ice_thickness_A", "ice_thickness_A"), ("field_half_width_A", "field_half_width_A"),
            ("cs_mm", "cs_mm"), ("amplitude_contrast", "amplitude_contrast"),
            ("phase_shift_deg", "phase_shift_deg"), ("shift_sd_px", "shift_sd_px"),
            ("max_shift_px", "max_shift_px"), ("motion_angle_deg", "motion_angle_deg"),
        ):
            setattr(self, name, _float(getattr(self, name), opt))

        if self.n_particles < 1:
            raise ConfigError(f"--n-particles {self.n_particles}: need at least 1 particle; give e.g. --n-particles 200")
        if self.n_classes < 1:
            raise ConfigError(f"--n-classes {self.n_classes}: need at least 1 class; give e.g. --n-classes 2")
        if self.n_classes > self.n_particles:
            raise ConfigError(
                f"--n-classes {self.n_classes} exceeds --n-particles {self.n_particles}; "
                "ask for more particles or fewer classes"
            )
        if self.box % 2 or self.box < MIN_BOX or self.box > MAX_BOX:
            raise ConfigError(
                f"--box {self.box}: the box must be an even number of pixels in [{MIN_BOX}, {MAX_BOX}]; "
                "try 32 or 64"
            )
        if self.pixel_size_A <= 0:
            raise ConfigError(f"--pixel-size-A {self.pixel_size_A}: the pixel size must be positive (Å); give e.g. --pixel-size-A 8")
        mode = str(self.mode).strip().lower()
        if mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        self.mode = mode
        differ = str(self.classes_differ_by).strip().lower()
        if differ not in CLASS_DIFFERENCES:
            raise ConfigError(f"--classes-differ-by {self.classes_differ_by!r}: choose one of {', '.join(CLASS_DIFFERENCES)}")
        self.classes_differ_by = differ
        if not self.snr > 0:
            raise ConfigError(f"--snr {self.snr}: the signal-to-noise ratio must be positive, e.g. 0.5")
        if self.defocus_A <= 0:
            raise ConfigError(f"--defocus-A {self.defocus_A}: the mean defocus must be positive (Å, underfocus); give e.g. --defocus-A 15000")
        if not 60 <= self.voltage_kV <= 1000:
            raise ConfigError(f"--voltage-kV {self.voltage_kV}: use an acceleration voltage in kV, e.g. 300")
        if self.seed < 0:
            raise ConfigError(f"--seed {self.seed}: the seed must be a non-negative integer; give e.g. --seed 0")
        if not 0 <= self.amplitude_contrast < 1:
            raise ConfigError(f"amplitude_contrast {self.amplitude_contrast}: must be in [0, 1); give e.g. 0.1")
        for name in ("defocus_spread_A", "astigmatism_A", "tilt_defocus_sd_A", "ice_thickness_A",
                     "field_half_width_A", "shift_sd_px", "max_shift_px", "cs_mm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)}: must be >= 0; give 0 or a positive value")
        if self.max_shift_px > self.box / 8:
            raise ConfigError(
                f"max_shift_px {self.max_shift_px}: keep shifts within box/8 = {self.box / 8:g} px so the "
                "particle stays inside the box"
            )
        if self.particles_per_group < 1 or self.images_per_stack < 1:
            raise ConfigError("particles_per_group and images_per_stack must be >= 1; give 1 or more")
        if self.mode == "tilt":
            self._validate_tilts()
        else:
            self.min_tilts = None
        self.class_fractions = _fractions(self.class_fractions, self.n_classes)
        ts = [_float(t, "truth_t_values") for t in self.truth_t_values]
        if not ts or any(not 0 <= t <= 1 for t in ts):
            raise ConfigError(f"truth_t_values {self.truth_t_values}: need values in [0, 1]; give e.g. 0, 0.5, 1")
        self.truth_t_values = ts
        self.motion = bool(self.motion)
        self.write_clean = bool(self.write_clean)
        self.force = bool(self.force)
        self.tilt_noise_scaling = bool(self.tilt_noise_scaling)
        return self

    def _validate_tilts(self) -> None:
        if self.n_tilts < 1:
            raise ConfigError(f"--n-tilts {self.n_tilts}: need at least 1 tilt image per particle; give e.g. --n-tilts 11")
        if self.min_tilts is None:
            self.min_tilts = self.n_tilts
        self.min_tilts = _int(self.min_tilts, "--min-tilts")
        if not 1 <= self.min_tilts <= self.n_tilts:
            raise ConfigError(
                f"--min-tilts {self.min_tilts}: must be between 1 and --n-tilts {self.n_tilts}; give a value in that range"
            )
        if self.n_tilts > 1 and self.tilt_step_deg <= 0:
            raise ConfigError(f"--tilt-step-deg {self.tilt_step_deg}: the tilt step must be positive (degrees); give e.g. --tilt-step-deg 6")
        max_tilt = math.ceil((self.n_tilts - 1) / 2) * self.tilt_step_deg
        if max_tilt >= 90:
            raise ConfigError(
                f"--n-tilts {self.n_tilts} with --tilt-step-deg {self.tilt_step_deg:g} reaches ±{max_tilt:g}°; "
                "the tilt range must stay below ±90°: use fewer tilts or a smaller step"
            )
        if self.dose_per_tilt < 0:
            raise ConfigError(f"--dose-per-tilt {self.dose_per_tilt}: the dose must be >= 0 (e/Å² per tilt); give e.g. --dose-per-tilt 3")

    @property
    def images_per_particle_max(self) -> int:
        return self.n_tilts if self.mode == "tilt" else 1

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _int(value: Any, opt: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{opt} {value!r}: expected an integer; give a whole number")
    try:
        as_float = float(value)
        out = int(as_float)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{opt} {value!r}: expected an integer; give a whole number") from None
    if out != as_float:
        raise ConfigError(f"{opt} {value!r}: expected an integer; give a whole number")
    return out


def _float(value: Any, opt: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{opt} {value!r}: expected a number; give e.g. 1.5") from None
    if not math.isfinite(out):
        raise ConfigError(f"{opt} {value!r}: expected a finite number; give e.g. 1.5")
    return out


def _fractions(value: Any, n_classes: int) -> list[float]:
    """``None`` (balanced), ``"0.5,0.5"`` or a sequence -> ``n_classes`` fractions summing to 1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return [1.0 / n_classes] * n_classes
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        fr = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(
            f"--class-fractions {value!r}: expected comma-separated numbers such as 0.5,0.5"
        ) from None
    if len(fr) != n_classes:
        raise ConfigError(
            f"--class-fractions {value!r}: got {len(fr)} fractions for --n-classes {n_classes}; "
            "give one fraction per class"
        )
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise ConfigError(f"--class-fractions {value!r}: fractions must be finite and >= 0; give e.g. 0.5,0.5")
    total = sum(fr)
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"--class-fractions {value!r}: the fractions sum to {total:g}; make them sum to 1")
    return [f / total for f in fr]
