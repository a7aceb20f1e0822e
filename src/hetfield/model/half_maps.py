"""Gold-standard half maps: per class, two direct-inversion reconstructions from disjoint halves of
the particles, each Wiener-filtered per shell by the two halves' FSC.

A map searched against images it holds fits their noise at the poses it was built at, so the search
finds those poses again whatever the signal (the in-sample pose bound of docs/internals.md read
0.6–1.0° where 6–12° was honest). A particle of one half is therefore only ever searched against
the other half's map. The filter is the one a Wiener reconstruction applies when the signal-to-noise
ratio per shell is estimated from the half maps' agreement, ``SNR = FSC / (1 - FSC)``::

    V_h = Σ f·w·Y / (Σ f²·w + ⟨Σ f²·w⟩_shell / SNR_shell)

(``⟨·⟩_shell`` the mean over the shell's voxels, shells 1 lattice pixel wide). Where the halves
agree the map is the direct inversion; where they do not it falls to zero instead of fitting noise.
"""

from __future__ import annotations

import torch

from hetfield.model.fourier_grid import FourierAccumulator, FourierGrid, ridge_inverse

FSC_RANGE = (1e-3, 0.999)  # an FSC of 0 or 1 would make the regulariser infinite or zero
RIDGE = 1e-3  # the raw half maps' λ (relative to the mean denominator), for the FSC only


class HalfMaps:
    """``(n_classes, 2)`` accumulators on one grid up to ``radius_px``; :meth:`accumulator` to add
    images, :meth:`wiener` for the filtered maps."""

    def __init__(self, n_classes: int, box: int, radius_px: float, oversample: float = 2.0, device=None):
        self.radius_px = float(radius_px)
        self.accs = [[FourierAccumulator(box, radius_px, oversample, device) for _ in range(2)] for _ in range(max(int(n_classes), 1))]

    @property
    def n_classes(self) -> int:
        return len(self.accs)

    def accumulator(self, cls: int, half: int) -> FourierAccumulator:
        return self.accs[cls][half]

    def shells(self) -> torch.Tensor:
        """``(G, G, G)`` long: each voxel's shell, its radius rounded to whole lattice pixels."""
        a = self.accs[0][0]
        g = a.den.shape[0]
        c = torch.arange(g, dtype=torch.float32, device=a.den.device) - a.half
        z, y, x = torch.meshgrid(c, c, c, indexing="ij")
        return torch.round(torch.sqrt(x * x + y * y + z * z) / a.oversample).long()

    @torch.no_grad()
    def wiener(self) -> tuple[list[FourierGrid], torch.Tensor]:
        """``maps[h]`` (one :class:`FourierGrid` of every class) from half ``h``'s images, and
        ``fsc (K, n_shells)`` between the halves' raw maps, clamped to :data:`FSC_RANGE`. Beyond
        the last whole shell within ``radius_px`` the maps are zero."""
        shell = self.shells()
        flat = shell.flatten()
        n_shells = int(shell.max()) + 1
        count = torch.bincount(flat, minlength=n_shells).clamp_min(1).float()
        inside = (shell <= self.radius_px)[None]
        out: list[list[torch.Tensor]] = [[], []]
        fscs = []
        for per_class in self.accs:
            sym = [a.symmetrised() for a in per_class]
            raw = [ridge_inverse(num, den, RIDGE) for num, den in sym]
            cross = torch.bincount(flat, (raw[0] * raw[1]).sum(0).flatten(), n_shells)
            power = [torch.bincount(flat, (r * r).sum(0).flatten(), n_shells) for r in raw]
            fsc = (cross / torch.sqrt(power[0] * power[1]).clamp_min(1e-30)).clamp(*FSC_RANGE)
            fscs.append(fsc)
            snr = fsc / (1 - fsc)
            for h, (num, den) in enumerate(sym):
                mean_den = torch.bincount(flat, den.flatten(), n_shells) / count
                v = num / (den + (mean_den / snr)[shell]).clamp_min(1e-30)
                out[h].append(torch.where(inside, v, torch.zeros_like(v)))
        box, oversample = self.accs[0][0].box, self.accs[0][0].oversample
        return [FourierGrid(torch.stack(out[h]), box, oversample) for h in (0, 1)], torch.stack(fscs)
