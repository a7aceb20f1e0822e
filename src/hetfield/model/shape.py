"""What fixes a model's parameters: the dataset's sizes and the architecture options of training.

``ModelShape`` is stored with every checkpoint (``asdict``) and rebuilt from it to load a run. Its
option fields are not retyped here: names, types and defaults come from
:class:`~hetfield.train.config.TrainConfig`, so an architecture option has one definition.
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass

from hetfield.train.config import PREDATED, TrainConfig

# The training options that decide the model's parameters (in checkpoint order).
ARCHITECTURE_OPTIONS = (
    "zdim",
    "n_classes",
    "conf_estimation",
    "pose_estimation",
    "field_hidden",
    "field_layers",
    "pe_features",
    "pe_sigma",
    "enc_hidden",
    "enc_layers",
    "enc_embed",
    "enc_grid",
    "latent_start",
    "field_prior",
    "seed",
)

_OPTION = {f.name: f for f in fields(TrainConfig)}



def _from_config(cls, cfg: TrainConfig, dataset) -> "ModelShape":
    """The shape of a model trained on ``dataset`` with ``cfg`` (``conf_estimation`` as it takes effect)."""
    options = {name: getattr(cfg, name) for name in ARCHITECTURE_OPTIONS}
    options["conf_estimation"] = cfg.effective_conf_estimation
    if cfg.pose_estimation == "abinit":  # both starts read the images at their poses: there are none yet
        options.update(latent_start="none", field_prior=False)
    return cls(box=dataset.box, n_particles=dataset.n_particles, n_images=dataset.n_images, **options)


def _from_stored(cls, stored: dict) -> "ModelShape":
    """The shape a checkpoint stored (``asdict``); options it predates take their values of before."""
    return cls(**{**{k: v for k, v in PREDATED.items() if k in ARCHITECTURE_OPTIONS}, **stored})


ModelShape = make_dataclass(
    "ModelShape",
    [("box", int), ("n_particles", int), ("n_images", int)]
    + [(name, _OPTION[name].type, field(default=_OPTION[name].default)) for name in ARCHITECTURE_OPTIONS],
    frozen=True,
    namespace={"from_config": classmethod(_from_config), "from_stored": classmethod(_from_stored), "__doc__": "What fixes the model's parameters (stored with every checkpoint)."},
)
ModelShape.__module__ = __name__
