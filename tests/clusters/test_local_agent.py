"""The local agent: its API contract, and a cluster that dies, restarts or stops answering."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time

import httpx
import psutil
import pytest
from local_support import LocalHarness, cluster_spec, eventually

from nemo_kernel.clusters import ClusterUnreachable, ReplicaRejected
from nemo_kernel.clusters.local import LocalAgentLauncher, LocalClusterDriver
from nemo_kernel.clusters.local.processes import live_process
from nemo_kernel.clusters.local.state import AGENT_FILE, AgentEndpoint, read_agent_endpoint
from nemo_kernel.domain import ReplicaPhase


def gone(pid: int) -> bool:
    """Whether the process exited (a zombie waiting for a reaper that is not us counts as exited)."""
    return live_process(pid, None) is None


async def all_running(driver: LocalClusterDriver, count: int) -> dict[str, int] | None:
    """Pid per replica once ``count`` replicas are Running."""
    report = await driver.status()
    if len(report.replicas) == count and all(r.phase is ReplicaPhase.RUNNING for r in report.replicas):
        return {r.id: r.pid for r in report.replicas if r.pid is not None}
    return None


async def test_token_is_required_and_kept_private(local: LocalHarness) -> None:
    driver = await local.driver()
    agent_file = local.launcher.state_dir("edge-a") / AGENT_FILE
    endpoint = read_agent_endpoint(agent_file)
    assert endpoint is not None
    assert stat.S_IMODE(agent_file.stat().st_mode) == 0o600

    async with httpx.AsyncClient(base_url=endpoint.url, trust_env=False) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {endpoint.token}"}):
            response = await client.get("/v1/status", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        ok = await client.get("/v1/status", headers={"Authorization": f"Bearer {endpoint.token}"})
        assert ok.status_code == 200

    wrong = LocalClusterDriver(endpoint.url, "wrong", timeout=2.0)
    try:
        with pytest.raises(ClusterUnreachable):
            await wrong.status()
    finally:
        await wrong.close()
    assert endpoint.token not in (local.launcher.state_dir("edge-a") / "agent.log").read_text()
    await driver.status()


async def test_unknown_node_is_rejected_with_an_error_body(local: LocalHarness) -> None:
    driver = await local.driver()
    spec = local.replica("demo-0", node="nowhere")

    with pytest.raises(ReplicaRejected) as caught:
        await driver.ensure_replica(spec)
    assert caught.value.code == "unknown_node"

    endpoint = read_agent_endpoint(local.launcher.state_dir("edge-a") / AGENT_FILE)
    assert endpoint is not None
    async with httpx.AsyncClient(base_url=endpoint.url, trust_env=False) as client:
        response = await client.put(
            "/v1/replicas/demo-0",
            json=spec.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_node"
    assert error["message"]
    assert error["details"] == {"nodes": ["n1", "n2"]}
    assert (await driver.status()).replicas == []


async def test_ensure_and_remove_are_idempotent(local: LocalHarness) -> None:
    driver = await local.driver()
    spec = local.replica("demo-0")
    await driver.ensure_replica(spec)
    first = await eventually(lambda: all_running(driver, 1))

    await driver.ensure_replica(spec)  # same spec: nothing happens
    assert await all_running(driver, 1) == first

    await driver.ensure_replica(spec.model_copy(update={"env": {**spec.env, "V": "2"}}))  # changed: replaced
    second = await eventually(lambda: _running_with_new_pid(driver, first["demo-0"]))
    assert second != first["demo-0"]
    assert gone(first["demo-0"])

    await driver.remove_replica("demo-0")
    await driver.remove_replica("demo-0")
    await driver.remove_replica("never-existed")
    await eventually(lambda: _gone(driver))
    assert gone(second)


async def _running_with_new_pid(driver: LocalClusterDriver, old: int) -> int | None:
    pids = await all_running(driver, 1)
    return pids["demo-0"] if pids and pids["demo-0"] != old else None


async def _gone(driver: LocalClusterDriver) -> bool:
    return (await driver.status()).replicas == []


async def test_new_agent_adopts_replicas_of_a_killed_one(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("demo-0", node="n1"))
    await driver.ensure_replica(local.replica("demo-1", node="n2", index=1))
    pids = await eventually(lambda: all_running(driver, 2))

    old_agent = local.launcher.pid_of("edge-a")
    assert old_agent is not None
    agent = psutil.Process(old_agent)
    agent.kill()
    agent.wait(timeout=10)
    assert local.launcher.pid_of("edge-a") is None
    with pytest.raises(ClusterUnreachable):
        await driver.status()

    new_driver = await local.driver()
    assert local.launcher.pid_of("edge-a") not in (None, old_agent)
    assert await eventually(lambda: all_running(new_driver, 2)) == pids  # same processes, adopted
    assert all(r.restarts == 0 for r in (await new_driver.status()).replicas)


async def test_stopped_agent_is_unreachable_within_the_timeout(local: LocalHarness, spawned: list[int]) -> None:
    await local.driver()
    pid = local.launcher.pid_of("edge-a")
    assert pid is not None
    endpoint = read_agent_endpoint(local.launcher.state_dir("edge-a") / AGENT_FILE)
    assert endpoint is not None
    driver = LocalClusterDriver(endpoint.url, endpoint.token, timeout=1.0)
    try:
        spawned.append(pid)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ClusterUnreachable):
            await driver.status()
        assert time.monotonic() - started < 1.5

        os.kill(pid, signal.SIGCONT)
        report = await driver.status()
        assert report.cluster == "edge-a"
    finally:
        await driver.close()


async def test_stop_leaves_replicas_running_and_destroy_removes_everything(local: LocalHarness) -> None:
    launcher: LocalAgentLauncher = local.launcher
    driver = await local.driver()
    await driver.ensure_replica(local.replica("demo-0"))
    pids = await eventually(lambda: all_running(driver, 1))

    await launcher.stop("edge-a")
    assert launcher.pid_of("edge-a") is None
    assert not gone(pids["demo-0"])

    driver = await local.driver(cluster_spec())
    assert await eventually(lambda: all_running(driver, 1)) == pids

    await launcher.destroy("edge-a")
    assert not launcher.state_dir("edge-a").exists()
    assert gone(pids["demo-0"])


async def test_destroy_works_even_when_the_agent_hangs(local: LocalHarness, spawned: list[int]) -> None:
    driver = await local.driver()
    await driver.ensure_replica(local.replica("demo-0"))
    pids = await eventually(lambda: all_running(driver, 1))
    agent = local.launcher.pid_of("edge-a")
    assert agent is not None
    spawned.append(agent)
    os.kill(agent, signal.SIGSTOP)

    await local.launcher.destroy_all()

    assert gone(agent)
    assert gone(pids["demo-0"])
    assert not local.launcher.state_dir("edge-a").exists()


async def test_a_new_agent_that_stops_answering_is_left_alone(local: LocalHarness, spawned: list[int]) -> None:
    """A new agent that goes silent once it has taken its cluster (stopped, hung, slow on a loaded machine) is the
    cluster's agent: it is not killed; the cluster is unreachable, and the agent is used again once it answers."""
    launcher = LocalAgentLauncher(local.launcher.state_root, request_timeout=1.0, start_timeout=3.0)
    # The agent must be stopped between writing agent.json and its first answer; a try whose agent answered first
    # did not test anything, so a few clusters are tried.
    for attempt in range(5):
        spec = cluster_spec(f"silent-{attempt}")
        agent_file = launcher.state_dir(spec.name) / AGENT_FILE
        starting = asyncio.create_task(launcher.ensure(spec))

        async def published() -> AgentEndpoint | None:
            return read_agent_endpoint(agent_file)  # noqa: B023 (awaited within this iteration)

        endpoint = await eventually(published, interval=0.005)
        spawned.append(endpoint.pid)
        os.kill(endpoint.pid, signal.SIGSTOP)
        try:
            local.drivers.append(await starting)
        except ClusterUnreachable:
            break
        os.kill(endpoint.pid, signal.SIGCONT)  # it answered before it was stopped: try again
    else:
        pytest.fail("the agent answered before it could be stopped, every time")

    assert live_process(endpoint.pid, endpoint.create_time) is not None  # stopped, not killed
    os.kill(endpoint.pid, signal.SIGCONT)

    async def answering() -> LocalClusterDriver | None:
        try:
            return await launcher.ensure(spec)
        except ClusterUnreachable:
            return None  # still finishing its start

    driver = await eventually(answering)
    local.drivers.append(driver)
    assert (await driver.status()).cluster == spec.name
    assert launcher.pid_of(spec.name) == endpoint.pid
