"""The files the CLI reads (``-f FILE``): one that is not UTF-8 text, or larger than any API accepts, is refused on
one line naming the file before anything is sent; it never ends in a traceback, nor reads a device without end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.stack import NEMO, ROOT

# Nothing listens on port 1: a command that got past reading its file would fail to connect.
NOWHERE = "http://127.0.0.1:1"
COMMANDS = [["workload", "apply"], ["sla", "apply"], ["cluster", "add"]]


def _run(command: list[str], file: Path | str) -> tuple[int, str]:
    """``nemo COMMAND -f FILE`` as a user runs it: its exit code and what it printed (no developer NEMO_* leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_")} | {"COLUMNS": "200"}
    args = [*NEMO, *command, "-f", str(file), "--api", NOWHERE]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_that_is_not_utf8_text_is_refused_naming_it(command: list[str], tmp_path: Path) -> None:
    file = tmp_path / "w.yaml"
    file.write_bytes(b"name: w\xff\xfe\n")
    code, output = _run(command, file)
    assert code == 1 and str(file) in output and "UTF-8" in output, output


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_larger_than_any_api_accepts_is_refused_without_reading_it_all(
    command: list[str], tmp_path: Path
) -> None:
    file = tmp_path / "huge.yaml"
    with file.open("wb") as out:  # sparse: 65 MiB of zeros that take no disk
        out.truncate(65 << 20)
    code, output = _run(command, file)
    assert code == 1 and str(file) in output and "64 MiB" in output, output
    code, output = _run(command, "/dev/zero")  # never ends: read only up to the limit
    assert code == 1 and "64 MiB" in output, output
