"""Heartbeats by change: ``status(since)`` of a sim cluster and of a real local agent returns only what changed
since the revision, a full report for one it does not know, and the caller's merged view equals a full report."""

from __future__ import annotations

import random

import httpx
from local_support import LocalHarness, eventually
from tests.clock import Clock

from nemo_kernel.clusters import ClusterReport, ReplicaSpec
from nemo_kernel.clusters.local.state import AGENT_FILE, read_agent_endpoint
from nemo_kernel.clusters.revisions import MergedReport, reportable
from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.domain import ClusterSpec, FaultSpec, ReplicaPhase


def _sim_spec(nodes: int = 3) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": "edge-1",
            "driver": "sim",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "sim": {"start_delay_s": 2.0, "failure_rate": 0.3, "seed": 7},
            "nodes": [{"name": f"n{i}", "cpu": 64, "memory_mib": 65536} for i in range(nodes)],
        }
    )


def _sim_replica(i: int, node: str) -> ReplicaSpec:
    return ReplicaSpec.model_validate(
        {"id": f"web-v1-{i}", "workload": "shop/web", "version": 1, "index": i, "node": node,
         "resources": {"cpu": 0.5, "memory_mib": 64}}
    )  # fmt: skip


def view(report: ClusterReport) -> tuple[dict[str, object], dict[str, bool]]:
    """What a heartbeat says, usage apart: each replica's reportable state and each node's readiness."""
    return {r.id: reportable(r) for r in report.replicas}, {n.name: n.ready for n in report.nodes}


async def test_a_sim_cluster_reports_only_changes_and_the_merged_view_equals_a_full_report() -> None:
    clock = Clock()
    driver = await SimProvider(clock=clock).open(_sim_spec())
    merged = MergedReport()
    first = await driver.status()
    assert first.full and first.revision is not None
    merged.merge(first)

    quiet = await driver.status(first.revision)
    assert not quiet.full and quiet.replicas == [] and quiet.nodes == [] and quiet.gone == []
    assert not merged.merge(quiet)

    rng = random.Random(13)  # seeded: the same sequence of starts, removals, node faults and clock steps each run
    next_id = 0
    for _ in range(120):
        action = rng.random()
        if action < 0.4:
            await driver.ensure_replica(_sim_replica(next_id, f"n{rng.randrange(3)}"))
            next_id += 1
        elif action < 0.6 and next_id:
            await driver.remove_replica(f"web-v1-{rng.randrange(next_id)}")
        elif action < 0.65:
            await driver.inject_fault(FaultSpec(kind="node_down", node=f"n{rng.randrange(3)}", for_s=rng.uniform(1, 9)))
        clock.now += rng.uniform(0, 3)
        delta = await driver.status(merged.revision)
        assert not delta.full
        merged.merge(delta)
        assert merged.report is not None
        assert view(merged.report) == view(await driver.status())  # the merged view is the whole truth

    # a change reports that replica alone; a removal names it in ``gone``
    before = merged.revision
    await driver.ensure_replica(_sim_replica(next_id, "n0"))
    added = await driver.status(before)
    assert [r.id for r in added.replicas] == [f"web-v1-{next_id}"] and added.gone == []
    await driver.remove_replica(f"web-v1-{next_id}")
    removed = await driver.status(added.revision)
    assert removed.replicas == [] and removed.gone == [f"web-v1-{next_id}"]

    # unknown revisions get the whole report: garbage, another driver's, one from the future
    other = await SimProvider(clock=clock).open(_sim_spec())
    for unknown in ["nonsense", (await other.status()).revision, f"{before.partition(':')[0]}:999999999"]:
        full = await driver.status(unknown)
        assert full.full and view(full) == view(await driver.status())


async def test_a_local_agent_reports_only_changes_since_a_revision(local: LocalHarness) -> None:
    driver = await local.driver()
    merged = MergedReport()
    first = await driver.status()
    assert first.full and first.revision is not None
    merged.merge(first)
    quiet = await driver.status(first.revision)
    assert not quiet.full and (quiet.replicas, quiet.nodes, quiet.gone) == ([], [], [])

    await driver.ensure_replica(local.replica("r1", node="n1"))

    async def running() -> ClusterReport | None:
        delta = await driver.status(merged.revision)
        merged.merge(delta)
        assert merged.report is not None
        phases = {r.id: r.phase for r in merged.report.replicas}
        return merged.report if phases.get("r1") is ReplicaPhase.RUNNING else None

    seen = await eventually(running, within=30.0)
    assert view(seen) == view(await driver.status())

    await driver.remove_replica("r1")

    async def gone() -> bool | None:
        delta = await driver.status(merged.revision)
        merged.merge(delta)
        assert merged.report is not None
        return True if "r1" in delta.gone or not merged.report.replicas else None

    await eventually(gone, within=30.0)
    assert merged.report is not None and view(merged.report) == view(await driver.status())

    unknown = await driver.status("from-an-earlier-agent:3")
    assert unknown.full and view(unknown) == view(await driver.status())

    # a revision is bounded: an overlong one is refused with a JSON error naming the parameter, and changes nothing
    endpoint = read_agent_endpoint(local.launcher.state_dir("edge-a") / AGENT_FILE)
    assert endpoint is not None
    async with httpx.AsyncClient(base_url=endpoint.url, trust_env=False) as client:
        response = await client.get(
            "/v1/status", params={"since": "x" * 201}, headers={"Authorization": f"Bearer {endpoint.token}"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["query", "since"]
