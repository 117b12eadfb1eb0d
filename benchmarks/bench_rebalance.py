"""Benchmark of the rebalancer: cost and CO2 of a greedy placement against the rebalanced one, and solve time.

Run from the repository root::

    .venv/bin/python benchmarks/bench_rebalance.py            # 1,000 clusters x 10 nodes, 10,000 workloads
    .venv/bin/python benchmarks/bench_rebalance.py --write    # also appends the table to benchmarks/RESULTS.md

The fleet is ``clusters.fleet.generate_fleet(1000, 10, seed)``; the workloads (seeded) mix sizes, replicas (1-3),
data residency, tiers, ``optimize`` intents, stateful ones and spread constraints. The baseline places them one by
one with ``DecisionEngine`` (the engine's default weights), as the scheduler does, accounting each replica on its
node. The candidate is ``plan_rebalance`` over that placement with the default limits except ``max_moves`` (every
replica may move) and the time limit. Rounds alternate: a fresh greedy placement (timed), then the rebalance of it;
the fleet and workloads differ by seed per round, so each ratio compares the two on the same scenario.

The bound (``--bound``): the least CO2 any plan could reach at no extra cost on the same scenario. The same program
with carbon as the only criterion (every workload's ``optimize`` and ``weights`` dropped), no move cost, no move
limit and no hysteresis, priced over every node the filters accept until no column improves it (``Plan.bound``, its
LP relaxation: no plan, integral or not, goes below it), and that program's own integral plan (reachable).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from results import publish

from nemo_kernel.clusters.fleet import generate_fleet
from nemo_kernel.domain import (
    DeploymentSpec,
    Detail,
    Optimize,
    PlacementConstraints,
    Resources,
    SpreadBy,
    SpreadConstraint,
    Tier,
)
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine, NodeTable
from nemo_kernel.orchestrator.rebalance import (
    Plan,
    RebalanceLimits,
    RunningReplica,
    WorkloadPlacement,
    plan_rebalance,
)

EU = ("SE", "NO", "FI", "DE", "PL", "AT", "CZ", "FR", "NL", "BE", "IE", "ES", "PT", "IT", "GR")


def workloads(count: int, seed: int) -> list[tuple[str, DeploymentSpec]]:
    """``count`` seeded workloads, as users would write them."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        cpu = rng.choice((0.1, 0.25, 0.5, 1.0))
        placement: dict[str, object] = {}
        roll = rng.random()
        if roll < 0.3:
            placement["countries"] = sorted(rng.sample(EU, rng.randint(2, 6)))
        elif roll < 0.4:
            placement["tiers"] = [Tier.CLOUD, Tier.EDGE]
        if rng.random() < 0.2:
            placement["optimize"] = rng.choice(list(Optimize))
        replicas = rng.choice((1, 1, 2, 3))
        if replicas > 1 and rng.random() < 0.3:
            placement["spread"] = [SpreadConstraint(by=SpreadBy.CLUSTER, max=1)]
        spec = DeploymentSpec(
            command=["app"],
            replicas=replicas,
            stateful=rng.random() < 0.1,
            resources=Resources(cpu=cpu, memory_mib=int(cpu * rng.choice((512, 1024, 2048)))),
            placement=PlacementConstraints.model_validate(placement),
        )
        out.append((f"default/w{i:05d}", spec))
    return out


def greedy(table: NodeTable, specs: list[tuple[str, DeploymentSpec]]) -> tuple[NodeTable, list[WorkloadPlacement]]:
    """Place every workload with the decision engine, one after the other, as the scheduler would."""
    engine = DecisionEngine()
    placed = []
    for name, spec in specs:
        decision = engine.decide("default", name, 1, spec, list(range(spec.replicas)), table, detail=Detail.COMPACT)
        running = []
        for a in decision.assignments:
            table = table.with_allocated([(a.cluster, a.node)], spec.resources.cpu, spec.resources.memory_mib)
            running.append(RunningReplica(f"{name}#{a.index}", a.index, a.cluster, a.node))
        if running:
            placed.append(WorkloadPlacement(name, spec, tuple(running)))
    return table, placed


def one_round(clusters: int, nodes: int, count: int, seed: int, time_limit: float, bound: float) -> dict[str, float]:
    """Greedy then rebalanced, on the fleet and workloads of ``seed``; then the bound if ``bound`` (its time limit)."""
    fleet = [ClusterCandidate.from_spec(c) for c in generate_fleet(clusters, nodes, seed)]
    table = NodeTable.build(fleet)
    specs = workloads(count, seed)
    start = time.perf_counter()
    table, placed = greedy(table, specs)
    greedy_s = time.perf_counter() - start
    limits = RebalanceLimits(max_moves=10**6, time_limit_s=time_limit, min_saving_relative=0.0)
    plan = plan_rebalance(table, placed, limits, weights=DecisionEngine().weights)
    check(table, placed, plan)
    row = {
        "greedy_s": greedy_s,
        "solve_s": plan.solve_seconds,
        "eur_before": plan.before.eur_h,
        "eur_after": plan.after.eur_h,
        "co2_before": plan.before.gco2_h,
        "co2_after": plan.after.gco2_h,
        "moves": float(len(plan.moves)),
        "replicas": float(sum(len(w.replicas) for w in placed)),
        "time_limited": float(plan.status.value == "time_limited"),
        "start_stacked": float(sum(len({(r.cluster, r.node) for r in w.replicas}) < len(w.replicas) for w in placed)),
    }
    if bound:
        row.update(co2_bound(table, placed, bound))
    print(seed, row, flush=True)
    return row


def co2_bound(table: NodeTable, placed: list[WorkloadPlacement], time_limit: float) -> dict[str, float]:
    """The least gCO2/h at no extra cost: the LP bound and the integral plan of the carbon-only program."""
    carbon_only = [
        dataclasses.replace(
            w, spec=w.spec.model_copy(update={"placement": w.spec.placement.model_copy(update={"optimize": None,
                                                                                            "weights": {}})})
        )
        for w in placed
    ]  # fmt: skip
    limits = RebalanceLimits(max_moves=10**6, move_cost=0.0, time_limit_s=time_limit, min_saving_relative=0.0)
    plan = plan_rebalance(table, carbon_only, limits, weights={"carbon": 1.0})
    check(table, placed, plan)
    per_unit = plan.before.gco2_h / plan.before.objective  # the objective is gCO2/h in units of the mean replica
    return {
        "co2_bound_lp": plan.bound * per_unit if plan.bound is not None else float("nan"),
        "co2_bound_plan": plan.after.gco2_h,
        "eur_bound_plan": plan.after.eur_h,
        "bound_s": plan.solve_seconds,
        "bound_time_limited": float(plan.status.value == "time_limited"),
    }


def check(table: NodeTable, placed: list[WorkloadPlacement], plan: Plan) -> None:
    """Capacity holds after the plan (a benchmark of a wrong plan would measure nothing)."""
    spec = {w.workload: w.spec for w in placed}
    cpu, memory = table.allocated_cpu.copy(), table.allocated_memory_mib.copy()
    for m in plan.moves:
        s = spec[m.workload].resources
        src, dst = table.row(m.from_cluster, m.from_node), table.row(m.to_cluster, m.to_node)
        cpu[src] -= s.cpu
        memory[src] -= s.memory_mib
        cpu[dst] += s.cpu
        memory[dst] += s.memory_mib
    moved_to = Counter(table.row(m.to_cluster, m.to_node) for m in plan.moves)
    for row in moved_to:
        assert cpu[row] <= table.cpu[row] + 1e-6 and memory[row] <= table.memory_mib[row], row


def main() -> None:
    """Parse the arguments, run the rounds, print (and optionally record) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--bound", type=float, default=0.0, help="time limit of the bound's solve (0: no bound)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = [
        one_round(args.clusters, args.nodes, args.workloads, seed, args.time_limit, args.bound)
        for seed in range(1, args.rounds + 1)
    ]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def bound_ratio(key: str) -> float:
        return statistics.median(r[key] / r["co2_before"] for r in rows)

    co2 = statistics.median(r["co2_after"] / r["co2_before"] for r in rows)
    eur = statistics.median(r["eur_after"] / r["eur_before"] for r in rows)
    load = os.getloadavg()
    command = "benchmarks/bench_rebalance.py " + " ".join(sys.argv[1:])
    table = "\n".join(
        [
            f"## Rebalancer: greedy placement vs the rebalanced plan ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"Python {platform.python_version()}, "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
            "",
            f"`{command.strip()}`: {args.clusters} clusters x {args.nodes} nodes, {args.workloads} workloads "
            f"({median('replicas'):.0f} replicas), {args.rounds} seeds, medians.",
            "",
            "| | greedy (DecisionEngine, one by one) | rebalanced | ratio |",
            "|---|---|---|---|",
            f"| EUR/h | {median('eur_before'):.2f} | {median('eur_after'):.2f} | {eur:.3f} |",
            f"| gCO2/h | {median('co2_before'):.0f} | {median('co2_after'):.0f} | {co2:.3f} |",
            f"| time (s) | {median('greedy_s'):.1f} (placing) | {median('solve_s'):.1f} (plan) | |",
            f"| moves | | {median('moves'):.0f} | |",
            f"| time-limited solves | | {sum(r['time_limited'] for r in rows):.0f} of {len(rows)} | |",
            *(
                [
                    f"| gCO2/h, lower bound (carbon only, no move cost: LP optimum, or Lagrangian if priced short) | | "
                    f"{median('co2_bound_lp'):.0f} | {bound_ratio('co2_bound_lp'):.3f} |",
                    f"| gCO2/h, that program's integral plan | | {median('co2_bound_plan'):.0f} | "
                    f"{bound_ratio('co2_bound_plan'):.3f} |",
                    f"| time (s), bound | | {median('bound_s'):.1f} "
                    f"({sum(r['bound_time_limited'] for r in rows):.0f} of {len(rows)} time-limited) | |",
                ]
                if args.bound
                else []
            ),
            "",
        ]
    )
    publish(table, append=args.write)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
