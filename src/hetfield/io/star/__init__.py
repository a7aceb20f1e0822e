"""STAR files: every block, read fast; optics merging; ``index@path`` image names; subset writing.

Modules: :mod:`~hetfield.io.star.blocks` (``StarFile``, ``StarBlock``, column labels),
:mod:`~hetfield.io.star.read` (``read_star``), :mod:`~hetfield.io.star.write` (``write_star``,
``write_star_subset``), :mod:`~hetfield.io.star.columns` (numbers, optics, image names, vectors
out of a block's columns).

:func:`read_star` finds the blocks with one regular-expression pass over the text and hands each
loop's data rows to pandas' C parser, so a million-row particle table reads in about a second (the
``starfile`` package walks the file line by line in Python). Column labels keep RELION's names
without the leading underscore (``rlnImageName``); messages print them with it.

Every loop block remembers where its data rows sit in the text, so :func:`write_star_subset` can
write a subset of a block's rows with the rest of the file (other blocks, comments, formatting,
every column) untouched: exports stay in the user's own format byte for byte.

:func:`write_star` writes DataFrames as loop blocks that :func:`read_star` reads back value for
value: empty or blank-containing text is double-quoted (``""`` is an empty value, not a missing
one), floats are written with the shortest repr that round-trips, booleans as 0/1. Text that looks
like a number (``000123``) stays text when the reader is told the column is text
(``string_columns``), which is how a prepared dataset's ``particles.star`` is read.
"""
