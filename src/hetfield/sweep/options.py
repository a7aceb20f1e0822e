"""Training-option values of a sweep, typed as the options they set.

The same text can arrive from ``--set option=value``, a grid file's YAML or a plan CSV cell; each is
turned into the type :class:`~hetfield.train.config.TrainConfig` declares, and a bad value is a
:class:`~hetfield.errors.ConfigError` naming the source and showing how to write a good one.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from hetfield.errors import ConfigError

_NONE_WORDS = ("none", "null", "~")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def option_types() -> dict[str, str]:
    from hetfield.train.config import TrainConfig

    return {f.name: str(f.type) for f in fields(TrainConfig)}


def _expected(type_name: str) -> str:
    kind = ("true, false or auto" if "str" in type_name else "true or false") if "bool" in type_name else "a whole number" if "int" in type_name and "float" not in type_name \
        else "a number" if "float" in type_name else "text"
    return kind + (" or none" if "None" in type_name else "")


def default_text(key: str) -> str:
    from hetfield.train.config import TrainConfig

    default = TrainConfig.__dataclass_fields__[key].default
    return "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)


# How to write a value, by where it came from: ``{key}``, ``{value}`` (the default, as an example).
EXAMPLE_SET = "give e.g. --set {key}={value}"
EXAMPLE_YAML = "write e.g. {key}: {value}"
EXAMPLE_CELL = "write e.g. {value} in that cell"


def coerce_option(key: str, value: Any, where: str, example: str = EXAMPLE_SET) -> Any:
    """``value`` (text from ``--set`` or a plan cell, or a YAML scalar) as training option ``key``'s type.

    ``where`` names the source in the message (``--set epochs=abc``, ``plan.csv: line 3 (run a)``);
    ``example`` says how to write a good value there.
    """
    types = option_types()
    if key not in types:
        from hetfield.train.config import FIELD_NAMES

        raise ConfigError(f"{where}: {key!r} is not a training option; use one of {', '.join(FIELD_NAMES)}")
    t = types[key]
    bad = ConfigError(f"{where}: {key} takes {_expected(t)}, not {value!r}; {example.format(key=key, value=default_text(key))}")
    if isinstance(value, str):
        text = value.strip()
        if "None" in t and text.lower() in _NONE_WORDS:
            return None
        if "bool" in t:
            if "str" in t and text.lower() == "auto":  # a tri-state option (amp: auto, true or false)
                return "auto"
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise bad
        if "int" in t and "float" not in t:
            try:
                f = float(text)
            except ValueError:
                raise bad from None
            if not math.isfinite(f) or not f.is_integer():
                raise bad
            return int(f)
        if "float" in t:
            try:
                f = float(text)
            except ValueError:
                raise bad from None
            if not math.isfinite(f):
                raise bad
            return f
        if not text:
            raise bad
        return text
    if value is None:
        if "None" in t:
            return None
        raise bad
    if "bool" in t:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad
    if "int" in t and "float" not in t:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise bad
    if "float" in t:
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value) if isinstance(value, float) else value
        raise bad
    raise bad  # a str option given a number, list or mapping


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set option=value`` pairs → training options of the right type (ConfigError naming the pair)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write option=value, e.g. --set epochs=20")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in out:
            raise ConfigError(f"--set {key}: given twice; give each option once")
        out[key] = coerce_option(key, raw, f"--set {item}")
    return out
