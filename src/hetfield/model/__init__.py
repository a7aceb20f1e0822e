"""The model: decoded lattice points (``points``), K neural fields (``fields``), the tilt-set encoder
and its featurisation (``encoder``), latent/score/pose tables (``tables``), the forward model that
renders a batch (``forward``), the objective (``loss``), the module tying them together
(``reconstruction``, shaped by ``shape``) and the one volume decoder (``decode``)."""
