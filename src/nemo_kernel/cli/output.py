"""Output for people (Rich tables and messages) and scripts (``-o json|yaml``).

Everything the CLI prints for people goes through :func:`print_table`, :func:`say` and :func:`complain`, so that
two rules hold everywhere:

- Text is never read as Rich markup: names, regions and messages come from the server and from users, and a
  region called ``[eu]`` must print as ``[eu]`` (not vanish), ``[/eu]`` must not crash the command. Styles are
  given as (text, style) pairs instead of markup.
- Identifiers and URLs are printed whole. On a terminal too narrow for a table, prose columns wrap, the less
  important columns are left out (``-o wide`` shows them all), then prose columns that may (``fold``) break their
  longest words; a table that still does not fit is printed wider than the terminal rather than cut, its words
  whole. Output that is not a terminal (a pipe, a file) has no width limit: it never depends on ``COLUMNS`` or on
  the width of whatever terminal the command happens to be started from.
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

    ``wrap``: wraps between words (a message, a verdict, a list of scores). ``fold``: with ``wrap``, prose whose
    words may be broken across lines when the table would not fit the terminal otherwise (a verdict naming a filter);
    without it each word stays whole (a score). ``optional``: left out when the terminal is too narrow for the table
    (shown with ``-o wide`` and when the output is not a terminal).
    """

    header: str
    wrap: bool = False
    optional: bool = False
    fold: bool = False


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
    # Rich shares a too-small width among wrapping columns evenly, breaking words in one while another has room to
    # spare: the widths of wrapping columns are set here instead, from what each column's words need.
    table = _table(title, specs, texts, shown, _wrap_widths(specs, texts, shown, width - _measure(table).minimum))
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


def _longest_word(text: str) -> int:
    # As Rich measures a cell's minimum width: its longest run of characters between white space.
    return max((cell_len(word) for word in text.split()), default=0)


def _wrap_widths(
    specs: Sequence[Column], texts: Sequence[Sequence[str]], shown: Sequence[int], slack: int
) -> dict[int, int]:
    """Widths of the wrapping columns among ``shown``, for a table ``slack`` cells narrower than the terminal.

    Each starts at its longest word (the table's minimum width). With room to spare (``slack`` > 0), the narrowest
    column still short of its longest line gets the next cell, so that prose reads in lines as even as possible.
    Short of room, ``fold`` columns give up cells (see :func:`_narrowed`); if that is not enough, every word stays
    whole and the table is wider than the terminal.
    """
    cells = {i: [specs[i].header, *(row[i] for row in texts)] for i in shown if specs[i].wrap}
    widths = {i: max(_longest_word(text) for text in column) for i, column in cells.items()}
    if slack < 0:
        return _narrowed(specs, widths, -slack) or widths
    longest = {
        i: max(cell_len(line) for text in column for line in [*text.splitlines(), ""]) for i, column in cells.items()
    }
    for _ in range(slack):
        growing = [i for i in widths if widths[i] < longest[i]]
        if not growing:
            break
        widths[min(growing, key=widths.__getitem__)] += 1
    return widths


def _narrowed(specs: Sequence[Column], widths: dict[int, int], excess: int) -> dict[int, int] | None:
    """``widths`` with ``fold`` columns ``excess`` cells narrower in all, breaking their longest words.

    The widest gives up a cell first, so that words are broken in as few columns, as little, as possible; none gets
    narrower than its header's longest word (the header stays whole). None when that is not enough: words broken
    for a table that does not fit anyway would be harder to read for nothing.
    """
    narrowed = dict(widths)
    for _ in range(excess):
        folding = [i for i in narrowed if specs[i].fold and narrowed[i] > _longest_word(specs[i].header)]
        if not folding:
            return None
        narrowed[max(folding, key=narrowed.__getitem__)] -= 1
    return narrowed


def _table(
    title: str | None,
    specs: Sequence[Column],
    texts: Sequence[Sequence[str]],
    shown: Sequence[int],
    widths: dict[int, int] | None = None,
) -> Table:
    """The table of the ``shown`` columns; ``widths`` sets those of wrapping columns (see :func:`_wrap_widths`)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for i in shown:
        spec = specs[i]
        if spec.wrap:
            # Wraps between words; "fold" rather than an ellipsis should a single word ever be wider than the column.
            table.add_column(spec.header, overflow="fold", width=(widths or {}).get(i))
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
