"""Output for people (Rich tables) and scripts (``-o json|yaml``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def emit(data: Any, fmt: OutputFormat, table: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON/YAML, or through ``table`` for people."""
    if fmt is OutputFormat.JSON:
        print(json.dumps(data, indent=2, default=str))
    elif fmt is OutputFormat.YAML:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        table(data)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Rich table."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)
