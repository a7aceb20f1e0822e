"""hetfield: structural heterogeneity from cryo-ET tilt series and cryo-EM particles with neural fields.

The package is a library first; the ``hetfield`` command is a thin typer layer over it. Heavy
dependencies (torch, pandas, scikit-learn, umap) are imported by the modules that need them, never
here, so that ``import hetfield`` and ``hetfield --help`` stay fast.
"""

__version__ = "0.1.0"

from hetfield.errors import HetfieldError  # noqa: E402  (cheap: no heavy imports)

__all__ = ["HetfieldError", "__version__"]
