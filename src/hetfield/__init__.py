"""hetfield: structural heterogeneity from cryo-ET tilt series and cryo-EM particles with neural fields.

The package is a library first; the ``hetfield`` command is a thin typer layer over it. The public
API is the names below, from STAR file to volume::

    table = hetfield.read_particles("particles.star", datadir="stacks/")   # -> ParticleTable
    hetfield.prepare_dataset("data/", "particles.star", datadir="stacks/")  # what `hetfield setup` does
    ds = hetfield.open_dataset("data/")            # a prepared dataset
    hetfield.train_run("runs/z8", "data/", hetfield.TrainConfig(zdim=8))   # what `hetfield train` does
    model, config, epoch = hetfield.load_run("runs/z8", epoch="last")
    vols = hetfield.decode_volumes(model, z, class_idx)
    hetfield.metrics.fsc(a, b, pixel_size_A)        # FSC, masked correlation, ARI/NMI, ...

plus every error class (all derive from :class:`HetfieldError`) and ``__version__``.

Training is ``train_run``, not ``train``: ``hetfield.train`` is the subpackage, and Python's import
system rebinds that attribute to the subpackage whenever it is first imported (``TrainConfig`` does
it), so a function of that name would work or not depending on what was imported before.

Heavy dependencies (torch, pandas, scikit-learn, umap) are imported by the modules that need them,
never here: each public name is imported on first use (PEP 562 ``__getattr__``), so that
``import hetfield`` and ``hetfield --help`` stay fast. Code inside the package imports from the
module a name lives in, never from this facade (only ``__version__``), so the facade hides no cycle.
"""

__version__ = "0.1.0"

# The error tree is cheap (no third-party imports) and needed by every caller's ``except``.
from hetfield.errors import (  # noqa: E402
    ConfigError,
    CudaOutOfMemory,
    DatasetError,
    HetfieldError,
    InputError,
    Interrupted,
    RunError,
)

# public name -> "module:attribute" ("module" alone: the module itself). The one place each lives.
_LAZY = {
    "read_particles": "hetfield.io.readers:read_particles",
    "prepare_dataset": "hetfield.data.preprocess:prepare_dataset",
    "open_dataset": "hetfield.data.dataset:Dataset.open",
    "TrainConfig": "hetfield.train.config:TrainConfig",
    "train_run": "hetfield.train.loop:train",
    "load_run": "hetfield.train.load:load_trained",
    "decode_volumes": "hetfield.model.decode:decode_volumes",
    "metrics": "hetfield.analysis.metrics",
}

__all__ = [
    "__version__",
    "read_particles",
    "prepare_dataset",
    "open_dataset",
    "TrainConfig",
    "train_run",
    "load_run",
    "decode_volumes",
    "metrics",
    "HetfieldError",
    "InputError",
    "ConfigError",
    "DatasetError",
    "RunError",
    "Interrupted",
    "CudaOutOfMemory",
]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'hetfield' has no attribute {name!r}")
    import importlib

    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    globals()[name] = obj  # later look-ups are plain attribute reads
    return obj


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
