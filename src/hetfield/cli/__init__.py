"""The ``hetfield`` command line: a thin typer layer over the library (parse, call, print)."""
