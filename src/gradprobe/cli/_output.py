"""Terminal output that reads the same on a TTY, piped to a file or pager, and in CI logs.

- :func:`console`: a rich Console that never breaks a word: on a terminal it uses the
  terminal's width; piped (no TTY) it uses ``COLUMNS`` when set, else :data:`PIPE_WIDTH`, and
  never emits colour codes unless ``FORCE_COLOR`` says so.
- :func:`paragraph`: prose wrapped at word boundaries only, continuation lines keeping their
  indent (a word longer than the line stays whole on its own line; nothing is cut with "...").
- :func:`print_table`: a table printed at its natural width, even when that is wider than the
  console, so cells are never folded mid-word or cut.
- :func:`num`: a number with 3-4 significant digits (0.010000000000000004 -> '0.01').

Example:
    >>> num(0.010000000000000004), num(1234567.0), num(float("nan")), num(3)
    ('0.01', '1.235e+06', '-', '3')
    >>> print(paragraph("one two three four five six seven eight", 2, width=24, hanging=4))
      one two three four
        five six seven eight
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 100  # columns when stdout is not a terminal and COLUMNS is not set


def _width(stream: Any) -> int | None:
    if getattr(stream, "isatty", lambda: False)():
        return None  # rich reads the terminal's size
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) >= 20 else PIPE_WIDTH


def console(stderr: bool = False) -> Console:
    """A Console for the current stdout (or stderr): terminal width on a TTY, a fixed sane
    width when piped; it never wraps mid-word when printing through :func:`say`."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=_width(stream), stderr=stderr, highlight=False)


def paragraph(
    text: str, indent: int = 0, width: int = PIPE_WIDTH, hanging: int | None = None
) -> str:
    """``text`` wrapped to ``width`` at spaces only: the first line indented by ``indent``, the
    next ones by ``hanging`` (default ``indent``)."""
    more = indent if hanging is None else hanging
    return textwrap.fill(
        " ".join(text.split()),
        width=max(width, max(indent, more) + 20),
        initial_indent=" " * indent,
        subsequent_indent=" " * more,
        break_long_words=False,
        break_on_hyphens=False,
    )


def say(
    con: Console,
    text: str | Text,
    indent: int = 0,
    style: str | None = None,
    hanging: int | None = None,
) -> None:
    """Print one message wrapped at word boundaries, continuation lines indented by
    ``hanging`` (default ``indent``); never cut, never broken inside a word."""
    plain = text.plain if isinstance(text, Text) else text
    wrapped = paragraph(plain, indent, con.width, hanging)
    if isinstance(text, Text) and not style:
        # keep the spans' styles: re-wrap by rebuilding from the original text's lines
        out = Text()
        pos = 0
        for i, line in enumerate(wrapped.split("\n")):
            body = line.lstrip(" ")
            start = plain.find(body, pos) if body else pos
            if i:
                out.append("\n")
            out.append(line[: len(line) - len(body)])
            out.append_text(text[start : start + len(body)] if start >= 0 else Text(body))
            pos = start + len(body) if start >= 0 else pos
        con.print(out, soft_wrap=True, overflow="ignore", crop=False)
        return
    con.print(Text(wrapped, style=style or ""), soft_wrap=True, overflow="ignore", crop=False)


def print_table(con: Console, table: Table) -> None:
    """Print ``table`` at its natural width (no folded or cut cells), however narrow ``con``."""
    for col in table.columns:
        col.no_wrap = True
    need = Measurement.get(con, con.options.update(width=10_000), table).maximum
    old = con.width
    con.width = max(old, need)
    try:
        con.print(table, crop=False)
    finally:
        con.width = old


def num(x: Any, digits: int = 4) -> str:
    """A number for people: ints as ints, floats with ``digits`` significant digits, '-' for
    None/NaN, 'inf' for infinities."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"
