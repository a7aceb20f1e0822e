"""Analysis of trained runs and prepared datasets: metrics, latent-space analysis, volumes,
backprojection, convergence, plots and self-contained HTML reports.

Modules (one purpose each):

* :mod:`~hetfield.analysis.metrics`     FSC and resolution, masked correlation, ARI/NMI, Spearman, matching
* :mod:`~hetfield.analysis.latent`      PCA, UMAP, k-means with on-data centres, traversals, density maxima
* :mod:`~hetfield.analysis.volumes`     batched decoding of volumes, MRC output, low-pass, hand flip, inversion
* :mod:`~hetfield.analysis.backproject` weighted Fourier-space voxel backprojection with half maps
* :mod:`~hetfield.analysis.truth`       simulator ground truth (classes, motion coordinate, maps)
* :mod:`~hetfield.analysis.context`     opening a trained run: settings, dataset, checked latents and models
* :mod:`~hetfield.analysis.provenance`  the header every analysis JSON starts with
* :mod:`~hetfield.analysis.convergence` ``hetfield convergence``: per-epoch measurements (report: ``convergence_report``)
* :mod:`~hetfield.analysis.convergence_rule` the rule, pure: per-epoch rows -> recommended epoch and verdict
* :mod:`~hetfield.analysis.selection`   ``--epoch N|last|auto`` and ``--class-idx``
* :mod:`~hetfield.analysis.analyze`     ``hetfield analyze``: one epoch, all classes, in one call
  (``analyze_truth``: against simulator truth; ``analyze_report``: the page)
* :mod:`~hetfield.analysis.plots`       matplotlib (Agg) figures as PNG bytes
* :mod:`~hetfield.analysis.report`      one self-contained HTML page per analysis

Every module imports numpy/torch/matplotlib lazily or at most numpy at import time, so the CLI stays
fast to start.
"""
