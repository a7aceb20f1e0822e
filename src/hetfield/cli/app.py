"""Entry point of the ``hetfield`` command.

Command modules import only typer and the standard library at module level; each command imports
what it needs when it runs, so ``hetfield --help`` answers without loading torch or pandas.
A :class:`~hetfield.errors.HetfieldError` becomes one line on stderr and its exit code (2 for bad
input); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from hetfield import __version__
from hetfield.errors import HetfieldError

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

for _name, _module, _func in _COMMANDS:
    app.command(_name)(getattr(importlib.import_module(_module), _func))
for _name, _module in _SUBAPPS:
    app.add_typer(importlib.import_module(_module).app, name=_name)


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


def main() -> None:
    import warnings

    # Users get one line per warning, not the library source line it came from.
    warnings.formatwarning = _one_line_warning
    try:
        app(prog_name="hetfield")
    except HetfieldError as err:
        message = str(err).replace("\n", " ")
        print(f"hetfield: error: {message}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
