"""Schemathesis against a running `nemo up`: every operation of /openapi.json, fuzzed over real HTTP with a viewer
and an admin token, with every check that judges the API against its document (no server error; statuses, content
types, headers and bodies as documented; invalid data refused; a 405 names the methods the resource has; ...).

The run is bounded (a few examples per operation, a fixed seed) so it is quick and reproducible: rerun a failure
with the command the assertion message shows. Left out, on purpose:
- ``positive_data_acceptance``: a schema-valid body may still break a rule JSON Schema cannot state (a route naming
  an unknown service, a key in the URL that must match the body, public keys that must decode to 32 bytes, exactly
  one of ``url`` and ``workload``); the API answers those with 422 naming the field, as test_api.py checks.
- the admin's petitions: they create local clusters (agent processes) or clone repositories; the viewer still sends
  them (and is refused). The stack's clusters, and those the admin registers (tests/api/fuzz_hooks.py), are
  simulated, so no fuzzed workload starts a process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.stack import ROOT, Stack, running_stack

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

# A deeper run, by hand: NEMO_TEST_FUZZ_EXAMPLES=100 NEMO_TEST_FUZZ_PHASES=examples,coverage,fuzzing (the coverage
# phase does not apply the hooks: it may disable the run's own client and go on with 401s, so read its warnings).
MAX_EXAMPLES = int(os.environ.get("NEMO_TEST_FUZZ_EXAMPLES", "8"))
PHASES = os.environ.get("NEMO_TEST_FUZZ_PHASES", "examples,fuzzing")
SEED = int(os.environ.get("NEMO_TEST_FUZZ_SEED", "20261201"))
ROLES = {"viewer": "nemo-viewer", "admin": "nemo-admin"}
SIMULATED = {
    "name": "sim-edge",
    "driver": "sim",
    "tier": "edge",
    "region": "eu-south",
    "country": "ES",
    "nodes": [{"name": "se-1", "cpu": 8, "memory_mib": 8192}],
}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fuzz")
    # Simulated clusters only (instead of the three local ones): the fuzzer's workloads must not start processes.
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": [SIMULATED]}))
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.5"}
    with running_stack(root / "data", env) as stack:
        yield stack


def _fuzz_client(stack: Stack, role: str) -> str:
    """A fresh token of a client made for the run (so the run cannot lock the stack's own admin out)."""
    client_id = f"fuzz-{role}"
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": [ROLES[role]]})
    assert created.status_code == 201, created.text
    return stack.token(client_id, created.json()["secret"])


@pytest.mark.parametrize("role", list(ROLES))
def test_api_conforms_to_its_openapi_document(fuzz_stack: Stack, role: str, tmp_path: Path) -> None:
    token = _fuzz_client(fuzz_stack, role)
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{fuzz_stack.url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--phases", PHASES, "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--generation-database", "none", "--suppress-health-check", "filter_too_much",
        "--workers", "2", "--request-timeout", "30", "--no-color",
    ]  # fmt: skip
    if role == "admin":
        command += ["--exclude-path", "/api/v1/petitions"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks",
        "NEMO_FUZZ_PROTECTED": ",".join(["nemo-admin", *(f"fuzz-{r}" for r in ROLES)]),
    }
    # In a scratch directory: schemathesis keeps a cache where it runs.
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    report = done.stdout.replace(token, "[token]")
    if done.returncode != 0:
        pytest.fail(f"schemathesis found problems as {role}:\n{report[-12000:]}\n{done.stderr[-2000:]}")
