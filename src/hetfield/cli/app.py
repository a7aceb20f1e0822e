"""Entry point of the ``hetfield`` command.

Command modules import only typer and the standard library at module level; each command imports
what it needs when it runs, so ``hetfield --help`` answers without loading torch or pandas.

:func:`main` is the boundary no exception crosses as a traceback. A
:class:`~hetfield.errors.HetfieldError` becomes one line on stderr and its exit code (2 for bad
input); an OS error, Ctrl-C, exhausted memory and, as a last resort, any other exception (a bug)
become one line each with their own exit code (the table in :mod:`hetfield.errors`).
``HETFIELD_DEBUG=1`` prints the traceback too. The boundary is a safety net: errors a user can
cause get their own specific message where they arise.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import NoReturn

import typer

from hetfield import __version__
from hetfield.errors import (
    BUG_REPORT,
    DEBUG_VARIABLE,
    EXIT_INTERNAL,
    EXIT_OS_ERROR,
    EXIT_OUT_OF_MEMORY,
    EXIT_SIGNAL_BASE,
    HetfieldError,
    Interrupted,
)

app = typer.Typer(
    name="hetfield",
    help="Structural heterogeneity from cryo-ET tilt series and cryo-EM particles with neural fields.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (command name, module, function). Sub-apps (``sweep``) are typer.Typer objects named ``app``.
_COMMANDS: list[tuple[str, str, str]] = [
    ("simulate", "hetfield.cli.simulate", "simulate"),
    ("setup", "hetfield.cli.setup", "setup"),
    ("inspect", "hetfield.cli.inspect", "inspect"),
    ("train", "hetfield.cli.train", "train"),
    ("convergence", "hetfield.cli.convergence", "convergence"),
    ("analyze", "hetfield.cli.analyze", "analyze"),
    ("volumes", "hetfield.cli.volumes", "volumes"),
    ("backproject", "hetfield.cli.backproject", "backproject"),
]
_SUBAPPS: list[tuple[str, str]] = [("sweep", "hetfield.cli.sweep")]


def _interruptible(func):
    """Ctrl-C inside a command becomes :class:`Interrupted` (typer would turn it into a silent exit 130)."""

    @functools.wraps(func)
    def command(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted (Ctrl-C); outputs are written whole or not at all, so nothing half-written is left: "
                "run the command again to redo it (train continues with --load latest)",
                signal.SIGINT,
            ) from None

    return command


for _name, _module, _func in _COMMANDS:
    app.command(_name)(_interruptible(getattr(importlib.import_module(_module), _func)))
for _name, _module in _SUBAPPS:
    _sub = importlib.import_module(_module).app
    for _info in _sub.registered_commands:
        _info.callback = _interruptible(_info.callback)
    app.add_typer(_sub, name=_name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hetfield {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Structural heterogeneity from cryo-ET tilt series and cryo-EM particles with neural fields."""


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"hetfield: warning: {message}\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str, code: int) -> NoReturn:
    print(f"hetfield: error: {_one_line(message)}", file=sys.stderr)
    sys.exit(code)


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def main() -> None:
    import warnings

    # Users get one line per warning, not the library source line it came from.
    warnings.formatwarning = _one_line_warning
    try:
        app(prog_name="hetfield")
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the boundary: nothing leaves as a traceback
        if _debug():
            import traceback

            traceback.print_exc()
        _report(err)


def _report(err: BaseException) -> None:
    """One line on stderr and the exit code of ``err`` (see the table in :mod:`hetfield.errors`)."""
    from hetfield.errors import os_error_message

    if isinstance(err, HetfieldError):
        _error(str(err), err.exit_code)
    if isinstance(err, KeyboardInterrupt):
        _error("interrupted (Ctrl-C); run the command again to redo it", EXIT_SIGNAL_BASE + signal.SIGINT)
    if isinstance(err, BrokenPipeError):
        # The reader of our output went away (`hetfield inspect … | head`): nothing to say to it.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(EXIT_SIGNAL_BASE + signal.SIGPIPE)
    if isinstance(err, OSError):
        _error(f"{os_error_message(err)} (run again with {DEBUG_VARIABLE}=1 for the traceback)", EXIT_OS_ERROR)
    if isinstance(err, MemoryError):
        _error("out of memory: this machine has too little free RAM for the command; close other programs, use fewer "
               "particles or a smaller box (setup --downsample), a smaller --batch-size, or a machine with more memory",
               EXIT_OUT_OF_MEMORY)
    detail = _one_line(str(err))[:300]
    _error(f"internal error ({type(err).__name__}{': ' + detail if detail else ''}); this is a bug in hetfield, not in your "
           f"input: please report it to {BUG_REPORT} with the command line and the traceback printed by running it again "
           f"with {DEBUG_VARIABLE}=1", EXIT_INTERNAL)


if __name__ == "__main__":
    main()
