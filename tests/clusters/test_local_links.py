"""The local driver emulates a cluster's links in user space: a real agent, a real HTTP server as the replica, real
TCP connections through the agent's proxy and real UDP probes.

The emulator's draws are seeded by cluster and peer, and the statistical assertions keep a margin of several
standard deviations (400 probes at 5% loss: sd 1.1 points), so they hold on a loaded machine too.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from local_support import PYTHON, LocalHarness, cluster_spec, eventually

from nemo_kernel.clusters import ClusterUnreachable, ReplicaRejected
from nemo_kernel.clusters.links import probe, summarize
from nemo_kernel.clusters.local import LocalClusterDriver
from nemo_kernel.clusters.local.state import AGENT_FILE, read_agent_endpoint
from nemo_kernel.domain import HealthCheck, Link

BLOB = 2_000_000
# python's own HTTP server, serving a file it writes first: a real download of BLOB bytes
SERVER = ["sh", "-c", f'head -c {BLOB} /dev/zero > blob && exec {PYTHON} -m http.server --bind 127.0.0.1 "$PORT"']


async def _serving(local: LocalHarness, driver: LocalClusterDriver) -> str:
    """Run the file server as replica r1; its reported URL once it answers."""
    await driver.ensure_replica(local.replica("r1", command=SERVER, health=HealthCheck(http_path="/")))

    async def running() -> str | None:
        replicas = (await driver.status()).replicas
        return replicas[0].url if replicas and replicas[0].phase.value == "Running" else None

    return await eventually(running)


async def _url(driver: LocalClusterDriver) -> str:
    url = (await driver.status()).replicas[0].url
    assert url is not None
    return url


async def _round_trips(url: str, n: int) -> list[float]:
    took = []
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(n):
            started = time.monotonic()
            response = await client.get(f"{url}/")
            took.append(time.monotonic() - started)
            assert response.status_code == 200
    return took


async def _throughput_mbps(url: str) -> float:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        started = time.monotonic()
        response = await client.get(f"{url}/blob")
        took = time.monotonic() - started
    assert len(response.content) == BLOB
    return BLOB * 8 / took / 1e6


async def _probe_controlplane(driver: LocalClusterDriver, count: int) -> list[float | None]:
    host, _, port = (await driver.probe_endpoints()).controlplane.rpartition(":")
    return await probe(host, int(port), count)


async def test_requests_and_probes_cross_the_declared_link(local: LocalHarness) -> None:
    driver = await local.driver()
    await driver.set_link("controlplane", Link(latency_ms=50, jitter_ms=10, loss=0.05))
    proxied = await _serving(local, driver)

    # a request goes up and its answer comes down: two one-way delays of 50 +- 10 ms at least
    took = await _round_trips(proxied, 20)
    assert min(took) >= 0.080, took
    assert statistics.median(took) >= 0.100, took

    stats = summarize(await _probe_controlplane(driver, 400))
    assert stats.rtt is not None and stats.jitter is not None
    assert 0.090 <= stats.rtt <= 0.120, stats  # 2 x 50 ms, plus the machine's own time
    assert 0.003 <= stats.jitter <= 0.030, stats  # two uniform +-10 ms draws: mean |difference| about 9 ms
    assert 0.015 <= stats.loss <= 0.095, stats  # 5% of round trips, +- 3 sd

    # the direct echo (what peers probe through their own links) is not shaped
    host, _, port = (await driver.probe_endpoints()).direct.rpartition(":")
    direct = summarize(await probe(host, int(port), 50))
    assert direct.loss == 0 and direct.rtt is not None and direct.rtt < 0.020, direct


async def test_bandwidth_cap_runtime_change_and_removal(local: LocalHarness) -> None:
    driver = await local.driver()
    direct = await _serving(local, driver)
    direct_mbps = await _throughput_mbps(direct)

    await driver.set_link("controlplane", Link(bandwidth_mbps=8))
    await driver.set_link("controlplane", Link(bandwidth_mbps=8))  # the same link again changes nothing
    capped = await _url(driver)
    assert capped != direct
    capped_mbps = await _throughput_mbps(capped)
    assert capped_mbps <= 8 * 1.15, capped_mbps
    assert capped_mbps >= 8 * 0.5, capped_mbps

    # a change at runtime takes effect on the same proxy (and on connections already open)
    await driver.set_link("controlplane", Link(latency_ms=100))
    assert await _url(driver) == capped
    stats = summarize(await _probe_controlplane(driver, 20))
    assert stats.rtt is not None and stats.rtt >= 0.195, stats
    assert min(await _round_trips(capped, 3)) >= 0.195

    # removing the link gives the replica's own port back, at direct speed
    await driver.set_link("controlplane", None)
    await driver.set_link("controlplane", None)
    assert await _url(driver) == direct
    assert await _throughput_mbps(direct) > 3 * 8, direct_mbps
    fast = summarize(await _probe_controlplane(driver, 20))
    assert fast.rtt is not None and fast.rtt < 0.020, fast
    with pytest.raises(httpx.ConnectError):
        await _round_trips(capped, 1)  # the proxy is gone


async def test_a_cluster_probes_its_peer_through_its_own_link(local: LocalHarness) -> None:
    a = await local.driver(cluster_spec("edge-a"))
    b = await local.driver(cluster_spec("edge-b"))
    await a.set_link("edge-b", Link(latency_ms=30, jitter_ms=5))
    await b.set_link("controlplane", Link(latency_ms=200))  # not on the path between peers
    target = (await b.probe_endpoints()).direct

    stats = summarize(await a.probe_peer("edge-b", target, 50))
    assert stats.loss == 0 and stats.rtt is not None, stats
    assert 0.055 <= stats.rtt <= 0.085, stats

    back = summarize(await b.probe_peer("edge-a", (await a.probe_endpoints()).direct, 20))
    assert back.rtt is not None and back.rtt < 0.020, back  # b declared no link to a


async def test_the_agent_refuses_bad_link_requests(local: LocalHarness) -> None:
    driver = await local.driver()
    endpoint = read_agent_endpoint(local.launcher.state_root / "edge-a" / AGENT_FILE)
    assert endpoint is not None
    headers = {"Authorization": f"Bearer {endpoint.token}"}
    async with httpx.AsyncClient(base_url=endpoint.url, headers=headers, trust_env=False) as client:
        for body in ({"loss": 2}, {"latency_ms": 1e9}, {"jitter_ms": "NaN"}, {"latency_ms": 5, "x": 1}):
            refused = await client.put("/v1/links/controlplane", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert "error" in refused.json()
        refused = await client.put("/v1/links/Not_A_Label", json={})
        assert refused.status_code == 422
        bad_probes = [{"address": "10.0.0.1:53", "count": 1}, {"address": "127.0.0.1:53", "count": 10**9}]
        for body in bad_probes:
            refused = await client.post("/v1/links/edge-b/probe", json=body)
            assert refused.status_code == 422, (body, refused.text)
        assert (await client.get("/v1/links")).json()["links"] == {}
    with pytest.raises((ReplicaRejected, ClusterUnreachable)):
        await driver.probe_peer("edge-b", "127.0.0.1:99999", 1)
