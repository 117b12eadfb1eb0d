"""Benchmark of the decision engine: one decision over 1,000 clusters x 5 nodes, against a small baseline.

Run from the repository root::

    .venv/bin/python benchmarks/bench_decision.py            # prints a markdown table
    .venv/bin/python benchmarks/bench_decision.py --write    # also appends it to benchmarks/RESULTS.md

The baseline (10 clusters) is measured in the same run, so the ratio shows how time grows with the inventory
independent of the machine: linear scaling gives a ratio near the cluster ratio (100x), or below it while fixed
per-decision costs still matter at the small size.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nemo_kernel.domain import DeploymentSpec, PlacementConstraints, PowerModel, Prices, Resources, TeeType, Tier
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine, NodeCandidate

RESULTS = Path(__file__).with_name("RESULTS.md")
NODES_PER_CLUSTER = 5
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL", "SE", "GR", "PT", "AT")
TIERS = (Tier.CLOUD, Tier.EDGE, Tier.IOT)


def inventory(clusters: int, seed: int = 7) -> list[ClusterCandidate]:
    """A synthetic continuum: mixed tiers, countries, prices, grid intensity, architectures, runtimes, load."""
    rng = random.Random(seed)
    result = []
    for c in range(clusters):
        tier = TIERS[c % len(TIERS)]
        nodes = []
        for n in range(NODES_PER_CLUSTER):
            cpu = float(rng.choice((2, 4, 8, 16, 32)))
            memory = int(cpu * 2048)
            runtimes = ("runc", "kata-qemu-tdx") if n == 0 else ("runc", "runh") if n == 1 else ("runc",)
            nodes.append(
                NodeCandidate(
                    name=f"c{c:04d}-n{n}",
                    cpu=cpu,
                    memory_mib=memory,
                    architecture="arm64" if tier is Tier.IOT else "amd64",
                    runtimes=runtimes,
                    tee=TeeType.TDX if n == 0 else TeeType.NONE,
                    labels={"zone": f"z{n % 3}"},
                    power=PowerModel(idle_watts=rng.uniform(20, 100), max_watts=rng.uniform(150, 400)),
                    ready=rng.random() > 0.02,
                    allocated_cpu=round(cpu * rng.uniform(0.0, 0.9), 2),
                    allocated_memory_mib=int(memory * rng.uniform(0.0, 0.9)),
                    hosted_replicas_of_workload=1 if rng.random() < 0.01 else 0,
                )
            )
        result.append(
            ClusterCandidate(
                name=f"c{c:04d}",
                tier=tier,
                region=f"r{c % 7}",
                country=COUNTRIES[c % len(COUNTRIES)],
                prices=Prices(cpu_hour_eur=rng.uniform(0.01, 0.06), gib_hour_eur=rng.uniform(0.001, 0.008)),
                carbon_intensity=rng.uniform(20, 700),
                ready=rng.random() > 0.01,
                cordoned=rng.random() < 0.01,
                nodes=nodes,
            )
        )
    return result


SCENARIOS: dict[str, DeploymentSpec] = {
    # Worst case for the engine: no constraint, so nearly every node is scored.
    "unconstrained": DeploymentSpec(command=["app"], resources=Resources(cpu=0.5, memory_mib=512)),
    # Typical: data residency and tier cut most clusters before any node is looked at.
    "residency DE/FR, cloud+edge": DeploymentSpec(
        command=["app"],
        resources=Resources(cpu=0.5, memory_mib=512),
        placement=PlacementConstraints(countries=["DE", "FR"], tiers=[Tier.CLOUD, Tier.EDGE]),
    ),
}


def timed_ms(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, fastest) wall time of ``run`` in milliseconds, after one warm-up call.

    The fastest run is shown too because the machine is shared: the gap to the median is other load.
    """
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def main() -> None:
    """Measure, print the table, optionally append it to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--baseline-clusters", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    engine = DecisionEngine({"cost": 1.0, "carbon": 1.0, "balance": 1.0})
    big, small = inventory(args.clusters), inventory(args.baseline_clusters)
    indexes = list(range(args.replicas))
    cluster_ratio = args.clusters / args.baseline_clusters
    lines = [
        f"| scenario | replicas | {args.baseline_clusters} clusters (ms) | {args.clusters} clusters (ms, fastest) "
        f"| ratio (clusters x{cluster_ratio:g}) | placed |",
        "|---|---|---|---|---|---|",
    ]
    for label, spec in SCENARIOS.items():
        for replicas in sorted({args.replicas, 100}):
            indexes = list(range(replicas))

            def decide_big(spec: DeploymentSpec = spec, indexes: list[int] = indexes) -> object:
                return engine.decide("bench", "web", 1, spec, indexes, big)

            def decide_small(spec: DeploymentSpec = spec, indexes: list[int] = indexes) -> object:
                return engine.decide("bench", "web", 1, spec, indexes, small)

            base, _ = timed_ms(decide_small, args.repeat)
            full, fastest = timed_ms(decide_big, args.repeat)
            decision = engine.decide("bench", "web", 1, spec, indexes, big)
            lines.append(
                f"| {label} | {replicas} | {base:.3f} | {full:.2f} ({fastest:.2f}) | {full / base:.0f}x "
                f"| {len(decision.assignments)}/{replicas} ({decision.outcome}) |"
            )
    table = "\n".join(lines)
    command = (
        f"python benchmarks/bench_decision.py --clusters {args.clusters} "
        f"--baseline-clusters {args.baseline_clusters} --replicas {args.replicas} --repeat {args.repeat}"
    )
    print(table)
    if args.write:
        header = "# Benchmark results\n\nFigures appended by the scripts in `benchmarks/`; newest last.\n"
        existing = RESULTS.read_text() if RESULTS.exists() else header
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        section = (
            f"\n## Decision engine: one decision, {args.clusters} clusters x {NODES_PER_CLUSTER} nodes ({stamp})\n\n"
            f"Median of {args.repeat} runs, Python {platform.python_version()}, {platform.machine()}; "
            f"inventory building excluded, result model validation included.\n"
            f"Command: `{command}`\n\n{table}\n"
        )
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section)
        print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
