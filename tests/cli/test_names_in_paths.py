"""Names given on the command line go into API paths as written: one that is empty, ``.`` or ``..``, or holds a
control character, is refused before anything is sent. ``nemo workload delete ../clusters/edge`` sent
``DELETE /api/v1/clusters/edge`` (the HTTP client resolves dot segments) and removed the cluster; ``nemo workload get
''`` listed every workload and died on it; a newline in a name ended in a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nemo_kernel.cli.app import app
from nemo_kernel.cli.client import CliError

# Nothing listens on port 1: a command that got past the name check would fail to connect.
NOWHERE = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("args", "segment"),
    [
        (["workload", "delete", "../clusters/edge"], "'..'"),
        (["workload", "delete", "x/../../clusters/edge"], "'..'"),
        (["sla", "delete", "./gold"], "'.'"),
        (["workload", "get", ""], "''"),
        (["workload", "get", "w\n"], "'w\\n'"),
        (["cluster", "remove", "edge/.."], "'..'"),
    ],
)
def test_a_name_that_is_not_one_is_refused_before_anything_is_sent(args: list[str], segment: str) -> None:
    done = CliRunner().invoke(app, [*args, "--api", NOWHERE], env={"COLUMNS": "200"})
    assert done.exit_code == 1, done.output
    assert isinstance(done.exception, CliError), done.exception  # ours: `nemo` prints it as `error: ...`, exit 1
    assert f"{segment} is not a name" in str(done.exception)


def test_a_plain_name_goes_on_to_the_api() -> None:
    done = CliRunner().invoke(app, ["workload", "get", "demo", "--api", NOWHERE], env={"COLUMNS": "200"})
    assert isinstance(done.exception, CliError) and "cannot reach the API" in str(done.exception), done.exception
