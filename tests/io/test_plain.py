import json
from pathlib import Path

import numpy as np

from hetfield.io.plain import to_plain


def test_numpy_paths_and_non_finite_become_plain_values():
    obj = {1: np.float32(0.5), "a": np.arange(3), "p": Path("/x/y"), "t": (np.int64(2), float("nan")),
           "m": np.array([[1.0, np.inf]]), "b": np.bool_(True)}
    out = to_plain(obj)
    assert out == {"1": 0.5, "a": [0, 1, 2], "p": "/x/y", "t": [2, None], "m": [[1.0, None]], "b": True}
    assert type(out["a"][0]) is int and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)  # raises if anything non-plain survived
