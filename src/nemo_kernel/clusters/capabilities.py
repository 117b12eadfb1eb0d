"""Optional abilities of a cluster driver, each a small protocol checked with ``isinstance`` on the driver.

A driver implements :class:`~nemo_kernel.clusters.base.ClusterDriver`, and may implement any of these too;
the code that needs one asks for it (as kube-scheduler asks a score plugin for ``ScoreExtensions()``):

    if isinstance(driver, SupportsStateHandoff):
        state = await driver.export_state(replica_id)

and falls back (a plain restart elsewhere, no link emulation) or reports the ability missing otherwise.
``isinstance`` on a runtime-checkable protocol checks that the methods exist, not their signatures: mypy
checks those where a driver class is assigned to the protocol type (``_: type[SupportsCheckpoint] = SimDriver``).

Every method raises :class:`~nemo_kernel.clusters.base.ClusterUnreachable` when the cluster does not answer, and
:class:`~nemo_kernel.clusters.errors.ReplicaRejected` when it answers but cannot do it for that replica (unknown
id, a state it does not understand): the caller then falls back as if the ability were missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import Field

from nemo_kernel.clusters.base import ReplicaSpec
from nemo_kernel.domain import FaultSpec, Link, Model

__all__ = [
    "MAX_STATE_BYTES",
    "Link",  # the domain owns the model; re-exported here, where drivers meet it
    "ProbeEndpoints",
    "StateSnapshot",
    "SupportsCheckpoint",
    "SupportsFaultInjection",
    "SupportsLinkEmulation",
    "SupportsLinkProbes",
    "SupportsMetrics",
    "SupportsStateHandoff",
]
from nemo_kernel.metrics import Sample

MAX_STATE_BYTES = 64 * 1024 * 1024
"""The largest application state a hand-off carries (a bigger one is refused, never truncated)."""


class StateSnapshot(Model):
    """A replica's application state, or the changes to it since an earlier version, as opaque bytes.

    ``version`` is the application's own version of its state after these bytes; ``base`` is None for the whole
    state, or the version these bytes are a delta on top of.
    """

    data: bytes = Field(max_length=MAX_STATE_BYTES)
    version: int = Field(ge=0, le=2**63 - 1)
    base: int | None = Field(default=None, ge=0, le=2**63 - 1)


@runtime_checkable
class SupportsStateHandoff(Protocol):
    """The application's own state of a replica can be read out and handed to another replica (migration).

    The state is opaque bytes the application produces and consumes (a session table, a counter); NEMO only
    carries it, so a state exported by one driver kind can be imported by another. The sequence NEMO runs
    (``nemo_kernel.migration``) keeps one writer at a time: ``export_state`` while the source serves,
    ``import_state`` of it into the target (which takes no traffic yet), ``freeze_state(since=that version)`` on
    the source (it stops accepting writes and returns what changed since), ``import_state`` of that delta, then
    the traffic switch. ``thaw_state`` undoes a freeze when the move is rolled back.
    """

    async def export_state(self, replica_id: str) -> StateSnapshot:
        """The whole current state of a replica this cluster runs; the replica keeps running and serving."""

    async def freeze_state(self, replica_id: str, since: int | None) -> StateSnapshot:
        """Stop the replica accepting writes (it refuses them from now on, never losing one it acknowledged) and
        return what changed since version ``since`` (``base`` = ``since``), or the whole state for None.
        Freezing a frozen replica again returns the same answer."""

    async def import_state(self, replica_id: str, state: StateSnapshot) -> None:
        """Give ``state`` (whole, or a delta on top of ``state.base``) to a replica this cluster was told to run
        (``ensure_replica`` came first). Returns once the replica holds it. Importing the same snapshot twice
        is harmless. The control plane sends it no traffic until the hand-off is complete."""

    async def thaw_state(self, replica_id: str) -> None:
        """Let a frozen replica accept writes again (a rolled-back move); harmless on a replica not frozen."""


@runtime_checkable
class SupportsCheckpoint(Protocol):
    """A whole replica (memory, open files) can be frozen into an image and started again from it.

    Unlike a state hand-off this needs nothing from the application; an image is only good for a cluster of the
    same driver kind and architecture.
    """

    async def checkpoint(self, replica_id: str) -> bytes:
        """An image of a replica this cluster runs; the replica keeps running."""

    async def restore(self, spec: ReplicaSpec, image: bytes) -> None:
        """Like ``ensure_replica``, but the replica starts from ``image`` instead of from its command.

        Idempotent: a replica ``spec.id`` already running is left as it is.
        """


@runtime_checkable
class SupportsLinkEmulation(Protocol):
    """The cluster can shape the network between itself and a peer (a simulated continuum, a testbed).

    ``peer`` is ``controlplane`` (:data:`~nemo_kernel.domain.CONTROL_PLANE_LINK`) for the link the control plane
    and the gateway reach the cluster's replicas through, or a peer cluster's name.
    """

    async def set_link(self, peer: str, link: Link | None) -> None:
        """Shape the traffic between this cluster and cluster ``peer`` as ``link`` says; None removes the shaping.

        Level-based like the rest of the driver: setting the same link again changes nothing.
        """


class ProbeEndpoints(Model):
    """Where a cluster answers link probes (UDP echo, ``host:port``)."""

    controlplane: str = Field(description="behind the cluster's control-plane link: what the control plane probes")
    direct: str = Field(description="unshaped: what peers probe through their own link to this cluster")


@runtime_checkable
class SupportsLinkProbes(Protocol):
    """The cluster answers link probes, and probes its peers through its own emulated links to them.

    A probe is one UDP datagram echoed back (``clusters.links``): its round trip, or None when it was lost.
    """

    async def probe_endpoints(self) -> ProbeEndpoints:
        """Where this cluster answers probes."""

    async def probe_peer(self, peer: str, address: str, count: int) -> list[float | None]:
        """Send ``count`` probes to ``address`` (a peer's :attr:`ProbeEndpoints.direct`) through this cluster's
        link to ``peer``; the round trips in seconds, None for each probe lost."""


@runtime_checkable
class SupportsMetrics(Protocol):
    """The cluster reports time series of its replicas and nodes (usage, power, the workloads' own series)."""

    async def scrape(self) -> Sequence[Sample]:
        """The cluster's current samples: ``nemo_replica_*`` and ``nemo_node_*`` series (``metrics.names``) labelled
        with ``replica``, ``workload``, ``namespace`` and ``node`` where they apply, plus the series the workloads
        expose themselves. The caller adds ``cluster``, ``tier`` and ``region``. A replica whose own series cannot be
        read is left out and counted in ``nemo_scrape_errors_total``; it never fails the scrape."""


@runtime_checkable
class SupportsFaultInjection(Protocol):
    """The cluster can be made to fail on purpose (``nemo cluster fault``): down, a node down, partitioned, slow.

    The orchestrator checks the request (the cluster and node exist, the numbers are bounded) and records the
    fault's start and end as events; the driver only makes the cluster behave so.
    """

    async def inject_fault(self, fault: FaultSpec) -> None:
        """Start ``fault`` now; it ends by itself ``fault.for_s`` seconds later, kept by what runs the cluster, so
        that a control plane stopping meanwhile never leaves a cluster broken for ever. A fault of the same kind
        (and node) replaces the one in progress. Works while the cluster is down or partitioned (it is how the
        cluster is told); raises :class:`~nemo_kernel.clusters.errors.ReplicaRejected` for a kind it cannot do."""
