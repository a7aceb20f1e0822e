"""One error hierarchy for everything a user can get wrong, and the exit codes of the ``hetfield`` command.

Every exception a user can cause by their inputs derives from :class:`HetfieldError`. The CLI
(:func:`hetfield.cli.app.main`) turns it into a single line on stderr and its exit code (2; no
traceback). Messages say what was wrong, where (file, row, column, option) and what to do.

No other exception reaches the user as a traceback either: the CLI boundary maps what is left to one
line each (``HETFIELD_DEBUG=1`` prints the traceback as well). Exit codes:

====  ==================================================================================================
0     success
1     click/typer's own "Aborted!" (end of input at a prompt; hetfield has no prompts)
2     bad input: a file, option, prepared dataset or run directory (:class:`HetfieldError`), or a usage
      error found by the option parser
70    an internal error: a bug in hetfield, not in the input (``EX_SOFTWARE``); report it
71    out of memory (host RAM; ``EX_OSERR``)
74    an operating-system error on a file that the command could not foresee: permission denied, no
      space left, read-only or failing file system… (``EX_IOERR``); the line names the path and what to do
75    ``train`` ran out of GPU memory (``EX_TEMPFAIL``): the pipeline retries with a smaller batch
128+N stopped by signal N (130: Ctrl-C / SIGINT, 143: SIGTERM), as a shell reports it; ``train`` saved
      its state first and resumes with ``--load latest``
====  ==================================================================================================

Output locations are checked before any work (:func:`check_output_location`), so that an unusable
``--out`` is a :class:`ConfigError` (exit 2), not an I/O error at the end of a long computation.
"""

from __future__ import annotations

import errno as _errno
import os

EXIT_USAGE = 2
"""Exit code for bad input: the same code click uses for usage errors."""

EXIT_INTERNAL = 70
"""Exit code for an exception that is a bug in hetfield (``sysexits.h`` ``EX_SOFTWARE``)."""

EXIT_OUT_OF_MEMORY = 71
"""Exit code for host memory exhaustion (``MemoryError``; ``sysexits.h`` ``EX_OSERR``)."""

EXIT_OS_ERROR = 74
"""Exit code for an operating-system error on a file (``sysexits.h`` ``EX_IOERR``)."""

EXIT_CUDA_OOM = 75
"""Exit code ``train`` returns when CUDA runs out of memory; the pipeline retries with a smaller batch."""

EXIT_SIGNAL_BASE = 128
"""Stopped by signal N: exit code ``128 + N``, as a shell reports a process ended by that signal."""

DEBUG_VARIABLE = "HETFIELD_DEBUG"
"""Set to 1 to see the traceback of any error, not only the one-line message."""

BUG_REPORT = "the hetfield developers (the project's issue tracker)"
"""Where internal errors are to be reported; named in the last-resort message."""


class HetfieldError(Exception):
    """Base class of every user-facing error."""

    exit_code: int = EXIT_USAGE


class InputError(HetfieldError):
    """An input file is missing, unreadable, malformed or inconsistent."""


class ConfigError(HetfieldError):
    """An option or configuration value is invalid."""


class DatasetError(HetfieldError):
    """A prepared dataset directory is missing, incomplete or stale."""


class RunError(HetfieldError):
    """A run directory is missing, incomplete, or holds another run."""


class Interrupted(HetfieldError):
    """Stopped by SIGINT/SIGTERM after saving its state; resumable. Exit code ``128 + signum``, as a
    shell reports a process ended by that signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = EXIT_SIGNAL_BASE + int(signum)


class CudaOutOfMemory(HetfieldError):
    """Training ran out of GPU memory; retry with a smaller ``--batch-size``."""

    exit_code = EXIT_CUDA_OOM


# -- operating-system errors ------------------------------------------------------------------------
# errno → (what happened, what to do). ``{dir}`` is the directory holding the path.
_OS_ADVICE: dict[int, tuple[str, str]] = {
    _errno.EACCES: ("permission denied", "check its permissions (ls -ld {dir}) or use a location you can write to"),
    _errno.EPERM: ("operation not permitted", "use a location where you may create files"),
    _errno.ENOSPC: ("no space left on the device", "free space there (df -h {dir}) or write to another file system"),
    _errno.EDQUOT: ("disk quota exceeded", "free space within your quota or write elsewhere"),
    _errno.EROFS: ("read-only file system", "write to a location on a writable file system"),
    _errno.ENOTDIR: ("a part of the path is a file, not a directory", "check the path; rename or remove the file in the way"),
    _errno.EISDIR: ("is a directory", "give a file name, not a directory"),
    _errno.ENOENT: ("no such file or directory", "check the path (did a directory move or get deleted?)"),
    _errno.EEXIST: ("already exists", "remove it or choose another name"),
    _errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    _errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or close other programs"),
    _errno.ENFILE: ("too many open files on the system", "try again when the system is less busy"),
    _errno.EIO: ("input/output error", "check the disk or network file system (dmesg), then try again"),
    _errno.ELOOP: ("too many levels of symbolic links", "fix the symbolic link loop in the path"),
    _errno.EXDEV: ("cross-device link", "keep input and output on one file system"),
    _errno.EBUSY: ("device or resource busy", "try again once the other program has released it"),
    _errno.ETXTBSY: ("file busy", "try again once the other program has released it"),
    _errno.ESTALE: ("stale file handle (network file system)", "try again; if it persists, remount or use a local disk"),
}


def describe_os_error(err: OSError) -> tuple[str, str, str]:
    """``(path, reason, what to do)`` for an :class:`OSError` (path ``""`` when it names none)."""
    path = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        path = f"{path} → {err.filename2}"
    path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    reason, advice = _OS_ADVICE.get(err.errno, (err.strerror or type(err).__name__, "check the path and try again"))
    directory = os.path.dirname(os.path.abspath(str(err.filename))) if err.filename else "."
    return path, reason, advice.format(dir=directory)


def os_error_message(err: OSError, doing: str | None = None) -> str:
    """One line for an OS error: the path, the reason and what to do."""
    path, reason, advice = describe_os_error(err)
    where = f"{path}: " if path else ""
    what = f"cannot {doing}: " if doing else ""
    return f"{where}{what}{reason}; {advice}"


def probe_write(directory, name: str = "out") -> None:
    """Create and remove a hidden temporary directory in ``directory``; raises the ``OSError`` if that
    fails. A real test: ``os.access`` misses read-only file systems, ACLs and root squash, and says
    yes to root on ``/sys``."""
    import tempfile

    os.rmdir(tempfile.mkdtemp(prefix=f".{name or 'out'}.probe-{os.getpid()}.", suffix=".tmp", dir=directory))


def check_output_location(
    path: str | os.PathLike,
    option: str,
    kind: str = "directory",
    marker: str | None = None,
    protect: tuple = (),
    hint: str = "",
) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written (:class:`ConfigError`).

    ``kind`` is ``"directory"`` (created, or replaced whole, beside itself) or ``"file"``. The test is
    a real one: a temporary directory is created and removed where the output will go (the nearest
    existing parent), so permissions, read-only and full file systems, ACLs and root squash are all
    seen as they are (``os.access`` misses several of them).

    An existing, non-empty directory is replaced only if it holds ``marker`` (the file this command
    writes: a previous output of it); ``protect`` lists inputs (a run, a dataset) that the output
    must neither be nor contain, since replacing the output would delete them. ``hint`` is added to
    the advice when the location is unusable (e.g. "or pass --out DIR" for a default location).
    """
    from pathlib import Path

    p = Path(path)
    label = f"{option} {p}" if option else str(p)
    try:
        for inp in protect:
            inp_abs = Path(inp).resolve()
            out_abs = p.resolve()
            if inp_abs == out_abs or out_abs in inp_abs.parents:
                raise ConfigError(f"{label}: would replace the input {inp} (the output directory is replaced whole); "
                                  "choose a new directory for the output")
        if p.exists() or p.is_symlink():
            if kind == "directory" and not p.is_dir():
                raise ConfigError(f"{label}: is a file, not a directory; give a directory path (it is created) or remove the file")
            if kind == "file" and p.is_dir():
                raise ConfigError(f"{label}: is a directory; give a file name, e.g. {p / 'plan.csv'}")
            if kind == "directory" and marker is not None and any(p.iterdir()) and not (p / marker).exists():
                raise ConfigError(f"{label}: exists and is not an earlier output of this command (no {marker} in it), so it "
                                  "is not replaced; choose a new directory, or remove it yourself")
        parent = p.absolute().parent
        while not (parent.exists() or parent.is_symlink()):
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"{label}: {parent} is a file, not a directory; choose another location, or move {parent} away")
    except OSError as err:
        raise ConfigError(f"{label}: {os_error_message(err)}") from None
    try:
        probe_write(parent, p.name)
    except OSError as err:
        _, reason, advice = describe_os_error(err)
        if err.errno in (_errno.EACCES, _errno.EPERM):
            reason = f"no permission to create files in {parent}"
        elif parent != p.absolute().parent:
            reason = f"cannot create directories in {parent}: {reason}"
        else:
            reason = f"cannot write in {parent}: {reason}"
        raise ConfigError(f"{label}: {reason}; {advice}{hint}") from None
