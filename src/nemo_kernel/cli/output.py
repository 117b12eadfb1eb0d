"""Output for people (Rich tables and messages) and scripts (``-o json|yaml``).

Everything the CLI prints for people goes through :func:`print_table`, :func:`say` and :func:`complain`, so that
two rules hold everywhere:

- Text is never read as Rich markup: names, regions and messages come from the server and from users, and a
  region called ``[eu]`` must print as ``[eu]`` (not vanish), ``[/eu]`` must not crash the command. Styles are
  given as (text, style) pairs instead of markup.
- Identifiers and URLs are printed whole. On a terminal too narrow for a table, prose columns wrap and the less
  important columns are left out (``-o wide`` shows them all); a table that still does not fit is printed wider
  than the terminal rather than cut. Output that is not a terminal (a pipe, a file) has no width limit: it never
  depends on ``COLUMNS`` or on the width of whatever terminal the command happens to be started from.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

#: A message part: plain text, or (text, Rich style) such as ``("done", "bold green")``.
Part = str | tuple[str, str]

#: Width used to measure and print when there is no limit (output that is not a terminal).
_UNLIMITED = 1 << 16


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"

    @property
    def for_people(self) -> bool:
        """A table (plain or wide), not a document for a program."""
        return self in (OutputFormat.TABLE, OutputFormat.WIDE)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. By default its values are printed whole (names, ids, URLs: never wrapped or cut).

    ``wrap``: prose that may wrap between words (a message, a verdict). ``optional``: left out when the terminal is
    too narrow for the table (shown with ``-o wide`` and when the output is not a terminal).
    """

    header: str
    wrap: bool = False
    optional: bool = False


# Set by `emit` for the table callback it runs: `-o wide` shows every column whatever the terminal's width.
_all_columns: ContextVar[bool] = ContextVar("all_columns", default=False)


def emit(data: Any, fmt: OutputFormat, table: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON/YAML, or through ``table`` for people."""
    if fmt is OutputFormat.JSON:
        print(json.dumps(data, indent=2, default=str))
    elif fmt is OutputFormat.YAML:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        token = _all_columns.set(fmt is OutputFormat.WIDE)
        try:
            table(data)
        finally:
            _all_columns.reset(token)


def cell(value: Any) -> str:
    """How a value reads in a table or a message: nothing for None, lists comma-separated, mappings as k=v."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def print_table(title: str | None, columns: Sequence[str | Column], rows: Sequence[Sequence[Any]]) -> None:
    """A Rich table of ``rows`` (values formatted by :func:`cell`) on standard output; see the module docstring."""
    specs = [c if isinstance(c, Column) else Column(c) for c in columns]
    texts = [[cell(v) for v in row] for row in rows]
    shown = list(range(len(specs)))
    if not sys.stdout.isatty():
        table = _table(title, specs, texts, shown)
        _stdout(_measure(table).maximum).print(table)
        return
    width = _stdout(None).width
    table = _table(title, specs, texts, shown)
    if not _all_columns.get():
        # Leave out optional columns, last first, until the table fits without cutting a value.
        for index in reversed([i for i, c in enumerate(specs) if c.optional]):
            if _measure(table).minimum <= width:
                break
            shown.remove(index)
            table = _table(title, specs, texts, shown)
    _stdout(max(width, _measure(table).minimum)).print(table)


def say(*parts: Part, err: bool = False) -> None:
    """Print one message made of ``parts`` (never read as markup) on standard output, or standard error."""
    text = Text.assemble(*parts)
    stream = sys.stderr if err else sys.stdout
    # Not a terminal: one line per message, whatever COLUMNS says.
    _console(stream, None).print(text, soft_wrap=not stream.isatty())


def complain(message: str) -> None:
    """Print ``error: message`` on standard error."""
    say(("error:", "bold red"), " ", message, err=True)


@contextmanager
def progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner with ``message`` on a terminal while the block runs; yields a function that replaces the message."""
    with _stdout(None).status(Text(message)) as status:
        yield lambda text: status.update(Text(text))


def _table(title: str | None, specs: Sequence[Column], texts: Sequence[Sequence[str]], shown: Sequence[int]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for i in shown:
        spec = specs[i]
        if spec.wrap:
            # Wraps between words; "fold" rather than an ellipsis should a single word ever be wider than the column.
            table.add_column(spec.header, overflow="fold")
        else:
            longest = max((cell_len(line) for row in texts for line in row[i].splitlines()), default=0)
            table.add_column(spec.header, no_wrap=True, min_width=max(longest, cell_len(spec.header)))
    for row in texts:
        table.add_row(*(Text(row[i]) for i in shown))
    return table


def _measure(table: Table) -> Measurement:
    console = _stdout(_UNLIMITED)
    return Measurement.get(console, console.options, table)


def _stdout(width: int | None) -> Console:
    return _console(sys.stdout, width)


def _console(stream: Any, width: int | None) -> Console:
    # Made for each print: the stream is looked up when printing (a test may have replaced sys.stdout) and the width
    # depends on what is printed. `width=None` is the terminal's width.
    return Console(file=stream, markup=False, emoji=False, highlight=False, width=width)
