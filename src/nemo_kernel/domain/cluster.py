"""Clusters and nodes of the continuum (cloud, edge, IoT)."""

from __future__ import annotations

import itertools
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from nemo_kernel.domain.common import Labels, Lax, Model, Name, OneLine, Spec, is_dns_label
from nemo_kernel.domain.countries import CountryCode

Region = Annotated[OneLine, Field(min_length=1, max_length=64)]
"""Where a cluster is, as its owner names it (``eu-south``); what placement and users' locations refer to."""

Architecture = Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
"""A CPU architecture as Go and Kubernetes name it: amd64, arm64, riscv64."""

MAX_NODE_CPU = 100_000
"""Cores of the largest node NEMO accepts (far beyond any real machine; bounds the arithmetic)."""

MAX_MEMORY_MIB = 2**40
"""MiB of the largest node NEMO accepts (1 EiB)."""

MAX_WATTS = 1_000_000.0
MAX_PRICE_EUR = 1_000_000.0
MAX_CARBON_INTENSITY = 10_000.0
"""gCO2/kWh; the dirtiest grids are near 1,000."""


class Tier(StrEnum):
    """Where in the continuum a cluster sits."""

    CLOUD = "cloud"
    EDGE = "edge"
    IOT = "iot"


class DriverKind(StrEnum):
    """How the control plane talks to a cluster."""

    LOCAL = "local"
    SIM = "sim"
    KUBERNETES = "kubernetes"


class TeeType(StrEnum):
    """Trusted execution environment a node offers."""

    NONE = "none"
    TDX = "tdx"
    SEV_SNP = "sev-snp"
    SEV = "sev"
    SGX = "sgx"


class ClusterPhase(StrEnum):
    """Health of a cluster as seen by the resource manager."""

    PENDING = "Pending"  # registered, never heard from
    READY = "Ready"
    NOT_READY = "NotReady"  # stopped answering heartbeats
    # its stored spec is refused by this version (stored by an older NEMO, or the row edited): not managed (no
    # heartbeat, no placement, no move) and its replicas left as they are, until it is removed and registered again
    UNMANAGED = "Unmanaged"


MAX_POWER_POINTS = 101
"""Points of a piecewise power table (one per percent of utilisation is already finer than any measurement)."""


class PowerPoint(Spec):
    """One measured point of a node's power curve: the watts it draws at a CPU utilisation (0 to 1)."""

    utilisation: float = Field(ge=0, le=1)
    watts: float = Field(ge=0, le=MAX_WATTS)


class PowerModel(Spec):
    """A node's power draw by CPU utilisation: linear from ``idle_watts`` to ``max_watts``, or, when ``table`` is
    given, interpolated between its points (SPECpower-style measurements); ``table`` then wins over the two."""

    idle_watts: float = Field(default=50.0, ge=0, le=MAX_WATTS)
    max_watts: float = Field(default=200.0, ge=0, le=MAX_WATTS)
    table: list[PowerPoint] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_POWER_POINTS,
        description="utilisation -> watts points, utilisation strictly increasing; flat beyond the first and last",
    )

    @model_validator(mode="after")
    def _max_above_idle(self) -> PowerModel:
        if self.max_watts < self.idle_watts:
            raise ValueError("max_watts must be at least idle_watts")
        return self

    @model_validator(mode="after")
    def _table_increasing(self) -> PowerModel:
        for before, after in itertools.pairwise(self.table or []):
            if after.utilisation <= before.utilisation:
                raise ValueError(
                    f"table: utilisation must be strictly increasing "
                    f"({after.utilisation:g} after {before.utilisation:g})"
                )
        return self


class CarbonIntensitySource(Spec):
    """A time series of the grid's carbon intensity, used instead of the constant ``carbon_intensity``.

    ``csv``: an absolute path to a file of ``timestamp,grams_per_kwh`` rows (ISO 8601 or unix seconds), read by the
    control plane only under a directory an admin allowed (``NEMO_CARBON_DATA_ROOTS``).
    """

    csv: str = Field(max_length=4095, pattern=r"^/[^\x00]*$", description="absolute path of the CSV file")


class Prices(Spec):
    """What running on a cluster costs."""

    cpu_hour_eur: float = Field(default=0.03, ge=0, le=MAX_PRICE_EUR, description="EUR per CPU-hour")
    gib_hour_eur: float = Field(default=0.004, ge=0, le=MAX_PRICE_EUR, description="EUR per GiB-hour of memory")


CONTROL_PLANE_LINK = "controlplane"
"""The key of a cluster's link to the control plane in :attr:`ClusterSpec.links` (other keys name peer clusters)."""

MAX_LINKS = 256
"""Links one cluster may declare (its control-plane link and its peers)."""

MAX_LINK_LATENCY_MS = 60_000.0
"""One minute: beyond any real network (a geostationary hop is about 300 ms)."""

MAX_LINK_BANDWIDTH_MBPS = 1_000_000.0
"""1 Tbit/s."""


class Link(Spec):
    """How the network between a cluster and one peer behaves, both directions (what a link emulator applies).

    ``latency_ms`` is added to each direction, so a round trip takes twice as long; ``jitter_ms`` is the spread
    of that delay (uniform in ``latency +- jitter``, never below zero); ``loss`` is the share of round trips that
    lose a packet (each direction drops with ``1 - sqrt(1 - loss)``); ``bandwidth_mbps`` caps each direction.
    """

    latency_ms: float = Field(default=0.0, ge=0, le=MAX_LINK_LATENCY_MS, description="one-way delay added, ms")
    jitter_ms: float = Field(default=0.0, ge=0, le=MAX_LINK_LATENCY_MS, description="spread of the delay, ms")
    loss: float = Field(default=0.0, ge=0, le=1, description="share of round trips losing a packet, 0..1")
    bandwidth_mbps: float | None = Field(
        default=None, gt=0, le=MAX_LINK_BANDWIDTH_MBPS, description="rate cap per direction, Mbit/s; null: none"
    )


def _check_link_keys(links: dict[str, Link]) -> dict[str, Link]:
    for key in links:
        if not is_dns_label(key):
            raise ValueError(f"link key {key!r} must be {CONTROL_PLANE_LINK!r} or a peer cluster's name (a DNS label)")
    return links


Links = Annotated[dict[str, Link], Field(max_length=MAX_LINKS), AfterValidator(_check_link_keys)]
"""A cluster's links: ``controlplane`` and peer cluster names -> :class:`Link`."""


class NodeSpec(Spec):
    """A node of a cluster (a virtual node for the local driver)."""

    name: Name
    architecture: Architecture = "amd64"
    cpu: float = Field(gt=0, le=MAX_NODE_CPU, description="CPU capacity in cores")
    memory_mib: int = Field(gt=0, le=MAX_MEMORY_MIB, description="memory capacity in MiB")
    runtimes: list[str] = Field(default_factory=lambda: ["runc"], min_length=1)
    tee: Annotated[TeeType, Lax] = TeeType.NONE
    labels: Labels = Field(default_factory=dict)
    power: PowerModel = Field(default_factory=PowerModel)


MAX_SIM_START_DELAY_S = 3600.0
"""Longest start delay a simulated cluster may take per replica (an hour: beyond any real image pull)."""


class SimSettings(Spec):
    """How a ``driver: sim`` cluster behaves (the simulated driver; other drivers refuse this section)."""

    start_delay_s: float = Field(
        default=1.0, ge=0, le=MAX_SIM_START_DELAY_S, description="seconds a replica takes from sent to Running"
    )
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="probability that a replica's start fails")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seeds failures and usage noise (deterministic)")


class ClusterSpec(Spec):
    """What a user registers: a cluster, where it is, what it costs and what it holds."""

    name: Name
    driver: Annotated[DriverKind, Lax] = DriverKind.LOCAL
    tier: Annotated[Tier, Lax]
    region: Region
    country: CountryCode = Field(description="ISO 3166-1 alpha-2 (or EU), for data residency")
    labels: Labels = Field(default_factory=dict)
    prices: Prices = Field(default_factory=Prices)
    carbon_intensity: float = Field(
        default=300.0, ge=0, le=MAX_CARBON_INTENSITY, description="grid carbon intensity, gCO2/kWh"
    )
    carbon_intensity_source: CarbonIntensitySource | None = Field(
        default=None, description="a time series of the intensity; the constant is used where it has no reading"
    )
    nodes: list[NodeSpec] = Field(min_length=1, max_length=5000)  # Kubernetes' supported maximum
    links: Links = Field(
        default_factory=dict,
        description=f"emulated network: {CONTROL_PLANE_LINK!r} (to the control plane) and peer cluster names",
    )
    sim: SimSettings | None = Field(default=None, description="behaviour of a simulated cluster (driver sim only)")

    @model_validator(mode="after")
    def _sim_only_for_sim(self) -> ClusterSpec:
        # a sim section on a real cluster would be silently ignored: refuse it so a typo in `driver` shows
        if self.sim is not None and self.driver is not DriverKind.SIM:
            raise ValueError("sim settings are only for clusters with driver sim")
        return self

    @model_validator(mode="after")
    def _unique_node_names(self) -> ClusterSpec:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"duplicate node name {node.name!r}")
            seen.add(node.name)
        return self

    @field_validator("links")
    @classmethod
    def _no_link_to_itself(cls, links: dict[str, Link], info: ValidationInfo) -> dict[str, Link]:
        name = info.data.get("name")
        if name in links:
            raise ValueError(f"a cluster has no link to itself ({name!r})")
        return links


class NodeStatus(Model):
    """A node as the resource manager sees it: its spec plus capacity accounting."""

    cluster: str
    spec: NodeSpec
    ready: bool
    allocated_cpu: float
    allocated_memory_mib: int
    replicas: int = Field(description="replicas placed on the node, whose requests its allocation holds")
    stopping: int = Field(
        default=0,
        description="replicas released from the node (moved, scaled down, deleted) that its cluster has not yet "
        "reported gone; they hold no capacity, but the node still runs them",
    )


class ClusterStatus(Model):
    """A cluster as the resource manager sees it."""

    name: str
    spec: ClusterSpec | None = Field(
        description="None when the stored spec no longer passes this version's checks (it was stored by an older "
        "NEMO): ``message`` says which field; the cluster is not managed (phase Unmanaged) until it is removed and "
        "registered again"
    )
    phase: ClusterPhase
    cordoned: bool
    last_heartbeat: datetime | None
    message: str = ""
    created_at: datetime
    sandbox: str | None = Field(
        default=None,
        description="how replicas are kept from the control plane's data (none, user, namespace); "
        "null until the control plane has heard from the cluster",
    )
