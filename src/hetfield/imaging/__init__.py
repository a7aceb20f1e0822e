"""Imaging physics and geometry: lattice and masks (and the shell index), Hartley/Fourier transforms,
CTF, exposure (dose and tilt weights), the transfer function of an image (``transfer``: CTF × exposure,
the one every caller uses), rotations, shifts, projections and the cas-kernel back-projection.

Conventions (verified on real files in tests/imaging and tests/io; never re-derive them elsewhere):

* Images are ``[y, x]``, volumes ``[z, y, x]``, the box centre is at index ``D // 2``.
* Frequencies are in cycles per pixel on the odd lattice of ``D + 1`` points per axis,
  coordinates ``linspace(-0.5, 0.5, D + 1)``; multiply by ``1 / pixel_size_A`` for 1/Å.
* Rotations are RELION's: ``A = euler_to_matrix(rot, tilt, psi)``; an image is
  ``P(x, y) = sum_z V(A.T @ [x, y, z])``, so the image frequency ``k = (kx, ky, 0)`` samples the
  volume's transform at ``q = A.T @ k`` (as row vectors: ``q = k @ A``).
* A particle sits at ``-origin`` in its image (RELION ``_rlnOriginX/Y``); translating the image by
  ``+origin`` centres it.
* The CTF is negative at low frequency (``-w`` at s = 0); stacks with white particles (RELION's usual
  output) are inverted during preprocessing so that ``image = CTF * projection``.
"""
