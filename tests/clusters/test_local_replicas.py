"""The local driver runs replicas as real processes: they serve HTTP, get their env, restart when killed."""

from __future__ import annotations

import itertools
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from local_support import MARKER_ENV, PYTHON, LocalHarness, eventually

from nemo_kernel.clusters import ClusterReport, ReplicaRejected, ReplicaReport
from nemo_kernel.clusters.local import LocalClusterDriver
from nemo_kernel.clusters.local.sandbox import SAFE_PATH
from nemo_kernel.domain import PortSpec, ReplicaPhase


async def running(driver: LocalClusterDriver, *ids: str) -> dict[str, ReplicaReport] | None:
    """The reports of ``ids`` once all of them are Running, else None."""
    report = await driver.status()
    by_id = {r.id: r for r in report.replicas}
    if all(i in by_id and by_id[i].phase is ReplicaPhase.RUNNING for i in ids):
        return by_id
    return None


async def get_json(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, timeout=2.0)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


async def test_replicas_run_and_answer_with_their_identity(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("demo-0", node="n1"))
    await driver.ensure_replica(local.replica("demo-1", node="n2", index=1))

    reports = await eventually(lambda: running(driver, "demo-0", "demo-1"))

    urls = {reports["demo-0"].url, reports["demo-1"].url}
    assert len(urls) == 2 and all(u and u.startswith("http://127.0.0.1:") for u in urls)
    for replica_id, node in (("demo-0", "n1"), ("demo-1", "n2")):
        url = reports[replica_id].url
        assert url is not None
        body = await get_json(url + "/")
        assert body["replica"] == replica_id
        assert body["node"] == node
        assert body["workload"] == "default/demo"
        assert body["cluster"] == "edge-a"
        assert body["pid"] == reports[replica_id].pid
    status = await driver.status()
    assert [(n.name, n.ready) for n in status.nodes] == [("n1", True), ("n2", True)]


async def test_replica_environment_is_clean(local: LocalHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    # the agent inherits the control plane's environment; replicas get what the descriptor asks for and
    # their identity, nothing else (no secret, no NEMO_* setting, not the PATH or HOME of `nemo up`)
    monkeypatch.setenv("NEMO_DATABASE_URL", "postgresql://secret@db/nemo")
    monkeypatch.setenv("NEMO_OIDC_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("PATH", "/opt/agent-only/bin:" + os.environ["PATH"])
    dump_env = (
        "import json, os, signal; home = os.environ['HOME']; "
        "json.dump(dict(os.environ), open(home + '/env.tmp', 'w')); os.replace(home + '/env.tmp', home + '/env.json'); "
        "signal.sigwait([signal.SIGTERM])"
    )
    driver = await local.driver()
    await driver.ensure_replica(
        local.replica(
            "env-0",
            command=[PYTHON, "-c", dump_env],
            env={"GREETING": "hola"},
            ports=[PortSpec(name="http"), PortSpec(name="admin-api", port=9090)],
            health={},
        )
    )

    reports = await eventually(lambda: running(driver, "env-0"))
    home = local.launcher.state_dir("edge-a") / "homes" / "env-0"
    await eventually(lambda: _exists(home / "env.json"))

    env = json.loads((home / "env.json").read_text())
    url = reports["env-0"].url
    assert url == f"http://127.0.0.1:{env['PORT']}"
    assert env["PORT_HTTP"] == env["PORT"]
    assert env["PORT_ADMIN_API"] != env["PORT"]
    assert env["GREETING"] == "hola"
    assert env["HOME"] == str(home)
    assert env["PATH"] == SAFE_PATH
    identity = {"NEMO_REPLICA": "env-0", "NEMO_NODE": "n1", "NEMO_WORKLOAD": "default/demo", "NEMO_CLUSTER": "edge-a"}
    assert {k: env[k] for k in identity} == identity
    expected = {"PATH", "HOME", "PORT", "PORT_HTTP", "PORT_ADMIN_API", "GREETING", MARKER_ENV, *identity}
    # Python's C-locale coercion may add LC_CTYPE in the replica itself; nothing else may appear
    assert set(env) - {"LC_CTYPE"} == expected


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_killed_replica_is_restarted(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("demo-0"))
    before = (await eventually(lambda: running(driver, "demo-0")))["demo-0"]
    assert before.pid is not None and before.restarts == 0

    os.kill(before.pid, signal.SIGKILL)

    async def restarted() -> ReplicaReport | None:
        report = {r.id: r for r in (await driver.status()).replicas}["demo-0"]
        ok = report.restarts == 1 and report.phase is ReplicaPhase.RUNNING and report.pid != before.pid
        return report if ok else None

    after = await eventually(restarted)
    assert after.url == before.url  # the port is kept, so the URL the engine knows stays valid
    assert after.url is not None
    assert (await get_json(after.url + "/"))["pid"] == after.pid


async def test_crash_loop_backs_off(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("crashy-0", command=[PYTHON, "-c", "raise SystemExit(3)"]))

    starts: list[float] = []
    crashed: list[ReplicaReport] = []

    async def three_restarts() -> bool:
        report: ClusterReport = await driver.status()
        (replica,) = report.replicas
        if replica.started_at is not None and (not starts or starts[-1] != replica.started_at.timestamp()):
            starts.append(replica.started_at.timestamp())
        if replica.phase is ReplicaPhase.CRASHED:
            crashed.append(replica)
        return replica.restarts >= 3

    await eventually(three_restarts, within=30.0, interval=0.05)

    assert crashed and all(r.exit_code == 3 for r in crashed)
    assert "exited with code 3" in crashed[-1].message
    gaps = [b - a for a, b in itertools.pairwise(starts)][:3]
    assert len(gaps) == 3, starts
    # backoff 1 s, 2 s, 4 s (plus up to one poll interval to notice the exit): never a tight loop
    assert gaps[0] >= 1.0
    assert gaps[1] >= gaps[0] + 0.4
    assert gaps[2] >= gaps[1] + 1.4


async def test_a_command_that_cannot_start_is_reported_and_retried(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("missing-0", command=["/nonexistent/nemo-binary"], health={}))

    async def crashed() -> ReplicaReport | None:
        (replica,) = (await driver.status()).replicas
        return replica if replica.phase is ReplicaPhase.CRASHED else None

    report = await eventually(crashed)
    assert report.message.startswith("cannot start:")
    assert report.pid is None


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"command": None, "image": "nginx:1.27"}, "no_command"),
        ({"working_dir": "relative/dir"}, "relative_working_dir"),
        ({"ports": []}, "no_port"),
    ],
)
async def test_what_the_local_driver_cannot_run_is_rejected(
    local: LocalHarness, overrides: dict[str, object], code: str
) -> None:
    driver = await local.driver()
    spec = local.replica("bad-0").model_copy(update=overrides)
    with pytest.raises(ReplicaRejected) as caught:
        await driver.ensure_replica(spec)
    assert caught.value.code == code
    assert (await driver.status()).replicas == []
