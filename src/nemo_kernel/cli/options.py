"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from nemo_kernel.cli.client import CliError
from nemo_kernel.cli.output import OutputFormat

ApiOption = Annotated[
    str | None, typer.Option("--api", envvar="NEMO_API", help="API URL (default: the `nemo up` of this user)")
]
OutputOption = Annotated[
    OutputFormat, typer.Option("-o", "--output", help="table, wide (every column, whatever the width), json or yaml")
]


def load_document(path: Path) -> Any:
    """A YAML or JSON document from a file, or from stdin for '-'."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    try:
        return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CliError(f"{path} is not valid YAML or JSON: {exc}") from exc
