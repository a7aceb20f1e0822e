"""The one sanitiser for everything we write as JSON or YAML.

Every file a colleague opens (dataset.yaml, config.yaml, metrics, analysis JSON, sweep summaries) goes
through :func:`to_plain`, so the same value is written the same way everywhere: numpy scalars and arrays
become Python numbers and lists, paths become strings, and non-finite floats become ``None`` (JSON has
no NaN; YAML's ``.nan`` is read back by few tools).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import PurePath
from typing import Any


def to_plain(obj: Any) -> Any:
    """A copy of ``obj`` made only of dict/list/str/int/float/bool/None.

    Dict keys become strings; tuples become lists; ``numpy.generic`` and ``numpy.ndarray`` become
    Python values (numpy is not imported unless such a value is met); ``NaN``/``±inf`` become ``None``.
    """
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if type(obj).__module__ == "numpy":
        obj = obj.tolist() if hasattr(obj, "tolist") else obj
        if isinstance(obj, list):
            return to_plain(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def now() -> str:
    """Local time to the second, ISO 8601: every ``created`` field and run.log line."""
    return _dt.datetime.now().isoformat(timespec="seconds")
