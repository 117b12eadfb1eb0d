"""The continuum's criteria change placement as a user expects: intent (optimize), users' latency and its limit,
energy, spread constraints; and a compact explanation still accounts for every cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    DeploymentSpec,
    Detail,
    LatencyMatrix,
    PlacementConstraints,
    PlacementDecision,
    PowerModel,
    Prices,
    Resources,
    Tier,
)
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine, NodeCandidate, ReferenceEngine
from nemo_kernel.orchestrator.decision.criteria.energy import added_watts
from nemo_kernel.orchestrator.reconcile.reconciler import latency_matrix

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MATRIX = LatencyMatrix.model_validate(
    {"regions": {"eu-south": {"eu-west": 30, "us-east": 110}, "eu-west": {"us-east": 80}}, "same_region_ms": 2}
)


def cluster(name: str, region: str = "eu-south", *, nodes: int = 1, **kw: Any) -> ClusterCandidate:
    kw.setdefault("tier", Tier.EDGE)
    kw.setdefault("country", "ES")
    members = tuple(NodeCandidate(name=f"n{i}", cpu=4.0, memory_mib=8192) for i in range(1, nodes + 1))
    return ClusterCandidate(name=name, region=region, nodes=members, **kw)


def workload(replicas: int = 1, **placement: Any) -> DeploymentSpec:
    return DeploymentSpec(
        command=["app"],
        replicas=replicas,
        resources=Resources(cpu=0.5, memory_mib=256),
        placement=PlacementConstraints.model_validate(placement),
    )


def decide(
    candidates: list[ClusterCandidate], spec: DeploymentSpec, detail: Detail = Detail.NODES
) -> PlacementDecision:
    engine = DecisionEngine(latency=MATRIX, clock=lambda: NOW)
    decision = engine.decide("default", "web", 1, spec, list(range(spec.replicas)), candidates, detail=detail)
    # Whatever the criteria, the vectorised engine decides as the reference one.
    reference = ReferenceEngine(latency=MATRIX, clock=lambda: NOW)
    assert (
        decision.assignments
        == reference.decide("default", "web", 1, spec, list(range(spec.replicas)), candidates).assignments
    )
    return decision


def clusters_of(decision: PlacementDecision) -> list[str]:
    return [a.cluster for a in decision.assignments]


# A cheap cluster on a dirty grid and a dearer one on a green grid.
CHEAP_DIRTY = cluster("cheap-dirty", prices=Prices(cpu_hour_eur=0.01, gib_hour_eur=0.001), carbon_intensity=650.0)
GREEN_DEAR = cluster("green-dear", prices=Prices(cpu_hour_eur=0.04, gib_hour_eur=0.004), carbon_intensity=30.0)


@pytest.mark.parametrize(("optimize", "expected"), [("carbon", "green-dear"), ("cost", "cheap-dirty")])
def test_optimize_states_the_intent(optimize: str, expected: str) -> None:
    decision = decide([CHEAP_DIRTY, GREEN_DEAR], workload(optimize=optimize))
    assert clusters_of(decision) == [expected]
    assert decision.weights[optimize] == 10.0  # the preset used is stored with the decision


def test_explicit_weights_adjust_the_preset() -> None:
    # optimize: carbon, but the workload zeroes carbon: cost decides again.
    decision = decide([CHEAP_DIRTY, GREEN_DEAR], workload(optimize="carbon", weights={"carbon": 0}))
    assert clusters_of(decision) == ["cheap-dirty"]


def test_users_locations_pull_a_latency_sensitive_workload_near_them() -> None:
    near = cluster("madrid", "eu-south", prices=Prices(cpu_hour_eur=0.05))
    far = cluster("virginia", "us-east", prices=Prices(cpu_hour_eur=0.01))
    users = [{"region": "eu-south", "weight": 3}, {"region": "eu-west", "weight": 1}]

    assert clusters_of(decide([near, far], workload())) == ["virginia"]  # no users: latency is no concern
    decision = decide([near, far], workload(users=users, optimize="latency"))
    assert clusters_of(decision) == ["madrid"]
    scores = {v.cluster: v.scores["latency"] for v in decision.candidates}
    assert scores == {"madrid": 1.0, "virginia": 0.0}


def test_max_latency_excludes_far_regions_and_the_explanation_names_the_filter() -> None:
    candidates = [
        cluster("madrid", "eu-south"),
        cluster("paris", "eu-west"),
        cluster("virginia", "us-east", prices=Prices(cpu_hour_eur=0.001)),
    ]
    spec = workload(replicas=2, users=[{"region": "eu-south"}], max_latency_ms=50)

    decision = decide(candidates, spec)
    assert sorted(clusters_of(decision)) == ["madrid", "paris"]
    rejected = next(v for v in decision.candidates if v.cluster == "virginia")
    assert rejected.rejected_by == "latency"
    assert rejected.reason == "users' mean latency to region us-east is 110 ms > max_latency_ms 50"

    compact = decide(candidates, spec, Detail.COMPACT)
    (group,) = [g for g in compact.verdicts if g.filter == "latency"]
    assert group.level == "cluster" and group.clusters == ("virginia",)
    assert group.example == "virginia: users' mean latency to region us-east is 110 ms > max_latency_ms 50"


def test_nothing_within_reach_says_so() -> None:
    decision = decide([cluster("virginia", "us-east")], workload(users=[{"region": "eu-south"}], max_latency_ms=50))
    assert decision.outcome == "Pending"
    assert decision.summary == "fits nowhere: 1 cluster rejected: latency (virginia)"


def test_energy_prefers_the_node_adding_fewest_watts() -> None:
    frugal = NodeCandidate(name="arm", cpu=4.0, memory_mib=8192, power=PowerModel(idle_watts=5, max_watts=25))
    hungry = NodeCandidate(name="x86", cpu=4.0, memory_mib=8192, power=PowerModel(idle_watts=20, max_watts=300))
    candidates = [ClusterCandidate(name="site", tier=Tier.EDGE, region="r", country="ES", nodes=(hungry, frugal))]
    decision = decide(candidates, workload(weights={"energy": 1, "cost": 0, "carbon": 0, "balance": 0, "latency": 0}))
    assert [a.node for a in decision.assignments] == ["arm"]
    assert {v.node: v.scores["energy"] for v in decision.candidates} == {"arm": 1.0, "x86": 0.0}


def test_energy_follows_a_nodes_power_table() -> None:
    # Same linear endpoints, but "curved" draws most of its power in its first 10 % of CPU (a measured table):
    # half a core more on it, idle, costs far more than on "flat". Both engines read the table the same way.
    table = [{"utilisation": u, "watts": w} for u, w in ((0.0, 20.0), (0.1, 250.0), (1.0, 300.0))]
    curved = NodeCandidate(name="curved", cpu=4.0, memory_mib=8192, power=PowerModel.model_validate({"table": table}))
    flat = NodeCandidate(name="flat", cpu=4.0, memory_mib=8192, power=PowerModel(idle_watts=20, max_watts=300))
    candidates = [ClusterCandidate(name="site", tier=Tier.EDGE, region="r", country="ES", nodes=(curved, flat))]
    weights = {"energy": 1, "cost": 0, "carbon": 0, "balance": 0, "latency": 0}
    decision = decide(candidates, workload(weights=weights))  # the reference engine agrees (see decide)
    assert [a.node for a in decision.assignments] == ["flat"]
    assert {v.node: v.scores["energy"] for v in decision.candidates} == {"flat": 1.0, "curved": 0.0}
    # Half a core of four, from idle: 12.5 % utilisation, interpolated in the table; linear on the other node.
    assert added_watts(curved, 0.5) == pytest.approx(250.0 + 50.0 * (0.125 - 0.1) / 0.9 - 20.0)
    assert added_watts(flat, 0.5) == pytest.approx(280.0 * 0.125)


def test_spread_max_one_per_region_spreads_across_regions() -> None:
    # Two cheap clusters in one region, dearer ones elsewhere: without a constraint two replicas share the region.
    candidates = [
        cluster("a1", "eu-south", prices=Prices(cpu_hour_eur=0.01)),
        cluster("a2", "eu-south", prices=Prices(cpu_hour_eur=0.01)),
        cluster("b", "eu-west", prices=Prices(cpu_hour_eur=0.05)),
        cluster("c", "us-east", prices=Prices(cpu_hour_eur=0.06)),
    ]
    assert clusters_of(decide(candidates, workload(replicas=2))) == ["a1", "a2"]
    spread = decide(candidates, workload(replicas=3, spread=[{"by": "region", "max": 1}]))
    assert clusters_of(spread) == ["a1", "b", "c"]

    # A fourth replica has no region left: it waits, and the decision says so.
    four = decide(candidates, workload(replicas=4, spread=[{"by": "region", "max": 1}]))
    assert four.outcome == "Partial" and len(four.assignments) == 3


def test_spread_min_serves_each_group_first() -> None:
    # Cheap cloud, dear edge: min 1 per tier puts one replica on the edge before a second goes to the cloud.
    candidates = [
        cluster("cloud", "eu-west", nodes=2, tier=Tier.CLOUD, prices=Prices(cpu_hour_eur=0.01)),
        cluster("edge", "eu-south", tier=Tier.EDGE, prices=Prices(cpu_hour_eur=0.05)),
    ]
    assert clusters_of(decide(candidates, workload(replicas=2))) == ["cloud", "cloud"]
    assert clusters_of(decide(candidates, workload(replicas=2, spread=[{"by": "tier", "min": 1}]))) == [
        "cloud",
        "edge",
    ]


def test_spread_counts_replicas_already_running() -> None:
    running = NodeCandidate(name="n1", cpu=4.0, memory_mib=8192, hosted_replicas_of_workload=1)
    candidates = [
        ClusterCandidate(name="a", tier=Tier.EDGE, region="eu-south", country="ES", nodes=(running,)),
        cluster("a2", "eu-south"),
        cluster("b", "eu-west", prices=Prices(cpu_hour_eur=0.09)),
    ]
    decision = decide(candidates, workload(replicas=1, spread=[{"by": "region", "max": 1}]))
    assert clusters_of(decision) == ["b"]  # eu-south already has its one


def test_a_compact_explanation_accounts_for_every_cluster() -> None:
    candidates = [
        cluster("down", ready=False),
        cluster("fr", country="FR"),
        cluster("full", nodes=2),
        *[cluster(f"ok{i}", nodes=2) for i in range(8)],
    ]
    full_nodes = tuple(NodeCandidate(name=f"n{i}", cpu=1.0, memory_mib=512, allocated_cpu=1.0) for i in (1, 2))
    candidates[2] = ClusterCandidate(name="full", tier=Tier.EDGE, region="eu-south", country="ES", nodes=full_nodes)
    decision = decide(candidates, workload(replicas=2, countries=["ES"]), Detail.COMPACT)

    groups = {(g.level, g.filter): g for g in decision.verdicts}
    assert groups["cluster", "cluster-health"].clusters == ("down",)
    assert groups["cluster", "data-residency"].clusters == ("fr",)
    assert groups["node", "capacity"].clusters == ("full",) and groups["node", "capacity"].nodes == 2
    assert groups["node", None].clusters == tuple(f"ok{i}" for i in range(8)) and groups["node", None].nodes == 16
    # The chosen nodes and the best others, with their scores; not all 16.
    assert len(decision.candidates) == 5
    assert {(a.cluster, a.node) for a in decision.assignments} <= {(v.cluster, v.node) for v in decision.candidates}
    assert all(v.total is not None and "cost" in v.scores for v in decision.candidates)


def test_static_division_shares_replicas_by_weight() -> None:
    candidates = [cluster(name, nodes=4) for name in ("a", "b", "c")]
    spec = workload(replicas=6, division={"mode": "static", "weights": {"a": 2, "b": 1}})
    decision = decide(candidates, spec)
    placed = clusters_of(decision)
    assert {name: placed.count(name) for name in ("a", "b", "c")} == {"a": 4, "b": 2, "c": 0}


def test_dynamic_division_follows_free_capacity() -> None:
    # "big" has room for 8 replicas, "small" for 2 (cpu 0.5 each): 10 replicas split 8/2, not 5/5.
    big = ClusterCandidate(
        name="big", tier=Tier.EDGE, region="r", country="ES", nodes=(NodeCandidate(name="n", cpu=4.0, memory_mib=8192),)
    )
    small = ClusterCandidate(
        name="small",
        tier=Tier.EDGE,
        region="r",
        country="ES",
        nodes=(NodeCandidate(name="n", cpu=4.0, memory_mib=8192, allocated_cpu=3.0),),
        prices=Prices(cpu_hour_eur=0.001),  # cheaper: without division it would fill first
    )
    decision = decide([big, small], workload(replicas=10, division={"mode": "dynamic"}))
    placed = clusters_of(decision)
    assert (placed.count("big"), placed.count("small")) == (8, 2)


def test_the_latency_matrix_comes_from_a_file_an_admin_names(tmp_path: Path) -> None:
    good = tmp_path / "latency.yaml"
    good.write_text("same_region_ms: 1\nregions:\n  eu-south: {eu-west: 30}\n")
    matrix = latency_matrix(Settings(latency_file=good, data_dir=tmp_path))
    assert matrix is not None and matrix.ms("eu-west", "eu-south") == 30.0
    assert latency_matrix(Settings(data_dir=tmp_path)) is None

    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  a: {b: 10}\n  b: {a: 20}\n")  # asymmetric
    with pytest.raises(ValueError, match=r"NEMO_LATENCY_FILE .*bad.yaml: .*a -> b is 10 ms but b -> a is 20 ms"):
        latency_matrix(Settings(latency_file=bad, data_dir=tmp_path))
    with pytest.raises(ValueError, match="NEMO_LATENCY_FILE"):
        latency_matrix(Settings(latency_file=tmp_path / "missing.yaml", data_dir=tmp_path))
