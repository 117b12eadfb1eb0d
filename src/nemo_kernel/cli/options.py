"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import CliError
from nemo_kernel.cli.output import OutputFormat

ApiOption = Annotated[
    str | None, typer.Option("--api", envvar="NEMO_API", help="API URL (default: the `nemo up` of this user)")
]
OutputOption = Annotated[
    OutputFormat, typer.Option("-o", "--output", help="table, wide (every column, whatever the width), json or yaml")
]

MAX_WAIT_SECONDS = 86_400.0
"""The longest a command waits for what it started (a day)."""


def _wait_seconds(value: float) -> float:
    # click's FloatRange lets NaN through (every comparison with it is false): a deadline of NaN never comes.
    if not math.isfinite(value) or not 0 < value <= MAX_WAIT_SECONDS:
        raise typer.BadParameter(f"must be a number of seconds above 0 and at most {MAX_WAIT_SECONDS:.0f}, not {value}")
    return value


WaitTimeout = Annotated[float, typer.Option(help="seconds to wait", callback=_wait_seconds)]
"""``--timeout``: seconds a command waits for what it started, finite and bounded."""


MAX_DOCUMENT_BYTES = 64 << 20
"""The largest file a command sends: the most any API accepts (the upper bound of ``NEMO_MAX_BODY_BYTES``)."""


def read_text(path: Path) -> str:
    """The text of a file, or of stdin for '-': UTF-8, at most :data:`MAX_DOCUMENT_BYTES` (a device such as
    /dev/zero is read only that far). A file that cannot be read, or is neither, is a :class:`CliError` naming it."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        else:
            with path.open("rb") as file:
                data = file.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CliError(f"{path}: larger than {MAX_DOCUMENT_BYTES >> 20} MiB, more than any NEMO API accepts")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None


def load_document(path: Path) -> Any:
    """A YAML or JSON document from a file, or from stdin for '-'."""
    text = read_text(path)
    # Imported here: only commands that read a file pay for it. The API's own rules (a key given twice, a YAML
    # value with no JSON form...) apply before anything is sent, so the file is never silently half-read.
    from nemo_kernel.domain.documents import DocumentError, load_document

    try:
        return load_document(text, yaml_syntax=not text.lstrip().startswith("{"))
    except DocumentError as exc:
        raise CliError(f"{path}: {exc}") from exc


def listening_socket(host: str, port: int, what: str, settings: str) -> socket.socket:
    """A listening socket, or a one-line :class:`CliError` naming the ``settings`` that choose the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port beyond 65535
        sock.close()
        why = (exc.strerror if isinstance(exc, OSError) else None) or exc
        raise CliError(
            f"cannot listen on {host}:{port} for the {what}: {why}; choose another with {settings}"
            " (port 0 picks a free one)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
