"""Ground-truth simulator: K classes with continuous motion, tilt series or SPA images, CTF, dose, noise.

``simulate(out_dir, **params) -> dict`` writes a dataset (see :mod:`.simulator`); the parameters are the
fields of :class:`SimulationParams`. ``load_phantom(out_dir).volume(k, t, box)`` gives the true volume
of class ``k`` at any motion coordinate ``t``. Modules: ``params`` (options and validation), ``phantoms`` (the
volumes), ``acquisition`` (poses, tilt scheme, CTF, dose, shifts), ``render`` (shift, CTF and dose
filter on a padded grid), ``writers`` (STAR, MRC, CSV), ``simulator`` (the two passes and the outputs), ``truth`` (the
ground-truth files and :func:`load_phantom`).
"""

from hetfield.data.simulate.params import SimulationParams
from hetfield.data.simulate.simulator import simulate
from hetfield.data.simulate.truth import CONVENTIONS, load_phantom

__all__ = ["CONVENTIONS", "SimulationParams", "load_phantom", "simulate"]
