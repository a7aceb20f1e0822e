"""Analysis of trained runs and prepared datasets: metrics, latent-space analysis, volumes,
backprojection, convergence, plots and self-contained HTML reports.

Modules (one purpose each):

* :mod:`~hetfield.analysis.metrics`     FSC and resolution, masked correlation, ARI/NMI, Spearman, matching
* :mod:`~hetfield.analysis.latent`      PCA, UMAP, k-means with on-data centres, traversals, density maxima
* :mod:`~hetfield.analysis.volumes`     batched decoding of volumes, MRC output, low-pass, hand flip, inversion
* :mod:`~hetfield.analysis.backproject` weighted Fourier-space voxel backprojection with half maps
* :mod:`~hetfield.analysis.truth`       simulator ground truth (classes, motion coordinate, maps)
* :mod:`~hetfield.analysis.convergence` ``hetfield convergence``: per-epoch metrics, recommended epoch, verdict
* :mod:`~hetfield.analysis.analyze`     ``hetfield analyze``: one epoch, all classes, in one call
* :mod:`~hetfield.analysis.plots`       matplotlib (Agg) figures as PNG bytes
* :mod:`~hetfield.analysis.report`      one self-contained HTML page per analysis

Every module imports numpy/torch/matplotlib lazily or at most numpy at import time, so the CLI stays
fast to start.
"""
