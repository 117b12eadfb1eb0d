"""Decision engine: what users rely on when they ask where their workload runs and why."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from nemo_kernel.domain import (
    CandidateVerdict,
    ClusterSpec,
    DeploymentSpec,
    Isolation,
    PlacementConstraints,
    PlacementDecision,
    PlacementOutcome,
    PowerModel,
    Prices,
    Resources,
    TeeType,
    Tier,
)
from nemo_kernel.orchestrator.decision import (
    NODE_FILTERS,
    ClusterCandidate,
    DecisionEngine,
    NodeCandidate,
    Requirements,
)
from nemo_kernel.orchestrator.decision.filters import admissible_runtime, first_rejection

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def node(name: str, **kw: Any) -> NodeCandidate:
    kw.setdefault("cpu", 4.0)
    kw.setdefault("memory_mib", 8192)
    return NodeCandidate(name=name, **kw)


def cluster(name: str, *nodes: NodeCandidate, **kw: Any) -> ClusterCandidate:
    kw.setdefault("tier", Tier.EDGE)
    kw.setdefault("region", "eu-south")
    kw.setdefault("country", "ES")
    return ClusterCandidate(name=name, nodes=nodes or (node(f"{name}-n1"),), **kw)


def spec(cpu: float = 1.0, memory_mib: int = 256, **kw: Any) -> DeploymentSpec:
    return DeploymentSpec(command=["app"], resources=Resources(cpu=cpu, memory_mib=memory_mib), **kw)


def where(**kw: Any) -> PlacementConstraints:
    return PlacementConstraints(**kw)


def decide(
    candidates: list[ClusterCandidate],
    workload: DeploymentSpec | None = None,
    replicas: int = 1,
    weights: dict[str, float] | None = None,
) -> PlacementDecision:
    engine = DecisionEngine(weights, clock=lambda: NOW)
    return engine.decide("default", "web", 1, workload or spec(), list(range(replicas)), candidates)


def verdict(decision: PlacementDecision, cluster_name: str, node_name: str | None = None) -> CandidateVerdict:
    (found,) = [v for v in decision.candidates if v.cluster == cluster_name and v.node == node_name]
    return found


def placed_on(decision: PlacementDecision) -> list[str]:
    return [f"{a.cluster}/{a.node}" for a in decision.assignments]


# --- cluster-level filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "workload", "filter_name", "reason"),
    [
        (cluster("c", ready=False), spec(), "cluster-health", "cluster is not ready"),
        (cluster("c", cordoned=True), spec(), "cordon", "cluster is cordoned"),
        (cluster("c", excluded_reason="draining for migration"), spec(), "excluded", "draining for migration"),
        (cluster("c"), spec(placement=where(clusters=["b", "a"])), "cluster-allowlist", "cluster c not in [a, b]"),
        (cluster("c"), spec(placement=where(tiers=[Tier.CLOUD])), "tier", "tier edge not in [cloud]"),
        (cluster("c"), spec(placement=where(regions=["eu-central"])), "region", "region eu-south not in [eu-central]"),
        (
            cluster("c"),
            spec(placement=where(countries=["FR", "DE"])),
            "data-residency",
            "country ES not in [DE, FR] (data residency)",
        ),
    ],
)
def test_cluster_filter_rejects_whole_cluster_with_reason(
    candidate: ClusterCandidate, workload: DeploymentSpec, filter_name: str, reason: str
) -> None:
    decision = decide([candidate], workload)

    assert decision.outcome is PlacementOutcome.PENDING
    (only,) = decision.candidates
    assert only.node is None  # one line for the cluster, not one per node
    assert only.rejected_by == filter_name
    assert reason in only.reason


def test_first_failing_cluster_filter_wins() -> None:
    down_and_abroad = cluster("c", ready=False, country="US")
    decision = decide([down_and_abroad], spec(placement=where(countries=["DE"])))
    assert verdict(decision, "c").rejected_by == "cluster-health"


def test_data_residency_keeps_replicas_in_allowed_countries() -> None:
    candidates = [
        cluster("cheap-es", prices=Prices(cpu_hour_eur=0.001), country="ES"),
        cluster("dear-de", prices=Prices(cpu_hour_eur=0.09), country="DE"),
        cluster("fr", country="FR"),
    ]
    decision = decide(candidates, spec(placement=where(countries=["DE", "FR"])), replicas=2)

    assert decision.outcome is PlacementOutcome.PLACED
    assert {a.cluster for a in decision.assignments} == {"dear-de", "fr"}
    assert verdict(decision, "cheap-es").rejected_by == "data-residency"


# --- node-level filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "workload", "filter_name", "reason"),
    [
        (node("n", ready=False), spec(), "node-health", "node is not ready"),
        (
            node("n", architecture="arm64"),
            spec(placement=where(architectures=["amd64"])),
            "architecture",
            "architecture arm64 not in [amd64]",
        ),
        (
            node("n", runtimes=("runc",)),
            spec(isolation=Isolation.UNIKERNEL),
            "runtime",
            "no unikernel runtime: node offers [runc], needs one of [runh, runu, urunc]",
        ),
        (node("n"), spec(tee_required=True), "tee", "node has no TEE (tee_required"),
        (node("n"), spec(placement=where(node_labels={"zone": "a"})), "node-labels", "label zone missing"),
        (
            node("n", labels={"zone": "b"}),
            spec(placement=where(node_labels={"zone": "a"})),
            "node-labels",
            "label zone=b (wants zone=a)",
        ),
        (
            node("n", cpu=2.0, allocated_cpu=1.5),
            spec(cpu=1.0),
            "capacity",
            "needs 1 cpu, 256 MiB; free 0.5 cpu, 8192 MiB",
        ),
        (
            node("n", memory_mib=1024, allocated_memory_mib=1000),
            spec(memory_mib=256),
            "capacity",
            "free 4 cpu, 24 MiB",
        ),
    ],
)
def test_node_filter_rejects_node_with_reason(
    candidate: NodeCandidate, workload: DeploymentSpec, filter_name: str, reason: str
) -> None:
    decision = decide([cluster("c", candidate)], workload)

    assert decision.outcome is PlacementOutcome.PENDING
    rejected = verdict(decision, "c", "n")
    assert rejected.rejected_by == filter_name
    assert reason in rejected.reason


def test_confidential_workload_lands_only_on_tee_nodes_with_confidential_runtime() -> None:
    c = cluster(
        "c",
        node("plain", runtimes=("runc",)),
        node("tee-no-kata", tee=TeeType.TDX, runtimes=("runc",)),
        node("kata-no-tee", runtimes=("runc", "kata-qemu-tdx")),
        node("tdx", tee=TeeType.TDX, runtimes=("runc", "kata-qemu-tdx")),
    )
    decision = decide([c], spec(isolation=Isolation.CONFIDENTIAL), replicas=2)

    assert placed_on(decision) == ["c/tdx", "c/tdx"]
    assert verdict(decision, "c", "tdx").runtime == "kata-qemu-tdx"
    assert verdict(decision, "c", "plain").rejected_by == "runtime, tee"  # every filter that rejects it
    assert verdict(decision, "c", "tee-no-kata").rejected_by == "runtime"
    assert verdict(decision, "c", "kata-no-tee").rejected_by == "tee"


def test_unikernel_workload_goes_to_runh_nodes_and_records_runtime() -> None:
    c = cluster("c", node("a", runtimes=("runc",)), node("b", runtimes=("runc", "runh")))
    decision = decide([c], spec(isolation=Isolation.UNIKERNEL))

    assert placed_on(decision) == ["c/b"]
    assert verdict(decision, "c", "b").runtime == "runh"
    assert "runtime runh" in verdict(decision, "c", "b").reason


def test_standard_workload_uses_nodes_first_listed_standard_runtime() -> None:
    decision = decide([cluster("c", node("n", runtimes=("runh", "crun", "runc")))])
    assert verdict(decision, "c", "n").runtime == "crun"


def test_fast_path_agrees_with_the_filters_that_explain() -> None:
    # The engine admits nodes through admissible_runtime and explains rejections with NODE_FILTERS;
    # if they disagreed a node could be rejected without a reason, or admitted despite one.
    rng = random.Random(1)
    workloads = [
        spec(cpu=rng.choice([0.1, 1.0, 3.0]), memory_mib=rng.choice([64, 4096]), isolation=iso, tee_required=tee,
             placement=where(architectures=archs, node_labels=labels))
        for iso in Isolation
        for tee in (False, True)
        for archs in ([], ["amd64"])
        for labels in ({}, {"zone": "a"})
    ]  # fmt: skip
    for _ in range(300):
        n = node(
            "n",
            cpu=rng.choice([1.0, 2.0, 4.0]),
            memory_mib=rng.choice([512, 8192]),
            architecture=rng.choice(["amd64", "arm64"]),
            runtimes=tuple(rng.sample(["runc", "runh", "kata-qemu-tdx", "crun"], k=rng.randint(1, 3))),
            tee=rng.choice(list(TeeType)),
            labels=rng.choice([{}, {"zone": "a"}, {"zone": "b"}]),
            ready=rng.random() > 0.2,
            allocated_cpu=rng.choice([0.0, 0.9, 1.0]),
            allocated_memory_mib=rng.choice([0, 400]),
        )
        for workload in workloads:
            req = Requirements.of(workload)
            assert (admissible_runtime(n, req) is None) == (first_rejection(NODE_FILTERS, n, req) is not None)


# --- capacity, spreading, scoring ------------------------------------------------------------------------


def test_capacity_is_accounted_within_one_decision_and_spills_over() -> None:
    c = cluster("c", node("small", cpu=2.0), node("other", cpu=2.0))
    decision = decide([c], spec(cpu=1.0), replicas=4)

    assert decision.outcome is PlacementOutcome.PLACED
    assert sorted(placed_on(decision)) == ["c/other", "c/other", "c/small", "c/small"]
    assert verdict(decision, "c", "small").replicas == 2


def test_capacity_running_out_mid_decision_gives_partial() -> None:
    decision = decide([cluster("c", node("small", cpu=2.0))], spec(cpu=1.0), replicas=4)

    assert decision.outcome is PlacementOutcome.PARTIAL
    assert [a.index for a in decision.assignments] == [0, 1]
    assert "2 of 4 replicas placed" in decision.summary
    assert "2 wait for capacity" in decision.summary


def test_fractional_requests_fill_a_node_exactly() -> None:
    # 0.1 summed ten times is not exactly 1.0 in floating point; the tenth replica must still fit.
    decision = decide([cluster("c", node("n", cpu=1.0))], spec(cpu=0.1), replicas=10)
    assert decision.outcome is PlacementOutcome.PLACED


def test_replicas_spread_over_nodes_before_doubling_up() -> None:
    c = cluster(
        "c",
        node("big", cpu=64.0, memory_mib=131072),  # best balance by far, would take everything on score alone
        node("mid", cpu=8.0),
        node("tiny", cpu=2.0),
    )
    decision = decide([c], spec(cpu=0.5), replicas=4)

    assert sorted(placed_on(decision)[:3]) == ["c/big", "c/mid", "c/tiny"]
    assert placed_on(decision)[3] == "c/big"


def test_nodes_already_hosting_the_workload_come_last() -> None:
    c = cluster("c", node("a", hosted_replicas_of_workload=1), node("b"))
    decision = decide([c])

    assert placed_on(decision) == ["c/b"]
    assert verdict(decision, "c", "a").scores["spread"] == 0.5


def test_weights_decide_between_cheaper_and_greener_cluster() -> None:
    cheap_dirty = cluster("cheap", prices=Prices(cpu_hour_eur=0.01), carbon_intensity=700)
    dear_green = cluster("green", prices=Prices(cpu_hour_eur=0.05), carbon_intensity=30)

    by_cost = decide([cheap_dirty, dear_green], weights={"cost": 1.0, "carbon": 0.1, "balance": 0.0})
    by_carbon = decide([cheap_dirty, dear_green], weights={"cost": 0.1, "carbon": 1.0, "balance": 0.0})

    assert placed_on(by_cost) == ["cheap/cheap-n1"]
    assert placed_on(by_carbon) == ["green/green-n1"]
    assert verdict(by_cost, "cheap", "cheap-n1").scores["cost"] == 1.0
    assert verdict(by_cost, "green", "green-n1").scores["carbon"] == 1.0


def test_carbon_score_follows_marginal_power_of_the_node() -> None:
    # Same grid: the node drawing fewer extra watts per core is greener.
    c = cluster(
        "c",
        node("hungry", power=PowerModel(idle_watts=50, max_watts=450)),
        node("frugal", power=PowerModel(idle_watts=50, max_watts=100)),
    )
    decision = decide([c], weights={"carbon": 1.0})
    assert placed_on(decision) == ["c/frugal"]


def test_scores_are_normalised_and_total_is_their_weighted_mean() -> None:
    candidates = [
        cluster("a", prices=Prices(cpu_hour_eur=0.01), carbon_intensity=100),
        cluster("b", prices=Prices(cpu_hour_eur=0.02), carbon_intensity=400),
        cluster("c", prices=Prices(cpu_hour_eur=0.04), carbon_intensity=200),
    ]
    decision = decide(candidates, spec(cpu=1.0), weights={"cost": 2.0, "carbon": 1.0, "balance": 1.0})

    b = verdict(decision, "b", "b-n1")
    assert b.scores["cost"] == pytest.approx(2 / 3, abs=0.02)  # memory price is shared, CPU price dominates
    assert b.scores["carbon"] == 0.0
    assert b.scores["balance"] == pytest.approx(0.75)  # 1 of 4 cores used after placing
    assert b.total == pytest.approx((2 * b.scores["cost"] + 0 + 0.75) / 4)
    for v in decision.candidates:
        assert all(0.0 <= s <= 1.0 for s in v.scores.values())


def test_identical_candidates_all_score_one_and_tie_breaks_by_name() -> None:
    candidates = [cluster("zeta"), cluster("alpha"), cluster("mid")]
    decision = decide(candidates, replicas=2)

    assert placed_on(decision) == ["alpha/alpha-n1", "mid/mid-n1"]
    assert verdict(decision, "zeta", "zeta-n1").scores["cost"] == 1.0
    again = decide(list(reversed(candidates)), replicas=2)
    assert again.model_dump() == decision.model_dump()


def test_invalid_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown score criteria"):
        DecisionEngine({"costs": 1.0})
    with pytest.raises(ValueError, match="at least one weight"):
        DecisionEngine({"cost": 0.0})
    with pytest.raises(ValueError, match=">= 0"):
        DecisionEngine({"cost": -1.0})


def test_duplicate_cluster_names_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        decide([cluster("c"), cluster("c")])


# --- outcome and explanation -----------------------------------------------------------------------------


def test_pending_when_nothing_fits_summarises_rejections() -> None:
    candidates = [
        cluster("cloud-a", tier=Tier.CLOUD),
        cluster("cloud-b", tier=Tier.CLOUD),
        cluster("edge", node("n1", cpu=1.0), node("n2", cpu=1.0), node("n3", cpu=0.5)),
    ]
    decision = decide(candidates, spec(cpu=2.0, placement=where(tiers=[Tier.EDGE])))

    assert decision.outcome is PlacementOutcome.PENDING
    assert decision.assignments == []
    assert decision.summary == (
        "fits nowhere: 2 clusters rejected: tier (cloud-a, cloud-b); "
        "3 nodes rejected: capacity (edge/n1, edge/n2, edge/n3)"
    )


def test_pending_reason_names_every_filter_that_rejected_each_node() -> None:
    c = cluster(
        "edge-madrid",
        node("n1", runtimes=("runc",)),
        node("n2", runtimes=("runc",), tee=TeeType.TDX),
        node("n3", runtimes=("runc", "kata-qemu-tdx")),
    )
    decision = decide([c], spec(isolation=Isolation.CONFIDENTIAL))

    assert decision.outcome is PlacementOutcome.PENDING
    assert decision.summary == (
        "fits nowhere: 3 nodes rejected: runtime (edge-madrid/n1, edge-madrid/n2), tee (edge-madrid/n1, edge-madrid/n3)"
    )
    assert not decision.summary.lower().startswith("pending")
    both = verdict(decision, "edge-madrid", "n1")
    assert both.rejected_by == "runtime, tee"
    assert "no confidential runtime" in both.reason and "node has no TEE" in both.reason


def test_pending_with_no_clusters() -> None:
    decision = decide([])
    assert decision.outcome is PlacementOutcome.PENDING
    assert "no clusters" in decision.summary


def test_placed_summary_names_nodes_and_best_score() -> None:
    decision = decide([cluster("edge-madrid", node("edge-madrid-n1", cpu=8.0))], spec(cpu=1.0), replicas=3)

    assert decision.outcome is PlacementOutcome.PLACED
    assert decision.summary.startswith(
        "3 replicas placed on edge-madrid/edge-madrid-n1 (x3); chosen by nodes with fewer replicas of the workload "
        "first, then the highest score (first pick scored "
    )
    assert verdict(decision, "edge-madrid", "edge-madrid-n1").replicas == 3


def test_summary_says_spreading_ranks_before_the_score() -> None:
    # The node already hosting a replica scores higher, yet the other one is chosen: the summary says why.
    hosting = node("busy", hosted_replicas_of_workload=1)
    dear = cluster("dear", node("free"), prices=Prices(cpu_hour_eur=0.09))
    decision = decide([cluster("cheap", hosting, prices=Prices(cpu_hour_eur=0.001)), dear], spec(), replicas=1)

    assert placed_on(decision) == ["dear/free"]
    unchosen, chosen = verdict(decision, "cheap", "busy"), verdict(decision, "dear", "free")
    assert unchosen.total is not None and chosen.total is not None and unchosen.total > chosen.total
    assert "fewer replicas of the workload first, then the highest score" in decision.summary


def test_explanation_lists_every_cluster_and_every_node_of_admitted_clusters() -> None:
    candidates = [
        cluster("down", node("down-n1"), node("down-n2"), ready=False),
        cluster("ok", node("ok-n1"), node("ok-n2", ready=False), node("ok-n3")),
        ClusterCandidate(name="empty", tier=Tier.EDGE, region="r", country="ES", nodes=()),
    ]
    decision = decide(candidates, replicas=1)

    listed = [(v.cluster, v.node) for v in decision.candidates]
    assert listed == [
        ("down", None),
        ("empty", None),
        ("ok", "ok-n1"),
        ("ok", "ok-n2"),
        ("ok", "ok-n3"),
    ]
    assert verdict(decision, "empty").reason == "cluster reports no nodes"
    assert verdict(decision, "ok", "ok-n3").reason == "feasible, runtime runc; not chosen"
    assert decision.weights == {"cost": 1.0, "carbon": 1.0, "balance": 1.0, "latency": 1.0, "energy": 0.0}
    assert decision.decided_at == NOW


def test_only_requested_replica_indexes_are_assigned() -> None:
    engine = DecisionEngine(clock=lambda: NOW)
    decision = engine.decide("default", "web", 2, spec(), [3, 5], [cluster("a"), cluster("b")])
    assert [a.index for a in decision.assignments] == [3, 5]
    assert decision.version == 2


def test_candidates_built_from_domain_specs() -> None:
    cs = ClusterSpec.model_validate(
        {
            "name": "cloud-eu",
            "tier": "cloud",
            "region": "eu-central",
            "country": "DE",
            "nodes": [{"name": "n1", "cpu": 8, "memory_mib": 16384, "runtimes": ["runc", "runh"]}],
        }
    )
    candidate = ClusterCandidate.from_spec(cs, cordoned=False)
    decision = decide([candidate], spec(isolation=Isolation.UNIKERNEL))
    assert placed_on(decision) == ["cloud-eu/n1"]
