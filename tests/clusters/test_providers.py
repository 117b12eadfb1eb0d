"""Driver providers: the registry opens each driver kind through its provider, imported on first use; the local
provider starts, revives and forgets agents; optional driver capabilities are detected with ``isinstance``."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from local_support import LocalHarness, cluster_spec, eventually
from tests.orchestrator.fakes import MemoryDriver, MemoryProvider

from nemo_kernel.clusters import (
    ClusterUnreachable,
    DriverProviders,
    DriverUnavailable,
    ReplicaRejected,
    ReplicaSpec,
    StateSnapshot,
    SupportsAgentPid,
    SupportsCheckpoint,
    SupportsFaultInjection,
    SupportsLinkEmulation,
    SupportsLinkProbes,
    SupportsStateHandoff,
)
from nemo_kernel.clusters.local import LocalClusterDriver, LocalProvider
from nemo_kernel.clusters.registry import _PROVIDERS
from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.config import Settings
from nemo_kernel.domain import DriverKind, FaultSpec


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, driver_timeout=2.0, replica_user="nobody")


# -- the registry ---------------------------------------------------------------------------------------------------


def test_the_local_kind_opens_through_the_local_provider_made_from_the_settings(tmp_path: Path) -> None:
    providers = DriverProviders(_settings(tmp_path))

    provider = providers.for_kind(DriverKind.LOCAL)

    assert isinstance(provider, LocalProvider)
    assert providers.for_kind(DriverKind.LOCAL) is provider  # one provider per kind
    assert provider.launcher.state_root == tmp_path / "clusters"
    assert provider.launcher.replica_user == "nobody"
    assert provider.launcher.request_timeout == 2.0
    assert isinstance(provider, SupportsAgentPid)


def test_the_sim_kind_opens_through_the_sim_provider(tmp_path: Path) -> None:
    providers = DriverProviders(_settings(tmp_path))

    provider = providers.for_kind(DriverKind.SIM)

    assert isinstance(provider, SimProvider)
    assert providers.for_kind(DriverKind.SIM) is provider  # one simulation for every sim cluster


def test_a_kind_without_provider_is_unavailable(tmp_path: Path) -> None:
    providers = DriverProviders(_settings(tmp_path))

    with pytest.raises(DriverUnavailable) as raised:
        providers.for_kind(DriverKind.KUBERNETES)

    assert raised.value.kind is DriverKind.KUBERNETES
    assert str(raised.value) == "driver kubernetes is not available: no provider is registered for it"


class BrokenProvider(MemoryProvider):
    """A provider that cannot start (a driver missing its configuration, say)."""

    def __init__(self, settings: Settings) -> None:
        raise RuntimeError("no kubeconfig at ~/.kube/config")


def test_a_provider_that_cannot_start_makes_only_its_kind_unavailable(tmp_path: Path) -> None:
    registry = {
        DriverKind.LOCAL: "nemo_kernel.clusters.local:LocalProvider",
        DriverKind.KUBERNETES: f"{__name__}:BrokenProvider",
    }
    providers = DriverProviders(_settings(tmp_path), registry=registry)

    for _ in range(2):  # the second time from what was remembered, without trying again
        with pytest.raises(DriverUnavailable) as raised:
            providers.for_kind(DriverKind.KUBERNETES)
        assert "BrokenProvider cannot start: no kubeconfig at ~/.kube/config" in str(raised.value)
    assert isinstance(providers.for_kind(DriverKind.LOCAL), LocalProvider)


@pytest.mark.parametrize("kind", sorted(_PROVIDERS))
def test_every_registered_provider_loads(kind: DriverKind) -> None:
    # The registry names providers by string: a typo would only show when a cluster of that kind first opens.
    module, _, attribute = _PROVIDERS[kind].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


async def test_a_provider_passed_in_serves_its_kind_and_is_closed_with_the_others(tmp_path: Path) -> None:
    memory = MemoryProvider()
    providers = DriverProviders(_settings(tmp_path), {DriverKind.SIM: memory, DriverKind.LOCAL: MemoryProvider()})

    assert providers.for_kind(DriverKind.SIM) is memory
    assert not isinstance(providers.for_kind(DriverKind.LOCAL), LocalProvider)  # passed in beats the registry
    await providers.close()
    assert memory.closed


def test_drivers_are_imported_only_when_a_cluster_of_their_kind_needs_one(tmp_path: Path) -> None:
    # A control plane with no local cluster never loads the local driver (nor, later, a Kubernetes client).
    script = (
        "import sys\n"
        "from nemo_kernel.orchestrator import ControlPlane\n"
        "from nemo_kernel.clusters import DriverProviders\n"
        "from nemo_kernel.config import Settings\n"
        "from nemo_kernel.domain import DriverKind\n"
        "print('nemo_kernel.clusters.local' in sys.modules)\n"
        f"DriverProviders(Settings(data_dir={str(tmp_path)!r})).for_kind(DriverKind.LOCAL)\n"
        "print('nemo_kernel.clusters.local' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "True"]


# -- the local provider ---------------------------------------------------------------------------------------------


async def test_the_local_provider_opens_revives_and_forgets_a_cluster(tmp_path: Path, local: LocalHarness) -> None:
    provider = LocalProvider(_settings(tmp_path))
    spec = cluster_spec("edge-p")
    assert provider.launcher.state_root == local.launcher.state_root  # the harness kills what is left

    driver = await provider.open(spec)
    local.drivers.append(driver)
    assert [n.name for n in (await driver.status()).nodes] == ["n1", "n2"]
    agent = provider.pid_of("edge-p")
    assert agent is not None

    async def agent_gone() -> bool:
        return provider.pid_of("edge-p") is None

    os.kill(agent, signal.SIGKILL)
    await eventually(agent_gone, 10)
    fresh = await provider.revive(spec)
    assert isinstance(fresh, LocalClusterDriver)
    local.drivers.append(fresh)
    assert (await fresh.status()).cluster == "edge-p"
    assert provider.pid_of("edge-p") not in (None, agent)

    await provider.forget("edge-p")
    assert provider.pid_of("edge-p") is None
    assert not (tmp_path / "clusters" / "edge-p").exists()


async def test_a_partitioned_local_cluster_is_silent_until_its_time_is_up_even_across_a_restart(
    tmp_path: Path, local: LocalHarness
) -> None:
    provider = LocalProvider(_settings(tmp_path))
    spec = cluster_spec("edge-f")
    driver = await provider.open(spec)
    local.drivers.append(driver)
    agent = provider.pid_of("edge-f")
    assert isinstance(driver, SupportsFaultInjection)
    with pytest.raises(ReplicaRejected):  # only a partition can be done with processes
        await driver.inject_fault(FaultSpec(kind="node_down", node="n1", for_s=5))

    await driver.inject_fault(FaultSpec(kind="partition", for_s=10))  # longer than the two timeouts below
    with pytest.raises(ClusterUnreachable):
        await driver.status()
    with pytest.raises(ClusterUnreachable):  # within its time: the stopped agent is neither continued nor replaced
        await provider.revive(spec)

    # a new control plane (a new provider over the same state) continues the agent once the time is up
    restarted = LocalProvider(_settings(tmp_path))

    async def answering() -> LocalClusterDriver | None:
        try:
            return await restarted.open(spec)
        except ClusterUnreachable:
            return None

    fresh = await eventually(answering, 30)
    local.drivers.append(fresh)
    assert (await fresh.status()).cluster == "edge-f"
    assert restarted.pid_of("edge-f") == agent  # the same agent, continued, not replaced


async def test_closing_the_local_provider_stops_agents_only(tmp_path: Path, local: LocalHarness) -> None:
    provider = LocalProvider(_settings(tmp_path))
    driver = await provider.open(cluster_spec("edge-q"))
    local.drivers.append(driver)

    await provider.close()

    assert provider.pid_of("edge-q") is None
    assert (tmp_path / "clusters" / "edge-q").is_dir()  # its state stays, for the next start to adopt


# -- optional capabilities ------------------------------------------------------------------------------------------


@dataclass
class HandoffDriver(MemoryDriver):
    """A memory cluster whose replicas hand their state over."""

    states: dict[str, StateSnapshot] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)

    async def export_state(self, replica_id: str) -> StateSnapshot:
        return self.states.get(replica_id, StateSnapshot(data=b"", version=0))

    async def freeze_state(self, replica_id: str, since: int | None) -> StateSnapshot:
        self.frozen.add(replica_id)
        return await self.export_state(replica_id)

    async def import_state(self, replica_id: str, state: StateSnapshot) -> None:
        self.states[replica_id] = state

    async def thaw_state(self, replica_id: str) -> None:
        self.frozen.discard(replica_id)


@dataclass
class CheckpointDriver(MemoryDriver):
    """A memory cluster whose replicas can be frozen and started again from the image."""

    async def checkpoint(self, replica_id: str) -> bytes:
        return self.replicas[replica_id].model_dump_json().encode()

    async def restore(self, spec: ReplicaSpec, image: bytes) -> None:
        await self.ensure_replica(spec)


CAPABILITIES = (SupportsStateHandoff, SupportsCheckpoint, SupportsLinkEmulation, SupportsLinkProbes)


@pytest.mark.parametrize(
    ("driver_class", "capabilities"),
    [
        (MemoryDriver, [SupportsLinkEmulation]),  # the in-test driver emulates links (tests/orchestrator/fakes.py)
        (HandoffDriver, [SupportsStateHandoff, SupportsLinkEmulation]),
        (CheckpointDriver, [SupportsCheckpoint, SupportsLinkEmulation]),
    ],
)
def test_a_driver_has_the_capabilities_it_implements_and_no_other(driver_class: type, capabilities: list[type]) -> None:
    driver = driver_class(cluster_spec())

    assert [c for c in CAPABILITIES if isinstance(driver, c)] == capabilities


async def test_the_local_driver_hands_state_over_emulates_and_probes_links_and_nothing_else() -> None:
    local = LocalClusterDriver("http://127.0.0.1:9", "token")

    assert [c for c in CAPABILITIES if isinstance(local, c)] == [
        SupportsStateHandoff,
        SupportsLinkEmulation,
        SupportsLinkProbes,
    ]
    await local.close()
