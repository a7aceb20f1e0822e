"""What a particle table holds, in numbers people check first (``inspect`` and ``dataset.yaml``)."""

from __future__ import annotations

from typing import Any

from hetfield.table import ParticleTable


def _range(values) -> list[float]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return [round(float(v.min()), 4), round(float(v.max()), 4)] if v.size else [0.0, 0.0]


def summarize_table(table: ParticleTable) -> dict[str, Any]:
    """Counts, tilts per particle and the ranges of dose, tilt, defocus and pixel size."""
    import numpy as np

    df = table.images
    tilts = table.tilts_per_particle()
    counts, n_with = np.unique(tilts, return_counts=True)
    return {
        "source": table.source.reader,
        "n_particles": table.n_particles,
        "n_images": table.n_images,
        "tilts_per_particle": {
            "min": int(tilts.min()),
            "max": int(tilts.max()),
            "mean": round(float(tilts.mean()), 3),
            "histogram": {int(c): int(n) for c, n in zip(counts, n_with)},
        },
        "pixel_size_A": _range(df["pixel_size_A"]),
        "voltage_kV": sorted({float(v) for v in df["voltage_kV"].unique()}),
        "dose_e_per_A2": _range(df["dose_e_per_A2"]),
        "stage_tilt_deg": _range(df["stage_tilt_deg"]),
        "defocus_A": _range(np.concatenate([df["defocus_u_A"].to_numpy(), df["defocus_v_A"].to_numpy()])),
        "n_groups": int(df["group"].nunique()),
        "ctf_premultiplied": bool(df["ctf_premultiplied"].any()),
        "dose_weighted": bool(df["dose_weighted"].any()),
        "has_poses": bool(table.has_poses),
    }
