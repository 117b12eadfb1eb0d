"""An operator's workload cannot read the control plane's secrets: replicas run in a sandbox.

The agent runs with the control plane's user and environment, and the data directory holds the admin
credentials, the store, module identities and the agents' tokens. Each test starts a real agent, deploys a
workload that tries to read all of that, and reads what it reports in its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
from local_support import DEMO_SERVICE, MARKER_ENV, PYTHON, LocalHarness, cluster_spec, eventually, kill_everything
from tests.stack import running_stack, wait_for

from nemo_kernel.clusters import ClusterUnreachable, ReplicaRejected, ReplicaReport
from nemo_kernel.clusters.local import LocalAgentLauncher, LocalClusterDriver
from nemo_kernel.clusters.local.processes import free_port
from nemo_kernel.clusters.local.sandbox import SAFE_PATH
from nemo_kernel.clusters.local.state import (
    AGENT_FILE,
    CLUSTER_FILE,
    REPLICAS_FILE,
    AgentEndpoint,
    ReplicaRecord,
    ReplicaTable,
    save_replica_table,
    write_agent_endpoint,
)
from nemo_kernel.domain import ReplicaPhase

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

# Tries every way to the secrets it knows of, then prints what it got to its log.
PROBE = r"""
import json, os, signal
targets = json.loads(os.environ["TARGETS"])
agent = os.getppid()
targets["read"] += [f"/proc/{agent}/environ", f"/proc/{agent}/root" + targets["read"][0]]
report = {"read": {}, "listed": {}, "uid": os.getuid(), "env": dict(os.environ)}
for path in targets["read"]:
    try:
        with open(path, "rb") as handle:
            report["read"][path] = handle.read(64).decode("latin-1")
    except OSError as exc:
        report["read"][path] = type(exc).__name__
for path in targets["list"]:
    try:
        report["listed"][path] = sorted(os.listdir(path))
    except OSError as exc:
        report["listed"][path] = type(exc).__name__
with open("demo_service.py") as handle:  # the working directory is usable
    report["working_dir"] = handle.readline().strip()
try:
    with open(os.environ["HOME"] + "/notes.txt", "w") as handle:  # HOME is the replica's own
        report["home"] = handle.write("mine")
except OSError as exc:
    report["home"] = type(exc).__name__
print("REPORT", json.dumps(report), flush=True)
signal.sigwait([signal.SIGTERM])
"""

SECRET = "TOP-SECRET-" + uuid.uuid4().hex
SECRET_NAMES = ("admin-credentials.json", "nemo.db", "identities", "endpoint.json", "agent.json", "replicas.json")
CONTROL_PLANE_ENV = {"NEMO_DATABASE_URL": f"postgresql://nemo:{SECRET}@db/nemo", "NEMO_OIDC_CLIENT_SECRET": SECRET}


def seed_data_dir(data_dir: Path, owner: int | None) -> list[Path]:
    """What `nemo up` keeps in its data directory (0700), secrets included; returns the secret files."""
    data_dir.chmod(0o700)
    credentials = data_dir / "admin-credentials.json"
    credentials.write_text(json.dumps({"client_id": "nemo-admin", "client_secret": SECRET}))
    credentials.chmod(0o600)
    with contextlib.closing(sqlite3.connect(data_dir / "nemo.db")) as db, db:
        db.execute("CREATE TABLE signing_keys (pem TEXT)")
        db.execute("INSERT INTO signing_keys VALUES (?)", (SECRET,))
    (data_dir / "identities").mkdir()
    identity = data_dir / "identities" / "orchestrator.json"
    identity.write_text(json.dumps({"private_key": SECRET}))
    # world-readable on purpose: the directory's mode and the sandbox must protect it, not the file's mode
    identity.chmod(0o644)
    endpoint = data_dir / "endpoint.json"
    endpoint.write_text(json.dumps({"url": "http://127.0.0.1:7700", "pid": 1}))
    if owner is not None:  # as the agent's user owns them: only the sandbox stands in the way
        for path in (data_dir, *data_dir.rglob("*")):
            os.chown(path, owner, owner)
    return [credentials, data_dir / "nemo.db", identity, endpoint]


async def probe_secrets(harness: LocalHarness, data_dir: Path, owner: int | None = None) -> dict[str, object]:
    """Deploy the probe on a cluster of ``harness`` and return its report once written."""
    secrets = seed_data_dir(data_dir, owner)
    driver = await harness.driver()
    state_dir = harness.launcher.state_dir("edge-a")
    # another replica first: its log and environment are in the state directory too
    await driver.ensure_replica(harness.replica("other-0", env={"OTHER_TOKEN": SECRET}))
    await eventually(lambda: running(driver, "other-0"))
    targets = {
        "read": [str(p) for p in secrets]
        + [str(state_dir / f) for f in ("agent.json", "replicas.json", "logs/other-0.log")],
        "list": [str(data_dir), str(data_dir / "identities"), str(state_dir), str(state_dir / "homes")],
    }
    await driver.ensure_replica(
        harness.replica(
            "probe-0",
            command=[PYTHON, "-c", PROBE],
            env={"TARGETS": json.dumps(targets)},
            working_dir=str(DEMO_SERVICE.parent),
            ports=[],
            health={},
        )
    )
    report: dict[str, object] = json.loads(await eventually(lambda: report_in(state_dir / "logs" / "probe-0.log")))
    status = await driver.status()
    report["sandbox"] = status.sandbox
    return report


def assert_no_secret_reached(report: dict[str, object]) -> None:
    read = report["read"]
    assert isinstance(read, dict)
    got = {path: content for path, content in read.items() if content not in {"PermissionError", "FileNotFoundError"}}
    assert got == {}, f"the workload read {sorted(got)}"
    listed = report["listed"]
    assert isinstance(listed, dict)
    for path, entries in listed.items():
        if isinstance(entries, list):  # a covered directory shows only the way to the replica's own
            assert not set(entries) & {*SECRET_NAMES, "logs", "other-0"}, (path, entries)
    assert SECRET not in json.dumps(report)
    env = report["env"]
    assert isinstance(env, dict)
    assert not set(CONTROL_PLANE_ENV) & set(env)
    # only the replica's identity (and the tests' marker, which their descriptors set)
    assert {k for k in env if k.startswith("NEMO_")} - {MARKER_ENV} == {
        "NEMO_WORKLOAD", "NEMO_REPLICA", "NEMO_NODE", "NEMO_CLUSTER",
    }  # fmt: skip
    assert env["PATH"] == SAFE_PATH
    assert report["working_dir"].startswith('"""A tiny HTTP service')  # type: ignore[union-attr]


def assert_home_is_its_own(harness: LocalHarness) -> None:
    home = harness.launcher.state_dir("edge-a") / "homes" / "probe-0"
    assert (home / "notes.txt").read_text() == "mine"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


async def running(driver: LocalClusterDriver, replica_id: str) -> bool:
    return any(r.id == replica_id and r.phase is ReplicaPhase.RUNNING for r in (await driver.status()).replicas)


async def report_in(log: Path) -> str | None:
    lines = log.read_text().splitlines() if log.exists() else []
    return next((line.removeprefix("REPORT ") for line in lines if line.startswith("REPORT ")), None)


async def test_a_workload_cannot_read_the_control_planes_secrets(
    local: LocalHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CONTROL_PLANE_ENV.items():
        monkeypatch.setenv(name, value)  # the agent inherits the control plane's environment

    report = await probe_secrets(local, data_dir=tmp_path)  # the fixture's state root is tmp_path/clusters

    assert_no_secret_reached(report)
    assert_home_is_its_own(local)
    if os.geteuid() == 0:
        assert report["sandbox"] == "user"
        assert report["uid"] != 0
    else:
        assert report["sandbox"] == "namespace"


async def test_a_working_dir_in_the_data_directory_is_refused(local: LocalHarness, tmp_path: Path) -> None:
    driver = await local.driver()
    (tmp_path / "sources" / "default" / "demo").mkdir(parents=True)
    (tmp_path / "sources" / "default" / "escape").symlink_to(tmp_path)

    for working_dir in (tmp_path, tmp_path / "clusters", tmp_path / "sources" / "default" / "escape"):
        with pytest.raises(ReplicaRejected) as caught:
            await driver.ensure_replica(local.replica("wd-0", working_dir=str(working_dir)))
        assert caught.value.code == "working_dir_in_data_dir"
    assert (await driver.status()).replicas == []
    # the workload's own checkout (petitions clone it to DATA_DIR/sources/<namespace>/<name>) is allowed
    await driver.ensure_replica(local.replica("wd-0", working_dir=str(tmp_path / "sources" / "default" / "demo")))


# ------------------------------------------------------------------ an agent that does not run as root

UNPRIVILEGED = 65534  # nobody


@pytest.fixture
def unprivileged_root() -> Iterator[Path]:
    """A data directory owned by an unprivileged user, outside root's private temporary directories."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to start an agent as another user (as non-root, the test above is it)")
    base = Path(tempfile.mkdtemp(prefix="nemo-unprivileged-"))
    base.chmod(0o755)
    data_dir = base / "data"
    (data_dir / "clusters").mkdir(parents=True)
    for path in (data_dir, data_dir / "clusters"):
        os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    try:
        yield data_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def unprivileged(unprivileged_root: Path) -> AsyncIterator[LocalHarness]:
    """A harness whose agents run as ``nobody``, with the system's python3 and this checkout on its path."""
    state_root = unprivileged_root / "clusters"
    python = unprivileged_root.parent / "python-as-nobody"
    site = [p for p in sys.path if p.endswith("site-packages")]
    src = Path(__file__).resolve().parents[2] / "src"
    python.write_text(
        "#!/bin/sh\n"
        f"exec setpriv --reuid={UNPRIVILEGED} --regid={UNPRIVILEGED} --clear-groups "
        f'env PYTHONPATH={":".join([*site, str(src)])} {PYTHON} "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    harness = LocalHarness(
        launcher=LocalAgentLauncher(state_root, request_timeout=2.0, python=str(python)), run_id=uuid.uuid4().hex
    )
    # the launcher creates the state directory as root; the agent must own it to write its files there
    state_dir = harness.launcher.state_dir("edge-a")
    state_dir.mkdir()
    os.chown(state_dir, UNPRIVILEGED, UNPRIVILEGED)
    try:
        yield harness
    finally:
        for driver in harness.drivers:
            await driver.close()
        kill_everything(state_root, harness.run_id)


async def test_an_unprivileged_agent_hides_the_data_directory_in_a_namespace(
    unprivileged: LocalHarness, unprivileged_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CONTROL_PLANE_ENV.items():
        monkeypatch.setenv(name, value)

    report = await probe_secrets(unprivileged, data_dir=unprivileged_root, owner=UNPRIVILEGED)

    assert_no_secret_reached(report)
    assert_home_is_its_own(unprivileged)
    assert report["uid"] == UNPRIVILEGED
    assert report["sandbox"] == "namespace"


async def test_a_working_dir_the_agent_may_not_resolve_is_refused_and_the_agent_goes_on(
    unprivileged: LocalHarness,
) -> None:
    driver = await unprivileged.driver()
    # pid 1's cwd link may not be read by the agent's user: a refusal of that replica, not an error of the agent
    with pytest.raises(ReplicaRejected) as caught:
        await driver.ensure_replica(unprivileged.replica("wd-0", working_dir="/proc/1/cwd"))
    assert caught.value.code == "unresolvable_working_dir"
    assert caught.value.details == {"working_dir": "/proc/1/cwd"}
    await driver.ensure_replica(unprivileged.replica("other-0", working_dir=str(DEMO_SERVICE.parent)))
    assert [r.id for r in (await driver.status()).replicas] == ["other-0"]


# ------------------------------------------------------------------ through `nemo up`, as an operator


def test_an_operators_workload_cannot_become_admin(tmp_path: Path) -> None:
    # secrets in the environment of `nemo up` (a database URL here would have it use that database)
    secrets_env = {"NEMO_OIDC_CLIENT_SECRET": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET}
    env = {"NEMO_HEARTBEAT_INTERVAL": "0.5", "NEMO_RECONCILE_INTERVAL": "0.5", **secrets_env}
    with running_stack(tmp_path / "data", env) as stack:
        operator = stack.cli_json("client", "add", "ops", "--role", "nemo-operator")
        token = stack.token("ops", operator["secret"])
        data_dir = stack.data_dir
        secrets = [data_dir / "admin-credentials.json", data_dir / "nemo.db", *data_dir.glob("identities/*")]
        targets = {"read": [str(p) for p in secrets], "list": [str(data_dir), str(data_dir / "clusters")]}
        probe = {
            "name": "probe",
            "deployment": {
                "command": ["python3", "-c", PROBE],
                "working_dir": str(DEMO_SERVICE.parent),
                "env": {"TARGETS": json.dumps(targets)},
                "replicas": 1,
                "ports": [],
            },
        }
        response = stack.api("POST", "/workloads", token=token, json=probe)
        assert response.status_code == 201, response.text

        def reported() -> str | None:
            return next((line for log in data_dir.glob("clusters/*/logs/*.log") for line in _report_lines(log)), None)

        report = json.loads(wait_for(reported, 60, "the probe's report"))
        admin_secret = stack.admin_credentials()["client_secret"]
        clusters = stack.cli_json("cluster", "list")
        table = stack.cli("cluster", "list").stdout
        # what `nemo cluster drain|cordon|uncordon` print: the cluster as the list shows it, sandbox included
        answers = [stack.api("POST", f"/clusters/{clusters[0]['name']}/{op}") for op in ("cordon", "uncordon")]

    assert report["read"] and report["listed"]
    assert admin_secret not in json.dumps(report)
    assert_no_secret_reached(report)
    assert not set(secrets_env) & set(report["env"])  # type: ignore[arg-type]
    expected = "user" if os.geteuid() == 0 else "namespace"
    assert {c["sandbox"] for c in clusters} == {expected}
    assert "SANDBOX" in table and expected in table
    assert [(a.status_code, a.json()["sandbox"]) for a in answers] == [(200, expected)] * 2


def _report_lines(log: Path) -> list[str]:
    return [line.removeprefix("REPORT ") for line in log.read_text().splitlines() if line.startswith("REPORT ")]


async def test_a_replica_started_before_the_sandbox_is_restarted_into_it(local: LocalHarness) -> None:
    # a replica left running by an agent without a sandbox (an older NEMO) still sees everything: the new
    # agent adopts it only to replace it
    spec = local.replica("old-0")
    port = free_port()
    old = subprocess.Popen(
        spec.command or [],
        env={"PATH": SAFE_PATH, "PORT": str(port), MARKER_ENV: local.run_id},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        state_dir = local.launcher.state_dir("edge-a")
        state_dir.mkdir(parents=True)
        record = ReplicaRecord(
            spec=spec, ports={"http": port}, pid=old.pid, create_time=psutil.Process(old.pid).create_time()
        )
        save_replica_table(state_dir / REPLICAS_FILE, ReplicaTable(replicas=[record]))

        driver = await local.driver()

        async def replaced() -> ReplicaReport | None:
            (report,) = (await driver.status()).replicas
            return report if report.phase is ReplicaPhase.RUNNING and report.pid not in (None, old.pid) else None

        report = await eventually(replaced)
        assert old.wait(timeout=10) is not None  # stopped by the agent
        assert report.pid is not None
        if os.geteuid() == 0:
            assert psutil.Process(report.pid).uids().real != 0
        assert report.url == f"http://127.0.0.1:{port}"  # the same address, now served from the sandbox
    finally:
        with contextlib.suppress(ProcessLookupError):
            old.kill()
        old.wait()


async def test_an_agent_refuses_to_start_when_the_replica_user_does_not_exist(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the replica user matters only to an agent running as root")
    launcher = LocalAgentLauncher(tmp_path / "clusters", replica_user="no-such-nemo-user")

    with pytest.raises(ClusterUnreachable, match="exited with code 1"):
        await launcher.ensure(cluster_spec())

    log = (launcher.state_dir("edge-a") / "agent.log").read_text()
    assert "NEMO_REPLICA_USER='no-such-nemo-user': no such user; replicas would run as root" in log


OLD_AGENT = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # what an agent of an older NEMO answers: no sandbox field
        body = json.dumps({"cluster": "edge-a", "nodes": [], "replicas": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


async def test_an_agent_without_a_sandbox_is_replaced(local: LocalHarness) -> None:
    # after an upgrade, the agent of the previous version may still run: it must not keep serving the cluster
    old = subprocess.Popen([PYTHON, "-c", OLD_AGENT], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert old.stdout is not None
        port = int(old.stdout.readline())
        spec = cluster_spec()
        state_dir = local.launcher.state_dir(spec.name)
        state_dir.mkdir(parents=True)
        (state_dir / CLUSTER_FILE).write_text(spec.model_dump_json(indent=2))
        endpoint = AgentEndpoint(
            url=f"http://127.0.0.1:{port}", token="old", pid=old.pid, create_time=psutil.Process(old.pid).create_time()
        )
        write_agent_endpoint(state_dir / AGENT_FILE, endpoint)

        driver = await local.driver(spec)

        assert old.wait(timeout=10) is not None  # stopped
        assert local.launcher.pid_of(spec.name) not in (None, old.pid)
        assert (await driver.status()).sandbox in {"user", "namespace"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            old.kill()
        old.wait()
