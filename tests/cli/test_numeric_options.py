"""Numbers on the command line are finite and bounded, refused naming the option before anything is sent.

``--timeout`` of the commands that wait (workload apply --wait, migrate --wait, cluster drain --wait): seconds, at
most a day; a NaN deadline never comes (every comparison with NaN is false), so `--wait --timeout nan` waited forever.
``nemo cluster fault --for``: nan, inf or 1e400 ended in a Python traceback (JSON cannot carry them); it reads
durations as the rest of NEMO does (seconds, or one Prometheus unit: ``500ms``, ``1d``), and nothing else."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nemo_kernel.cli.app import app
from tests.stack import NEMO, ROOT

# Nothing listens on port 1: a command that got past its options would fail to connect, not wait.
NOWHERE = "http://127.0.0.1:1"


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "1e308"])
@pytest.mark.parametrize(
    "command",
    [
        ["workload", "apply", "-f", "{file}", "--wait"],
        ["migrate", "demo", "--wait"],
        ["cluster", "drain", "c", "--wait"],  # drained the cluster, then waited forever
    ],
)
def test_a_timeout_that_never_ends_is_refused_naming_the_option(
    command: list[str], timeout: str, tmp_path: Path
) -> None:
    descriptor = tmp_path / "w.yaml"
    descriptor.write_text("name: w\ndeployment: {command: [sleep, '1']}\n")
    args = [a.replace("{file}", str(descriptor)) for a in command]
    done = CliRunner().invoke(app, [*args, "--timeout", timeout, "--api", NOWHERE], env={"COLUMNS": "200"})
    assert done.exit_code == 2, done.output
    assert "--timeout" in done.output and "at most 86400" in done.output, done.output


def test_a_finite_timeout_gets_past_the_options(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["migrate", "demo", "--to", "x", "--wait", "--timeout", "2.5", "--api", NOWHERE])
    assert done.exit_code == 1  # it went on to call the API, which is not there
    assert "--timeout" not in done.output, done.output


@pytest.mark.parametrize("duration", ["nan", "inf", "-infs", "1e400m", "1.5m", "1e3", "5 m", "1h30m", "٣s"])
def test_a_fault_duration_that_is_not_a_number_is_refused_naming_the_option(duration: str) -> None:
    args = ["cluster", "fault", "edge", "--down", "--for", duration, "--api", NOWHERE]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 2, done.output
    assert "--for" in done.output and "is not a duration" in done.output, done.output


@pytest.mark.parametrize("duration", ["90", "2.5", "500ms", "5m", "1d"])
def test_a_fault_duration_written_as_elsewhere_gets_past_the_options(duration: str) -> None:
    args = ["cluster", "fault", "edge", "--down", "--for", duration, "--api", NOWHERE]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 1, done.output  # it went on to call the API, which is not there
    assert "--for" not in done.output, done.output


@pytest.mark.parametrize("port", ["in use", "99999", "-1"])
def test_a_gateway_port_it_cannot_listen_on_is_one_line_naming_the_option(port: str, tmp_path: Path) -> None:
    # a port in use was a traceback, and 99999 a gateway that hung without a word
    config = tmp_path / "gateway.yaml"
    config.write_text("services: []\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = str(taken.getsockname()[1]) if port == "in use" else port
        # the real command (its error handling is the entry point's); a gateway that starts fails the timeout
        done = subprocess.run(
            [*NEMO, "gateway", "run", "--config", str(config), "--port", number],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{number}" in line and "--host/--port" in line, line
