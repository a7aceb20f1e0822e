"""Ground-truth simulator: K classes with continuous motion, tilt series or SPA images, CTF, dose, noise.

``simulate(out_dir, **params) -> dict`` writes a dataset (see :mod:`.simulator`); the parameters are the
fields of :class:`SimulationParams`. ``load_phantom(out_dir).volume(k, t, box)`` gives the true volume
of class ``k`` at any motion coordinate ``t``. Modules: ``params`` (options and validation), ``phantoms`` (the
volumes), ``acquisition`` (poses, tilt scheme, CTF, dose, shifts), ``render`` (shift, CTF and dose
filter on a padded grid), ``writers`` (STAR, MRC, CSV), ``simulator`` (the two passes and the outputs).
"""

from hetfield.data.simulate.params import SimulationParams
from hetfield.data.simulate.simulator import CONVENTIONS, load_phantom, simulate

__all__ = ["CONVENTIONS", "SimulationParams", "load_phantom", "simulate"]
