"""One error hierarchy for everything a user can get wrong.

Every exception a user can cause by their inputs derives from :class:`HetfieldError`. The CLI turns
it into a single line on stderr and exit code 2 (no traceback); anything else is a bug in hetfield and
keeps its traceback. Messages say what was wrong, where (file, row, column, option) and what to do.
"""

from __future__ import annotations

EXIT_USAGE = 2
"""Exit code for bad input: the same code click uses for usage errors."""

EXIT_CUDA_OOM = 75
"""Exit code ``train`` returns when CUDA runs out of memory; the pipeline retries with a smaller batch."""


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
        self.exit_code = 128 + int(signum)


class CudaOutOfMemory(HetfieldError):
    """Training ran out of GPU memory; retry with a smaller ``--batch-size``."""

    exit_code = EXIT_CUDA_OOM
