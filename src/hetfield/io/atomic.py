"""Atomic writes: every file we produce is written to a temporary name beside it and renamed.

A killed process therefore leaves either the old file or the new one, never a torn one. Directories
that must appear whole (a prepared dataset, an analysis) are built under a temporary name and renamed
into place with :func:`atomic_directory`.

Permissions follow the umask, as for any file a user's program writes (0644 files and 0755
directories under the usual 022): a colleague, a web server or another cluster account must be able
to read a report, a map or a checkpoint. ``tempfile`` alone would leave them 0600/0700.

Temporary names carry the writer's host and process id (``.NAME.<host>-<pid>.<random>.tmp``), so a
later run can tell the leftovers of a killed writer (:func:`remove_stale_temporaries`) from the
work in progress of a live one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_UMASK: int | None = None


def current_umask() -> int:
    """The process umask (read once: ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def _owner_tag() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_owner_tag()}."


def _tmp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, file_mode())
    return Path(name)


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``path``.

    ``writer`` must write the complete file at the path it is given. On any exception the temporary
    file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        writer(tmp)
        os.chmod(tmp, file_mode())  # a writer that recreated the file may have set its own mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda p: p.write_bytes(data))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def write_yaml_atomic(path: str | os.PathLike, obj: Any) -> Path:
    import yaml

    return write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and flush it to disk (JSON-lines logs): a line is either whole or absent."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(entry: Path, stem: str | None) -> bool:
    """A temporary of ours (``.STEM.<host>-<pid>.*.tmp|old``) whose writer on this host is gone."""
    name = entry.name
    if not name.startswith(".") or not name.endswith((".tmp", ".old")):
        return False
    if stem is not None and not name.startswith(f".{stem}."):
        return False
    parts = name[1:].rsplit(".", 3)  # STEM, host-pid, random, tmp|old (STEM may contain dots)
    if len(parts) != 4:
        return False
    host, _, pid = parts[1].rpartition("-")
    if host != socket.gethostname().split(".")[0] or not pid.isdigit():
        return False  # another machine's writer (shared filesystem): not ours to judge
    return not _pid_alive(int(pid))


def remove_stale_temporaries(directory: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """Delete temporaries in ``directory`` left by killed writers on this host (of ``stem`` only, if given).

    Returns what was removed. Temporaries of live processes and of other hosts are kept.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if _is_stale(entry, stem):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename it onto ``path`` on success.

    With ``replace`` an existing ``path`` is swapped out only after the new one is complete. On
    failure the partial directory is deleted and ``path`` is untouched. Leftovers of killed
    builders of the same ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, dir_mode())
    try:
        yield tmp
        if path.exists():
            if not replace:
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
