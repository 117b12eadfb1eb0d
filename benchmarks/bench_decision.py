"""Benchmark of the decision engine: decisions/s and p50/p99 at 1,000 clusters x 10 nodes, against today's engine.

Run from the repository root::

    .venv/bin/python benchmarks/bench_decision.py            # prints a markdown table
    .venv/bin/python benchmarks/bench_decision.py --write    # also appends it to benchmarks/RESULTS.md

Two engines in the same run, in alternating rounds so that other load on the machine hits both alike:

- ``reference``: ``ReferenceEngine``, the engine as it was before vectorising (one Python object per node,
  every node's verdict in the explanation), given the candidates as the scheduler gives them;
- ``vectorised``: ``DecisionEngine`` over a ``NodeTable`` kept between decisions (built once per inventory
  revision, the build time is reported apart), compact explanation (``Detail.COMPACT``); every decision on the
  same table, as for workloads decided before any is placed (or that fit nowhere);
- ``vectorised, placing``: the same, as the scheduler goes: the table advanced with ``with_allocated`` by the
  replicas placed (timed with the decision), so each decision sees a new allocation and recomputes what depends on
  it. Each round starts again from the kept table.

Each decision is timed alone; decisions/s is decisions over their summed time on one core. Result model
validation is included; building the inventory is not.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nemo_kernel.domain import (
    DeploymentSpec,
    Detail,
    PlacementConstraints,
    PowerModel,
    Prices,
    Resources,
    TeeType,
    Tier,
)
from nemo_kernel.orchestrator.decision import (
    ClusterCandidate,
    DecisionEngine,
    NodeCandidate,
    NodeTable,
    ReferenceEngine,
)

RESULTS = Path(__file__).with_name("RESULTS.md")
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL", "SE", "GR", "PT", "AT")
TIERS = (Tier.CLOUD, Tier.EDGE, Tier.IOT)


def inventory(clusters: int, nodes_per_cluster: int = 10, seed: int = 7) -> list[ClusterCandidate]:
    """A synthetic continuum: mixed tiers, countries, prices, grid intensity, architectures, runtimes, load."""
    rng = random.Random(seed)
    result = []
    for c in range(clusters):
        tier = TIERS[c % len(TIERS)]
        nodes = []
        for n in range(nodes_per_cluster):
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


def timed(run: Callable[[], object], count: int) -> tuple[list[float], list[float]]:
    """Wall and CPU time of ``count`` calls of ``run``, each alone, in milliseconds.

    CPU time (this process's) is shown too because the machine is shared: wall time includes waiting for a core.
    """
    wall, cpu = [], []
    for _ in range(count):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        cpu.append((time.process_time() - start_cpu) * 1000.0)
        wall.append((time.perf_counter() - start) * 1000.0)
    return wall, cpu


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    """Measure, print the table, optionally append it to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10, help="nodes per cluster")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each engine")
    parser.add_argument("--reference-decisions", type=int, default=10, help="per round and scenario")
    parser.add_argument("--decisions", type=int, default=1000, help="vectorised decisions per round and scenario")
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    weights = {"cost": 1.0, "carbon": 1.0, "balance": 1.0}
    reference, fast = ReferenceEngine(weights), DecisionEngine(weights)
    candidates = inventory(args.clusters, args.nodes)
    start = time.perf_counter()
    table = fast.table(candidates)
    build_ms = (time.perf_counter() - start) * 1000.0
    indexes = list(range(args.replicas))
    lines = [
        "| scenario | engine | decisions | decisions/s (wall) | p50 ms | p99 ms | CPU p50 ms | decisions/CPU-s "
        "| placed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    load_before = os.getloadavg()
    for label, spec in SCENARIOS.items():
        times: dict[str, list[float]] = {"reference": [], "vectorised": [], "vectorised, placing": []}
        cpu: dict[str, list[float]] = {name: [] for name in times}
        advanced = [table]

        def by_reference(spec: DeploymentSpec = spec) -> object:
            return reference.decide("bench", "web", 1, spec, indexes, candidates)

        def vectorised(spec: DeploymentSpec = spec) -> object:
            return fast.decide("bench", "web", 1, spec, indexes, table, detail=Detail.COMPACT)

        def placing(spec: DeploymentSpec = spec, advanced: list[NodeTable] = advanced) -> object:
            decision = fast.decide("bench", "web", 1, spec, indexes, advanced[0], detail=Detail.COMPACT)
            placed = [(a.cluster, a.node) for a in decision.assignments]
            advanced[0] = advanced[0].with_allocated(placed, spec.resources.cpu, spec.resources.memory_mib)
            return decision

        vectorised()  # warm-up: the table's per-requirement memos (runtimes chosen per runtime list)
        for _ in range(args.rounds):
            advanced[0] = table
            for engine, run, count in (
                ("reference", by_reference, args.reference_decisions),
                ("vectorised", vectorised, args.decisions),
                ("vectorised, placing", placing, args.decisions),
            ):
                wall, used = timed(run, count)
                times[engine] += wall
                cpu[engine] += used
        expected = reference.decide("bench", "web", 1, spec, indexes, candidates)
        got = fast.decide("bench", "web", 1, spec, indexes, table, detail=Detail.COMPACT)
        assert got.assignments == expected.assignments, "the engines disagree"
        for engine, measured in times.items():
            lines.append(
                f"| {label} | {engine} | {len(measured)} | {len(measured) / (sum(measured) / 1000.0):,.0f} "
                f"| {statistics.median(measured):.3f} | {percentile(measured, 0.99):.3f} "
                f"| {statistics.median(cpu[engine]):.3f} | {len(cpu[engine]) / (sum(cpu[engine]) / 1000.0):,.0f} "
                f"| {len(got.assignments)}/{args.replicas} ({got.outcome}) |"
            )
    load_after = os.getloadavg()
    table_text = "\n".join(lines)
    command = (
        f"python benchmarks/bench_decision.py --clusters {args.clusters} --nodes {args.nodes} "
        f"--replicas {args.replicas} --rounds {args.rounds} --reference-decisions {args.reference_decisions} "
        f"--decisions {args.decisions}"
    )
    note = (
        f"Node table built once in {build_ms:.0f} ms ({len(table)} nodes). Load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores."
    )
    print(table_text)
    print(note)
    if args.write:
        header = "# Benchmark results\n\nFigures appended by the scripts in `benchmarks/`; newest last.\n"
        existing = RESULTS.read_text() if RESULTS.exists() else header
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        section = (
            f"\n## Decision engine: vectorised against today's engine, {args.clusters} clusters x {args.nodes} nodes, "
            f"{args.replicas} replicas ({stamp})\n\n"
            f"Python {platform.python_version()}, {platform.machine()}; {args.rounds} alternating rounds. {note}\n"
            f"Command: `{command}`\n\n{table_text}\n"
        )
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section)
        print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
