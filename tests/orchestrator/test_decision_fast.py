"""The vectorised engine decides exactly as the reference engine on seeded random inventories and workloads.

The reference engine (``reference.ReferenceEngine``) is the plain statement of the rules; the fast one must give
the same assignments, scores, totals, reasons and summary, with every filter and criterion, including a
third-party criterion without a vectorised form, and with a node table kept between decisions.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ValidationError

from nemo_kernel.domain import (
    DeploymentSpec,
    Detail,
    Isolation,
    LatencyMatrix,
    NodeSpec,
    PlacementConstraints,
    PowerModel,
    Prices,
    Resources,
    TeeType,
    Tier,
)
from nemo_kernel.orchestrator.decision import (
    DEFAULT_CRITERIA,
    ClusterCandidate,
    DecisionEngine,
    NodeCandidate,
    NodeTable,
    ReferenceEngine,
    Requirements,
)
from nemo_kernel.orchestrator.decision.criteria import LoadColumns, NodeLoad, VectorCriterion, VectorLoadCriterion
from nemo_kernel.orchestrator.decision.decide import _best, _best_now

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REGIONS = ("eu-west", "eu-south", "eu-north", "us-east", "ap-south")
COUNTRIES = ("DE", "FR", "ES", "IT")
RUNTIMES = (("runc",), ("runc", "kata-qemu-tdx"), ("runh", "runc"), ("crun",), ("kata-qemu-snp",), ())
TEES = (TeeType.NONE, TeeType.NONE, TeeType.TDX, TeeType.SEV_SNP)


class ClusterIndex:
    """A third-party criterion without ``raw_many``: the engine must call ``raw`` per node and agree."""

    name: ClassVar[str] = "index"
    lower_is_better: ClassVar[bool] = False

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        return float(sum(map(ord, cluster.name)) % 7) + node.cpu / 10.0


CRITERIA = (*DEFAULT_CRITERIA, ClusterIndex())


def _random_power(rng: random.Random) -> PowerModel:
    """Linear mostly; a piecewise table (SPECpower-like, concave) now and then."""
    if rng.random() < 0.7:
        return PowerModel(idle_watts=rng.uniform(5, 100), max_watts=rng.uniform(100, 400))
    idle = rng.uniform(5, 100)
    points = [(0.0, idle), (0.3, idle + rng.uniform(20, 120)), (1.0, idle + rng.uniform(130, 300))]
    return PowerModel.model_validate({"table": [{"utilisation": u, "watts": w} for u, w in points]})


def random_inventory(rng: random.Random) -> list[ClusterCandidate]:
    clusters = []
    for c in range(rng.randint(0, 25)):
        nodes = []
        for n in range(rng.choice((0, 1, 2, 3, 5, 8))):
            cpu = float(rng.choice((0.5, 1, 2, 4, 8)))
            memory = rng.choice((512, 1024, 4096, 8192))
            nodes.append(
                NodeCandidate(
                    name=f"n{rng.randint(0, 99):02d}-{n}",
                    cpu=cpu,
                    memory_mib=memory,
                    architecture=rng.choice(("amd64", "amd64", "arm64")),
                    runtimes=rng.choice(RUNTIMES),
                    tee=rng.choice(TEES),
                    labels=rng.choice(({}, {"zone": "a"}, {"zone": "b", "gpu": "yes"})),
                    power=_random_power(rng),
                    ready=rng.random() > 0.1,
                    allocated_cpu=round(cpu * rng.choice((0.0, 0.0, 0.3, 0.9, 1.0)), 2),
                    allocated_memory_mib=int(memory * rng.choice((0.0, 0.5, 1.0))),
                    hosted_replicas_of_workload=rng.choice((0, 0, 0, 1, 2)),
                )
            )
        clusters.append(
            ClusterCandidate(
                name=f"c{c:02d}",
                tier=rng.choice(list(Tier)),
                region=rng.choice(REGIONS),
                country=rng.choice(COUNTRIES),
                prices=Prices(cpu_hour_eur=rng.choice((0.01, 0.02, 0.05)), gib_hour_eur=rng.uniform(0.001, 0.01)),
                carbon_intensity=rng.choice((50.0, 300.0, 700.0)),
                ready=rng.random() > 0.1,
                cordoned=rng.random() < 0.1,
                excluded_reason="drained" if rng.random() < 0.05 else None,
                nodes=nodes,
            )
        )
    rng.shuffle(clusters)  # the engines sort; the input order must not matter
    return clusters


def random_spec(rng: random.Random) -> DeploymentSpec:
    where: dict[str, Any] = {}
    if rng.random() < 0.3:
        where["tiers"] = rng.sample([t.value for t in Tier], rng.randint(1, 2))
    if rng.random() < 0.2:
        where["regions"] = rng.sample(REGIONS, 2)
    if rng.random() < 0.2:
        where["countries"] = rng.sample(COUNTRIES, 2)
    if rng.random() < 0.2:
        where["architectures"] = ["arm64"]
    if rng.random() < 0.15:
        where["node_labels"] = {"zone": "b"}
    if rng.random() < 0.1:
        where["clusters"] = [f"c{i:02d}" for i in rng.sample(range(25), 8)]
    if rng.random() < 0.15:
        where["tee"] = rng.choice(("any", "tdx"))
    if rng.random() < 0.4:
        where["users"] = [{"region": r, "weight": rng.uniform(0.5, 3)} for r in rng.sample(REGIONS, 2)]
        if rng.random() < 0.6:
            where["max_latency_ms"] = rng.choice((20.0, 60.0, 150.0))
    if rng.random() < 0.3:
        where["optimize"] = rng.choice(("cost", "carbon", "latency", "balanced"))
    if rng.random() < 0.3:
        where["weights"] = {"cost": rng.choice((0, 1, 5)), "balance": rng.choice((0, 2))}
    if rng.random() < 0.35:
        where["spread"] = [
            rng.choice(({"max": rng.choice((1, 2, 3))}, {"min": rng.choice((1, 2))}, {"min": 1, "max": 2})) | {"by": b}
            for b in rng.sample(("tier", "region", "cluster"), rng.randint(1, 2))
        ]
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            where["division"] = {"mode": "dynamic"}
        else:
            named = rng.sample(range(25), rng.randint(1, 6))
            where["division"] = {"mode": "static", "weights": {f"c{i:02d}": rng.choice((1, 2, 5)) for i in named}}
    return DeploymentSpec(
        command=["app"],
        replicas=rng.choice((1, 3, 10)),
        resources=Resources(cpu=rng.choice((0.1, 0.25, 0.5, 1.0)), memory_mib=rng.choice((64, 256, 1024))),
        isolation=rng.choice((Isolation.STANDARD, Isolation.STANDARD, Isolation.UNIKERNEL)),
        placement=PlacementConstraints.model_validate(where),
    )


MATRIX = LatencyMatrix.model_validate(
    {
        "same_region_ms": 2,
        "unknown_ms": 250,
        "regions": {
            "eu-west": {"eu-south": 25, "eu-north": 30, "us-east": 80},
            "eu-south": {"eu-north": 45},
            "us-east": {"ap-south": 210},
        },
    }
)


@pytest.mark.parametrize("seed", range(80))
def test_the_fast_engine_decides_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    weights = rng.choice((None, {"cost": 1.0, "carbon": 2.0, "balance": 1.0, "latency": 1.0, "index": 0.5}))
    fast = DecisionEngine(weights, criteria=CRITERIA, latency=MATRIX, clock=lambda: NOW)
    reference = ReferenceEngine(weights, criteria=CRITERIA, latency=MATRIX, clock=lambda: NOW)
    inventory = random_inventory(rng)
    table = NodeTable.build(inventory)
    for _ in range(4):
        spec = random_spec(rng)
        replicas = list(range(rng.choice((1, 3, 7, 20))))
        expected = reference.decide("ns", "web", 1, spec, replicas, inventory)

        full = fast.decide("ns", "web", 1, spec, replicas, inventory, detail=Detail.NODES)
        assert full == expected

        compact = fast.decide("ns", "web", 1, spec, replicas, table, detail=Detail.COMPACT)
        assert (compact.assignments, compact.outcome, compact.weights, compact.summary) == (
            expected.assignments,
            expected.outcome,
            expected.weights,
            expected.summary,
        )
        # The compact rows are the reference's rows of the same nodes, word for word.
        by_node = {(v.cluster, v.node): v for v in expected.candidates}
        assert all(by_node[v.cluster, v.node] == v for v in compact.candidates)
        placed = {(a.cluster, a.node) for a in expected.assignments}
        assert placed <= {(v.cluster, v.node) for v in compact.candidates}


@pytest.mark.parametrize("seed", range(10))
def test_vectorised_criteria_give_the_scalar_values_bit_for_bit(seed: int) -> None:
    """On every row (the values a table keeps per allocation and request size, then gathers) and on a few rows (the
    rebalancer's candidates, computed on the spot), before and after the table's allocation changes."""
    rng = random.Random(1000 + seed)
    inventory = random_inventory(rng)
    while not any(c.nodes for c in inventory):
        inventory = random_inventory(rng)
    table = NodeTable.build(inventory)
    spec = random_spec(rng)
    for _ in range(2):
        few = np.array(sorted(rng.sample(range(len(table)), max(1, len(table) // 3))), dtype=np.int64)
        for rows in (np.arange(len(table)), few):
            for criterion in DEFAULT_CRITERIA:
                req = Requirements.of(spec, MATRIX)  # one per decision, as the engine makes
                if isinstance(criterion, VectorCriterion):
                    many = criterion.raw_many(table, rows, req).tolist()
                    one = [criterion.raw(table.cluster(r), table.node(r), req) for r in rows.tolist()]  # type: ignore[union-attr]
                    assert many == one, criterion.name
                    continue
                assert isinstance(criterion, VectorLoadCriterion)
                expected = []
                for r in rows.tolist():
                    node = table.node(r)
                    load = NodeLoad(node.allocated_cpu, node.allocated_memory_mib, node.hosted_replicas_of_workload)
                    expected.append(criterion.score(table.cluster(r), node, load, req))  # type: ignore[union-attr]
                for as_table in (True, False):
                    loads = LoadColumns(
                        table.allocated_cpu[rows],
                        table.allocated_memory_mib[rows],
                        table.hosted[rows],
                        table.hosted[rows] * 0,
                        as_table=as_table,
                    )
                    assert criterion.score_many(table, rows, loads, req).tolist() == expected, criterion.name
        cluster, node = table.cluster(0).name, table.nodes[0].name
        table = table.with_allocated([(cluster, node)], 0.25, 64)  # kept values must not outlive the allocation


@pytest.mark.parametrize("seed", range(20))
def test_a_table_kept_through_placements_decides_as_the_reference(seed: int) -> None:
    """As the scheduler uses it: one table, advanced with ``with_allocated`` after each decision's placements, decides
    each workload as the reference engine does on candidates carrying the same allocations."""
    rng = random.Random(2000 + seed)
    inventory = random_inventory(rng)
    fast = DecisionEngine(criteria=CRITERIA, latency=MATRIX, clock=lambda: NOW)
    reference = ReferenceEngine(criteria=CRITERIA, latency=MATRIX, clock=lambda: NOW)
    table = NodeTable.build(inventory)
    sizes = [random_spec(rng) for _ in range(2)]  # few request sizes, so the kept values are reused
    for _ in range(8):
        spec = rng.choice(sizes)
        replicas = list(range(rng.choice((1, 3))))
        candidates = [
            replace(c, nodes=tuple(table.node(table.row(c.name, n.name)) for n in c.nodes)) for c in inventory
        ]
        expected = reference.decide("ns", "web", 1, spec, replicas, candidates)
        got = fast.decide("ns", "web", 1, spec, replicas, table, detail=Detail.COMPACT)
        assert (got.assignments, got.summary) == (expected.assignments, expected.summary)
        by_node = {(v.cluster, v.node): v for v in expected.candidates}
        assert all(by_node[v.cluster, v.node] == v for v in got.candidates)
        placed = [(a.cluster, a.node) for a in got.assignments]
        table = table.with_allocated(placed, spec.resources.cpu, spec.resources.memory_mib)


@pytest.mark.parametrize("seed", range(20))
def test_a_table_kept_through_many_placements_decides_as_a_table_built_afresh(seed: int) -> None:
    """What a kept table brings up to date at the rows each decision's placements changed (raw values, their bounds,
    normalised scores, sums, totals, verdicts) is what a table built afresh from the same allocation computes: the
    whole decision is the same, float for float, decision after decision, until nodes fill up."""
    rng = random.Random(3000 + seed)
    inventory = random_inventory(rng)
    criteria = DEFAULT_CRITERIA if seed % 2 else CRITERIA  # a plugin's values are computed afresh every time
    weights = rng.choice((None, {"cost": 1.0, "carbon": 2.0, "balance": 1.0, "energy": 0.5}))
    if seed % 2 == 0 and weights is not None:
        weights = weights | {"index": 0.5}
    kept = DecisionEngine(weights, criteria=criteria, latency=MATRIX, clock=lambda: NOW)
    table = NodeTable.build(inventory)
    specs = [random_spec(rng) for _ in range(2)]
    for _ in range(30):
        spec = specs[0] if rng.random() < 0.8 else specs[1]  # mostly one size, so values are brought up to date
        replicas = list(range(rng.choice((1, 2, 3))))
        got = kept.decide("ns", "web", 1, spec, replicas, table, detail=Detail.COMPACT)
        same_allocation = [
            replace(c, nodes=tuple(table.node(table.row(c.name, n.name)) for n in c.nodes)) for c in inventory
        ]
        afresh = DecisionEngine(weights, criteria=criteria, latency=MATRIX, clock=lambda: NOW)
        assert got == afresh.decide("ns", "web", 1, spec, replicas, same_allocation, detail=Detail.COMPACT)
        placed = [(a.cluster, a.node) for a in got.assignments]
        table = table.with_allocated(placed, spec.resources.cpu, spec.resources.memory_mib)


def test_a_decisions_explanation_is_its_own() -> None:
    """Decisions on one kept table share what the table keeps, never a part of their explanation that a caller can
    change: the groups, shared, refuse changes; changing one decision's group list and rows changes no later
    decision."""
    rng = random.Random(5)
    inventory = random_inventory(rng)
    while len(inventory) < 5:
        inventory = random_inventory(rng)
    engine = DecisionEngine(clock=lambda: NOW)
    table = NodeTable.build(inventory)
    spec = DeploymentSpec(command=["app"], resources=Resources(cpu=0.1, memory_mib=64))
    first = engine.decide("ns", "w", 1, spec, [0], table, detail=Detail.COMPACT)
    expected = first.model_dump()
    for group in first.verdicts:
        with pytest.raises(ValidationError, match="frozen"):
            group.nodes = -1
        assert isinstance(group.clusters, tuple)
    first.verdicts.clear()
    for row in first.candidates:
        row.scores["cost"] = -1.0
    assert engine.decide("ns", "w", 1, spec, [0], table, detail=Detail.COMPACT).model_dump() == expected


def test_a_kept_table_follows_allocations_and_another_workloads_replicas() -> None:
    spec_ = NodeSpec(name="n1", cpu=2.0, memory_mib=4096)
    clusters = [
        ClusterCandidate(
            name=n, tier=Tier.EDGE, region="eu-west", country="ES", nodes=(NodeCandidate.from_spec(spec_),)
        )
        for n in ("a", "b")
    ]
    engine = DecisionEngine(clock=lambda: NOW)
    workload = DeploymentSpec(command=["app"], resources=Resources(cpu=2.0, memory_mib=1024))
    table = engine.table(clusters)

    first = engine.decide("ns", "w", 1, workload, [0], table, detail=Detail.COMPACT)
    assert [a.cluster for a in first.assignments] == ["a"]
    after = table.with_allocated([("a", "n1")], 2.0, 1024)
    second = engine.decide("ns", "w", 1, workload, [0], after, detail=Detail.COMPACT)
    assert [a.cluster for a in second.assignments] == ["b"]  # a is full now
    # The kept table did not change: deciding on it again gives the first answer.
    assert engine.decide("ns", "w", 1, workload, [0], table).assignments == first.assignments

    # Another workload with a replica on b/n1 spreads away from it.
    small = DeploymentSpec(command=["app"], resources=Resources(cpu=0.5, memory_mib=64))
    hosted = table.with_hosted({("a", "n1"): 1})
    assert [a.cluster for a in engine.decide("ns", "v", 1, small, [0], hosted).assignments] == ["b"]


@pytest.mark.parametrize("seed", range(40))
def test_the_best_nodes_are_those_the_ranking_key_sorts_first(seed: int) -> None:
    """The shortcut that finds the first replica's best nodes agrees with sorting every node by the ranking's key
    (fewest replicas of the workload, highest total, name), with ties and with many nodes already hosting."""
    rng = random.Random(seed)
    size = rng.choice((1, 5, 40, 300))
    hosted = np.array([rng.choice((0, 0, 1, 2) if seed % 2 else (0, 1)) for _ in range(size)], dtype=np.int64)
    totals = np.array([rng.choice((0.25, 0.5, 0.75, rng.random())) for _ in range(size)], dtype=np.float64)
    for count in (1, 3, 5, 16, 17, 40, size + 3):
        expected = sorted(range(size), key=lambda i: (hosted[i], -totals[i], i))[:count]
        assert _best(hosted, totals, count) == expected


def test_a_kept_table_remembers_a_bounded_number_of_requirement_sets_and_decides_alike() -> None:
    """The filters' verdicts a table keeps per set of requirements stay bounded however many workloads it serves,
    and a decision after the memo started over is the same as before."""
    rng = random.Random(7)
    inventory = random_inventory(rng)
    while not inventory:
        inventory = random_inventory(rng)
    table = NodeTable.build(inventory)
    engine = DecisionEngine(clock=lambda: NOW)
    names = [c.name for c in inventory]
    specs = [
        DeploymentSpec(command=["app"], placement=PlacementConstraints(clusters=[names[i % len(names)], f"x{i}"]))
        for i in range(300)
    ]
    first = [engine.decide("ns", "w", 1, spec, [0], table, detail=Detail.COMPACT) for spec in specs]
    again = [engine.decide("ns", "w", 1, spec, [0], table, detail=Detail.COMPACT) for spec in specs]
    assert again == first
    assert 0 < len(table.memo("verdicts", dict)) <= 64
    assert 0 < len(table.memo("derived", dict)) <= 256  # what the next decision may reuse is bounded too


@pytest.mark.parametrize("seed", range(10))
def test_a_kept_table_decides_alike_for_workloads_that_differ_only_in_weights_or_users(seed: int) -> None:
    """Decisions on one table with the same requirements share the filters' verdicts and the criteria's values; the
    scores each workload's weights and users make of them are its own, whatever was decided before."""
    rng = random.Random(3000 + seed)
    # Most nodes feasible, as in a large continuum: the criteria then keep every row's values and share them.
    inventory = [
        replace(
            c,
            ready=True,
            cordoned=False,
            excluded_reason=None,
            nodes=tuple(replace(n, ready=True, runtimes=("runc",), allocated_cpu=0.0) for n in c.nodes),
        )
        for c in random_inventory(rng)
    ]
    # The default criteria: a plugin's scalar raw() gives new values every decision, so nothing after it is shared.
    fast = DecisionEngine(latency=MATRIX, clock=lambda: NOW)
    reference = ReferenceEngine(latency=MATRIX, clock=lambda: NOW)
    table = NodeTable.build(inventory)
    resources = Resources(cpu=0.25, memory_mib=256)
    weights = [{"cost": 2}, {"cost": 3}, {"balance": 0}, {"balance": 2}, {"carbon": 0.5}, {"cost": 0, "carbon": 0}, {}]
    specs = [
        DeploymentSpec(command=["app"], resources=resources, placement=PlacementConstraints(weights=w))  # type: ignore[arg-type]
        for w in weights
    ] + [  # and in where their users are
        DeploymentSpec(
            command=["app"],
            resources=resources,
            placement=PlacementConstraints.model_validate({"users": [{"region": region, "weight": 1}]}),
        )
        for region in ("eu-west", "us-east")
    ]
    for spec in [*specs, *reversed(specs), *specs]:
        expected = reference.decide("ns", "web", 1, spec, [0, 1], inventory)
        got = fast.decide("ns", "web", 1, spec, [0, 1], table, detail=Detail.COMPACT)
        assert (got.assignments, got.weights, got.summary) == (expected.assignments, expected.weights, expected.summary)
        by_node = {(v.cluster, v.node): v for v in expected.candidates}
        assert all(by_node[v.cluster, v.node] == v for v in got.candidates)


@pytest.mark.parametrize("seed", range(40))
def test_the_best_nodes_brought_up_to_date_are_those_found_again(seed: int) -> None:
    """After a decision changed a few totals (nodes that took replicas get worse, a node may get better), the kept
    best nodes brought up to date are the best nodes found again over every node, as many as are left."""
    rng = random.Random(seed)
    size = rng.choice((3, 40, 300))
    hosted = np.array([rng.choice((0, 0, 0, 1)) for _ in range(size)], dtype=np.int64)
    totals = np.array([rng.choice((0.25, 0.5, rng.random())) for _ in range(size)], dtype=np.float64)
    kept = _best(hosted, totals, 64)
    for _ in range(20):
        changed = sorted(set(rng.sample(kept[:5], min(3, len(kept))) + rng.sample(range(size), 2)))
        after = totals.copy()
        for index in changed:
            after[index] = rng.choice((after[index] * rng.uniform(0.5, 1.0), rng.random(), 0.5))
        patched = _best_now(hosted, after, 5, (hosted, totals), kept, changed)
        if patched is None:  # fewer than asked are left: found again
            kept = _best(hosted, after, 64)
        else:
            kept = list(patched[0])
            assert kept == _best(hosted, after, len(kept))
            assert len(kept) >= min(5, size)
        totals = after
