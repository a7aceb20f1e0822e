"""Training: settings (``config``), the run directory (``rundir``; checks before training:
``prepare``), ``devices``, ``signals``, the model's construction (``factory``), the EM class start
(``class_start``), ``validation``, latents (``export``), checkpoints to objects (``load``), lazy Adam
(``optim``) and the loop (``loop``)."""
