"""A synthetic fleet of simulated clusters: ``nemo cluster generate`` writes it as a clusters file.

The spread follows what a continuum looks like: few cloud clusters of large amd64 nodes (some with TEEs), more edge
sites, many IoT gateways of small arm64 boards; regions and countries with their grids' carbon intensity (yearly
averages of 2023, gCO2/kWh, rounded, after Ember and the IEA), tier prices with a regional factor, and power models
scaled to the nodes. The same seed always gives the same fleet, and the sizes are bounded before anything is built.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nemo_kernel.domain import ClusterSpec, DriverKind, Tier

MAX_CLUSTERS = 10_000
"""Most clusters one generated file holds."""

MAX_NODES_PER_CLUSTER = 5_000
"""Most nodes per generated cluster (Kubernetes' supported maximum, as ``ClusterSpec`` allows)."""

MAX_TOTAL_NODES = 200_000
"""Most nodes in all: clusters x nodes beyond this is refused before anything is built (memory stays bounded)."""


@dataclass(frozen=True, slots=True)
class Grid:
    """Where a cluster can be: its region, country, grid carbon intensity and price level."""

    region: str
    country: str
    carbon_intensity: float  # gCO2/kWh
    price_factor: float


GRIDS: tuple[Grid, ...] = (
    Grid("eu-north", "SE", 41, 1.00),
    Grid("eu-north", "NO", 30, 1.05),
    Grid("eu-north", "FI", 79, 1.00),
    Grid("eu-central", "DE", 381, 1.10),
    Grid("eu-central", "PL", 662, 0.90),
    Grid("eu-central", "AT", 158, 1.05),
    Grid("eu-central", "CZ", 449, 0.90),
    Grid("eu-west", "FR", 56, 1.05),
    Grid("eu-west", "NL", 328, 1.10),
    Grid("eu-west", "BE", 150, 1.05),
    Grid("eu-west", "IE", 282, 1.10),
    Grid("eu-west", "GB", 238, 1.15),
    Grid("eu-south", "ES", 174, 0.95),
    Grid("eu-south", "PT", 163, 0.95),
    Grid("eu-south", "IT", 331, 1.00),
    Grid("eu-south", "GR", 380, 0.90),
    Grid("us-east", "US", 369, 1.00),
    Grid("us-west", "US", 250, 1.05),
    Grid("ca-central", "CA", 128, 1.00),
    Grid("sa-east", "BR", 98, 1.20),
    Grid("ap-south", "IN", 713, 0.80),
    Grid("ap-northeast", "JP", 485, 1.20),
    Grid("ap-northeast", "KR", 436, 1.10),
    Grid("ap-southeast", "SG", 408, 1.25),
    Grid("ap-southeast", "AU", 530, 1.15),
    Grid("af-south", "ZA", 709, 1.10),
)


@dataclass(frozen=True, slots=True)
class TierShape:
    """What the clusters of one tier look like."""

    share: float  # of the fleet
    cpu: tuple[int, ...]  # node sizes, cores
    mib_per_cpu: tuple[int, ...]
    arm_share: float  # of the nodes
    cpu_hour_eur: float  # base price
    watts_per_cpu: tuple[float, float]  # idle, full load
    start_delay_s: tuple[float, float]  # a replica's start, from..to


TIERS: dict[Tier, TierShape] = {
    Tier.CLOUD: TierShape(0.05, (16, 32, 64, 96), (4096, 8192), 0.15, 0.040, (2.0, 6.0), (1.0, 3.0)),
    Tier.EDGE: TierShape(0.30, (4, 8, 16), (2048, 4096), 0.40, 0.055, (3.0, 10.0), (0.5, 2.0)),
    Tier.IOT: TierShape(0.65, (1, 2, 4), (512, 1024), 0.80, 0.020, (1.5, 4.0), (0.2, 1.0)),
}


def check_fleet_size(count: int, nodes: int) -> None:
    """Raise ``ValueError`` naming the parameter when the fleet asked for is empty or too large."""
    if not 1 <= count <= MAX_CLUSTERS:
        raise ValueError(f"count must be between 1 and {MAX_CLUSTERS:,} clusters, not {count:,}")
    if not 1 <= nodes <= MAX_NODES_PER_CLUSTER:
        raise ValueError(f"nodes must be between 1 and {MAX_NODES_PER_CLUSTER:,} per cluster, not {nodes:,}")
    if count * nodes > MAX_TOTAL_NODES:
        raise ValueError(f"count x nodes must be at most {MAX_TOTAL_NODES:,} nodes, not {count * nodes:,}")


def generate_fleet(count: int, nodes: int, seed: int) -> list[ClusterSpec]:
    """``count`` simulated clusters of ``nodes`` nodes each, the same for the same ``seed``."""
    check_fleet_size(count, nodes)
    rng = random.Random(seed)  # noqa: S311  (a reproducible fleet, not a secret)
    tiers = list(TIERS)
    weights = [TIERS[t].share for t in tiers]
    fleet = []
    for i in range(count):
        # the first clusters cover every tier, so that even a small fleet has somewhere for every workload
        tier = tiers[i] if i < len(tiers) else rng.choices(tiers, weights)[0]
        fleet.append(_cluster(rng, i, tier, nodes, seed))
    return fleet


def _cluster(rng: random.Random, i: int, tier: Tier, nodes: int, seed: int) -> ClusterSpec:
    shape = TIERS[tier]
    grid = rng.choice(GRIDS)
    name = f"{tier.value}-{grid.country.lower()}-{i:05d}"
    price = shape.cpu_hour_eur * grid.price_factor * rng.uniform(0.85, 1.15)
    low, high = shape.start_delay_s
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": DriverKind.SIM.value,
            "tier": tier.value,
            "region": grid.region,
            "country": grid.country,
            "labels": {"generated": "true", "site": f"site-{i:05d}"},
            "prices": {"cpu_hour_eur": round(price, 4), "gib_hour_eur": round(price / 8, 4)},
            "carbon_intensity": round(grid.carbon_intensity * rng.uniform(0.9, 1.1), 1),
            "sim": {"start_delay_s": round(rng.uniform(low, high), 2), "seed": rng.randrange(2**32)},
            "nodes": [_node(rng, f"{name}-n{j}", tier) for j in range(nodes)],
        }
    )


def _node(rng: random.Random, name: str, tier: Tier) -> dict[str, object]:
    shape = TIERS[tier]
    cpu = rng.choice(shape.cpu)
    arch = "arm64" if rng.random() < shape.arm_share else "amd64"
    runtimes = ["runc"]
    tee = "none"
    if tier is not Tier.IOT or rng.random() < 0.3:
        runtimes.append("runh")  # unikernels are common at the edge and in the cloud, rarer on IoT boards
    if tier is Tier.CLOUD and arch == "amd64":
        roll = rng.random()
        if roll < 0.2:
            tee, runtimes = "tdx", [*runtimes, "kata-qemu-tdx"]
        elif roll < 0.3:
            tee, runtimes = "sev-snp", [*runtimes, "kata-qemu-snp"]
    elif tier is Tier.EDGE and arch == "amd64" and rng.random() < 0.05:
        tee, runtimes = "sgx", [*runtimes, "enclave-cc"]
    idle_per_cpu, max_per_cpu = shape.watts_per_cpu
    idle = round(cpu * idle_per_cpu * rng.uniform(0.8, 1.2) * (0.6 if arch == "arm64" else 1.0), 1)
    return {
        "name": name,
        "architecture": arch,
        "cpu": float(cpu),
        "memory_mib": cpu * rng.choice(shape.mib_per_cpu),
        "runtimes": runtimes,
        "tee": tee,
        "power": {"idle_watts": idle, "max_watts": round(max(idle, cpu * max_per_cpu * rng.uniform(0.9, 1.1)), 1)},
    }
