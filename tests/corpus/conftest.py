"""Pristine inputs of the corpus, built once per session (about 10 s) and never changed.

``ROOT/`` holds what a user has after following the README on small data::

    sim/        simulated tilt series: particles.star, stacks/ (two stacks), truth/
    spa/        simulated single-particle set: particles.star, stacks/
    ds/         `hetfield setup ds --particles sim/particles.star`
    run/        `hetfield train run --data ds` (zdim 2, one class, 2 epochs of a tiny model)
    plan.csv    `hetfield sweep plan --zdim 2 --set epochs=2`
    grid.yaml   a grid file for `sweep plan --grid`
    ref20.mrc   a 20³ map (the dataset's box is 16)
    notes.txt   a plain file, to stand where a directory is expected
"""

from __future__ import annotations

from pathlib import Path

import pytest

SIM = dict(n_particles=12, n_classes=2, box=16, n_tilts=3, snr=2.0, seed=1, images_per_stack=18)
SPA = dict(mode="spa", n_particles=12, n_classes=1, box=16, snr=2.0, seed=2)
TRAIN = dict(zdim=2, epochs=2, field_hidden=16, enc_hidden=16, enc_embed=8, pe_features=8, device="cpu", threads=1)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    import mrcfile
    import numpy as np

    from hetfield.data.preprocess import prepare_dataset
    from hetfield.data.simulate import simulate
    from hetfield.sweep.plan import make_plan
    from hetfield.train.config import TrainConfig
    from hetfield.train.loop import train

    root = tmp_path_factory.mktemp("corpus_pristine")
    simulate(root / "sim", **SIM)
    simulate(root / "spa", **SPA)
    prepare_dataset(root / "ds", root / "sim" / "particles.star")
    train(root / "run", root / "ds", TrainConfig(**TRAIN))
    (root / "plan.csv").write_text(make_plan(zdim="2", base={"epochs": 2}).to_csv())
    (root / "grid.yaml").write_text("grid:\n  zdim: [2]\n  n_classes: [1]\nbase:\n  epochs: 2\n")
    (root / "notes.txt").write_text("a plain file\n")
    with mrcfile.new(root / "ref20.mrc") as m:
        m.set_data(np.zeros((20, 20, 20), np.float32))
        m.voxel_size = 8.0
    return root
