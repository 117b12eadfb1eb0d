"""Placement criteria as plugins: a criterion written outside the engine changes where replicas go, weights
(the engine's and a workload's own) decide between criteria, and the registry matches the names users may weigh."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from nemo_kernel.domain import (
    CRITERIA,
    DEFAULT_WEIGHTS,
    DeploymentSpec,
    PlacementConstraints,
    PlacementDecision,
    Prices,
    Tier,
)
from nemo_kernel.orchestrator.decision import (
    DEFAULT_CRITERIA,
    ClusterCandidate,
    Criterion,
    DecisionEngine,
    LoadCriterion,
    NodeCandidate,
    NodeLoad,
    Requirements,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UNSET = {"latency": 0.0, "energy": 0.0}  # criteria an engine given only some weights weighs 0


class RttMs:
    """A criterion as a plugin author writes one: round-trip time from the users to each cluster, lower is better."""

    name: ClassVar[str] = "rtt"
    lower_is_better: ClassVar[bool] = True

    def __init__(self, rtt_ms: Mapping[str, float]) -> None:
        self._rtt_ms = rtt_ms

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        return self._rtt_ms[cluster.name]


class PackTightly:
    """A load criterion: the fuller a node would be after taking the replica, the better (bin packing)."""

    name: ClassVar[str] = "packing"

    def score(self, cluster: ClusterCandidate, node: NodeCandidate, load: NodeLoad, req: Requirements) -> float:
        return min((load.used_cpu + req.cpu) / node.cpu, 1.0)


_: Criterion = RttMs({})  # mypy checks the plugins against the protocols, as Go checks `var _ Plugin = ...`
__: LoadCriterion = PackTightly()


def cluster(name: str, *nodes: NodeCandidate, **kw: Any) -> ClusterCandidate:
    kw.setdefault("tier", Tier.EDGE)
    kw.setdefault("region", "eu-south")
    kw.setdefault("country", "ES")
    return ClusterCandidate(
        name=name, nodes=nodes or (NodeCandidate(name=f"{name}-n1", cpu=4.0, memory_mib=8192),), **kw
    )


def spec(**placement: Any) -> DeploymentSpec:
    return DeploymentSpec(command=["app"], placement=PlacementConstraints(**placement))


def placed_on(decision: PlacementDecision) -> list[str]:
    return [f"{a.cluster}/{a.node}" for a in decision.assignments]


CHEAP_FAR = cluster("cheap-far", prices=Prices(cpu_hour_eur=0.01), carbon_intensity=700)
DEAR_NEAR = cluster("dear-near", prices=Prices(cpu_hour_eur=0.05), carbon_intensity=700)
GREEN = cluster("green", prices=Prices(cpu_hour_eur=0.03), carbon_intensity=30)
RTT_MS = {"cheap-far": 180.0, "dear-near": 8.0, "green": 120.0}


def test_a_criterion_plugged_in_changes_the_ranking() -> None:
    candidates = [CHEAP_FAR, DEAR_NEAR]
    without = DecisionEngine({"cost": 1.0}, clock=lambda: NOW)
    with_rtt = DecisionEngine({"cost": 1.0, "rtt": 3.0}, criteria=(*DEFAULT_CRITERIA, RttMs(RTT_MS)), clock=lambda: NOW)

    assert placed_on(without.decide("default", "web", 1, spec(), [0], candidates)) == ["cheap-far/cheap-far-n1"]
    decision = with_rtt.decide("default", "web", 1, spec(), [0], candidates)
    assert placed_on(decision) == ["dear-near/dear-near-n1"]
    near = next(v for v in decision.candidates if v.cluster == "dear-near")
    assert list(near.scores) == [
        "cost",
        "carbon",
        "latency",
        "energy",
        "rtt",
        "balance",
        "spread",
    ]  # explained like the others
    assert near.scores["rtt"] == 1.0 and near.scores["cost"] == 0.0
    assert decision.weights == {"cost": 1.0, "carbon": 0.0, "balance": 0.0, "latency": 0.0, "energy": 0.0, "rtt": 3.0}


def test_a_workload_weighs_a_plugged_in_criterion() -> None:
    engine = DecisionEngine(criteria=(*DEFAULT_CRITERIA, RttMs(RTT_MS)), clock=lambda: NOW)
    assert engine.weights["rtt"] == 1.0  # every criterion weighs 1 unless told otherwise

    # The workload zeroes cost and carbon, so latency (and balance, equal here) decide.
    decision = engine.decide(
        "default", "web", 1, spec(weights={"cost": 0, "carbon": 0}), [0], [CHEAP_FAR, DEAR_NEAR, GREEN]
    )
    assert placed_on(decision) == ["dear-near/dear-near-n1"]


def test_a_load_criterion_is_re_scored_as_the_node_fills() -> None:
    big = NodeCandidate(name="big", cpu=8.0, memory_mib=16384)
    small = NodeCandidate(name="small", cpu=2.0, memory_mib=16384)
    candidates = [cluster("c", big, small)]
    workload = DeploymentSpec(command=["app"], replicas=4)

    balanced = DecisionEngine({"balance": 1.0}, clock=lambda: NOW).decide("d", "w", 1, workload, [0, 1, 2], candidates)
    packed = DecisionEngine({"packing": 1.0}, criteria=(PackTightly(),), clock=lambda: NOW).decide(
        "d", "w", 1, workload, [0, 1, 2], candidates
    )

    # Spreading ranks first either way; the third replica goes where the criterion, re-scored, says.
    assert placed_on(balanced) == ["c/big", "c/small", "c/big"]
    assert placed_on(packed) == ["c/small", "c/big", "c/small"]


def test_the_registry_names_the_criteria_users_may_weigh() -> None:
    # NEMO_WEIGHTS and placement.weights are validated against the domain's names: each must have its plugin.
    assert [c.name for c in DEFAULT_CRITERIA] == list(CRITERIA)
    assert DecisionEngine().weights == DEFAULT_WEIGHTS


def test_criteria_must_be_told_apart() -> None:
    with pytest.raises(ValueError, match="different names"):
        DecisionEngine(criteria=(RttMs(RTT_MS), RttMs(RTT_MS)))

    class Both(RttMs):
        def score(self, cluster: ClusterCandidate, node: NodeCandidate, load: NodeLoad, req: Requirements) -> float:
            return 0.0

    with pytest.raises(TypeError, match="only one"):
        DecisionEngine(criteria=(Both(RTT_MS),))
    with pytest.raises(ValueError, match="unknown score criteria"):
        DecisionEngine({"rtt": 1.0})  # not one of the default criteria


# --- a workload's own weights ----------------------------------------------------------------------------


def test_a_workloads_weights_override_the_engines() -> None:
    engine = DecisionEngine({"cost": 3.0, "carbon": 1.0, "balance": 1.0}, clock=lambda: NOW)
    candidates = [CHEAP_FAR, GREEN]

    default = engine.decide("default", "web", 1, spec(), [0], candidates)
    green = engine.decide("default", "web", 1, spec(weights={"carbon": 10, "cost": 0}), [0], candidates)

    assert placed_on(default) == ["cheap-far/cheap-far-n1"]
    assert placed_on(green) == ["green/green-n1"]
    assert green.weights == {"cost": 0.0, "carbon": 10.0, "balance": 1.0, **UNSET}  # what was used is what is stored
    assert default.weights == {"cost": 3.0, "carbon": 1.0, "balance": 1.0, **UNSET}
    assert engine.weights == {
        "cost": 3.0,
        "carbon": 1.0,
        "balance": 1.0,
        **UNSET,
    }  # nothing leaks into the next decision


def test_a_workload_weighing_everything_zero_has_no_preference() -> None:
    engine = DecisionEngine(clock=lambda: NOW)
    decision = engine.decide(
        "default",
        "web",
        1,
        spec(weights={"cost": 0, "carbon": 0, "balance": 0, "latency": 0}),
        [0, 1],
        [GREEN, CHEAP_FAR],
    )
    assert placed_on(decision) == ["cheap-far/cheap-far-n1", "green/green-n1"]  # spreading, then names
    assert all(v.total == 0.0 for v in decision.candidates)
