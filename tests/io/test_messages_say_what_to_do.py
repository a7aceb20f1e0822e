"""Every user-facing error in the readers and the dataset code says what is wrong AND what to do.

A guard against the class of defect (issue 9, item 12: "many messages say what is wrong but not
what to do"): each ``raise InputError/ConfigError/DatasetError(...)`` literal in these modules must
contain an instruction. A new message without one fails here, naming its file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "hetfield"
MODULES = sorted(
    [p for p in (SRC / "io").rglob("*.py") if p.name not in ("atomic.py", "lock.py")]
    + [SRC / "table.py"]
    + [SRC / "data" / n for n in ("preprocess.py", "cache.py", "location.py", "transform.py", "dataset.py", "summary.py")]
    + [SRC / "cli" / n for n in ("setup.py", "inspect.py")]
)
ERRORS = {"InputError", "ConfigError", "DatasetError"}
INSTRUCTION = re.compile(
    r"\b(pass|use|add|fix|remove|run|re-extract|re-export|re-copy|export|choose|check|give|rename|drop|"
    r"delete|wait|convert|rescale|prepare|free|mark|pick|replace|split|keep|correct|write|select|try|report)\b"
    r"|\{redo\}|\{hint\}|_redo\(",
    re.IGNORECASE,
)


def _text(node) -> str:
    """The literal text of a message (f-string parts and names of what is interpolated)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) if not isinstance(v, ast.FormattedValue) else "{" + ast.unparse(v.value) + "}"
                       for v in node.values)
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    if isinstance(node, ast.Call):  # e.g. _near_miss_message(...): checked where it is built
        return ast.unparse(node)
    return ""


def _messages():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in ERRORS and node.exc.args:
                    yield f"{path.relative_to(SRC)}:{node.lineno}", _text(node.exc.args[0])


MESSAGES = list(_messages())


def test_there_are_messages_to_check():
    assert len(MESSAGES) > 80


@pytest.mark.parametrize("where,text", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_message_says_what_to_do(where, text):
    if text.startswith("_near_miss_message(") or text in ("msg", ""):
        pytest.skip("built elsewhere")
    assert INSTRUCTION.search(text), f"{where}: no instruction in {text!r}"
