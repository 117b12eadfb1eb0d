"""`nemo monitoring prometheus-config` against a running `nemo up`: promtool accepts every layout it prints, and a
real Prometheus started on it scrapes the stack with a read-only client's tokens."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nemo_kernel.cli.app import app
from nemo_kernel.cli.client import CliError
from tests.metrics.prometheus_server import PROMTOOL, running_prometheus
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

CLUSTERS = ("cloud-eu", "edge-madrid")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("monitoring") / "data") as s:
        yield s


def _config(stack: Stack, secrets: Path, *args: str) -> tuple[dict[str, Any], Path]:
    out = stack.cli("monitoring", "prometheus-config", "--secrets-dir", str(secrets), *args).stdout
    path = secrets.parent / f"prometheus-{abs(hash(args))}.yml"
    path.write_text(out)
    return yaml.safe_load(out), path


def _promtool_accepts(path: Path) -> None:
    done = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_single_layout_scrapes_the_stack_with_a_viewer_client(stack: Stack, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    config, path = _config(stack, secrets, "--interval", "1s")
    _promtool_accepts(path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"nemo-control-plane", "nemo-workloads", "nemo-gateway"}
    oauth = jobs["nemo-control-plane"]["oauth2"]
    assert oauth["token_url"] == f"{stack.url}/realms/nemo/protocol/openid-connect/token"
    secret_file = Path(oauth["client_secret_file"])
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    (client,) = [c for c in stack.api("GET", "/clients").json() if c["client_id"] == oauth["client_id"]]
    assert client["roles"] == ["nemo-viewer"]  # read-only: the file on the Prometheus host cannot change anything
    secret = secret_file.read_text()

    again, _ = _config(stack, secrets, "--interval", "1s")
    assert again == config and secret_file.read_text() == secret  # the client and its secret are reused

    with running_prometheus(tmp_path / "prometheus", config) as prometheus:
        up = prometheus.wait_for_series("up == 1", count=3)
    assert {r["metric"]["job"] for r in up} == {"nemo-control-plane", "nemo-workloads", "nemo-gateway"}


def test_the_federation_layout_has_a_config_per_cluster_and_a_federating_one(stack: Stack, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    for cluster in CLUSTERS:
        config, path = _config(stack, secrets, "--layout", "federation", "--cluster", cluster)
        _promtool_accepts(path)
        (job,) = config["scrape_configs"]
        assert job["job_name"] == f"nemo-agent-{cluster}"
        assert job["static_configs"][0]["labels"]["cluster"] == cluster
        token_file = Path(job["authorization"]["credentials_file"])
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    federate = [f"--federate={c}=http://127.0.0.1:{9100 + i}" for i, c in enumerate(CLUSTERS)]
    config, path = _config(stack, secrets, "--layout", "federation", *federate)
    _promtool_accepts(path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"nemo-federate-cloud-eu", "nemo-federate-edge-madrid", "nemo-federate-nemo"}
    assert jobs["nemo-federate-cloud-eu"]["params"] == {"match[]": ['{job="nemo-agent-cloud-eu"}']}
    assert jobs["nemo-federate-nemo"]["metrics_path"] == "/federate" and "oauth2" in jobs["nemo-federate-nemo"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--interval", "1.5s"), "--interval: '1.5s' is not a Prometheus duration"),
        (("--layout", "federation", "--federate", "c1=ftp://x"), "--federate: 'c1=ftp://x' is not CLUSTER=http"),
        (("--cluster", "cloud-eu"), "--cluster and --federate are for --layout federation"),
    ],
)
def test_bad_options_are_refused_before_anything_is_asked(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    # In-process: these are refused before the API is looked for (none runs here).
    done = CliRunner().invoke(app, ["monitoring", "prometheus-config", "--secrets-dir", str(tmp_path), *args])
    assert isinstance(done.exception, CliError)  # `nemo` prints it in one line (cli.app.main)
    assert says in str(done.exception)
    assert not list(tmp_path.iterdir())


def test_a_cluster_without_a_local_agent_is_refused_naming_those_there_are(stack: Stack, tmp_path: Path) -> None:
    args = ("--secrets-dir", str(tmp_path), "--layout", "federation", "--cluster", "nope")
    done = stack.cli("monitoring", "prometheus-config", *args, check=False)
    assert done.returncode != 0 and done.stdout == ""
    assert "no agent of cluster 'nope' is running here (local clusters: cloud-eu, edge-madrid" in done.stderr
