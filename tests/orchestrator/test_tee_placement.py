"""``placement.tee``: a workload asks for one TEE type (or any) and lands only on nodes offering it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nemo_kernel.domain import DeploymentSpec, PlacementConstraints, PlacementOutcome, TeeChoice, TeeType, Tier
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import NODE_FILTERS, Requirements, admissible_runtime, first_rejection

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def nodes() -> tuple[NodeCandidate, ...]:
    return tuple(NodeCandidate(name=f"n-{tee.value}", cpu=4.0, memory_mib=8192, tee=tee) for tee in TeeType)


def decide(tee: TeeChoice | None, **kw: object) -> tuple[list[str], dict[str, str]]:
    spec = DeploymentSpec.model_validate({"command": ["app"], "placement": PlacementConstraints(tee=tee), **kw})
    candidates = [ClusterCandidate(name="c", tier=Tier.EDGE, region="r", country="ES", nodes=nodes())]
    decision = DecisionEngine(None, clock=lambda: NOW).decide(
        "default", "web", 1, spec, list(range(len(TeeType))), candidates
    )
    rejected = {v.node or "": f"{v.rejected_by}: {v.reason}" for v in decision.candidates if v.rejected_by}
    return sorted({a.node for a in decision.assignments}), rejected


@pytest.mark.parametrize("tee", [TeeChoice.TDX, TeeChoice.SEV_SNP, TeeChoice.SEV, TeeChoice.SGX])
def test_a_named_tee_type_lands_only_on_nodes_offering_it(tee: TeeChoice) -> None:
    placed, rejected = decide(tee)

    assert placed == [f"n-{tee.value}"]
    assert set(rejected) == {f"n-{t.value}" for t in TeeType} - {f"n-{tee.value}"}
    assert rejected["n-none"].startswith("tee: node has no TEE (placement.tee needs")
    other = next(t for t in TeeType if t not in (TeeType.NONE, TeeType(tee.value)))
    assert rejected[f"n-{other.value}"] == f"tee: node's TEE is {other.value} (placement.tee needs {tee.value})"


def test_any_tee_accepts_every_tee_and_refuses_nodes_without_one() -> None:
    placed, rejected = decide(TeeChoice.ANY)

    assert placed == sorted(f"n-{t.value}" for t in TeeType if t is not TeeType.NONE)
    assert list(rejected) == ["n-none"]
    assert "placement.tee needs" in rejected["n-none"]


def test_without_placement_tee_every_node_qualifies() -> None:
    placed, rejected = decide(None)
    assert len(placed) == len(TeeType) and not rejected


def test_tee_type_narrows_confidential_isolation() -> None:
    spec = DeploymentSpec.model_validate(
        {"command": ["app"], "isolation": "confidential", "placement": {"tee": "sev-snp"}}
    )
    req = Requirements.of(spec)
    for tee in TeeType:
        node = NodeCandidate(name="n", cpu=4.0, memory_mib=8192, tee=tee, runtimes=("kata-qemu-snp",))
        rejection = first_rejection(NODE_FILTERS, node, req)
        # The fast path the engine runs on every node agrees with the filters that explain.
        assert (admissible_runtime(node, req) is not None) == (rejection is None)
        assert (rejection is None) == (tee is TeeType.SEV_SNP)
        if rejection is not None:
            assert rejection[0] == "tee"


def test_pending_when_no_node_offers_the_tee() -> None:
    spec = DeploymentSpec.model_validate({"command": ["app"], "placement": {"tee": "sgx"}})
    only_tdx = NodeCandidate(name="n", cpu=4.0, memory_mib=8192, tee=TeeType.TDX)
    decision = DecisionEngine(None, clock=lambda: NOW).decide(
        "default",
        "web",
        1,
        spec,
        [0],
        [ClusterCandidate(name="c", tier=Tier.EDGE, region="r", country="ES", nodes=(only_tdx,))],
    )
    assert decision.outcome is PlacementOutcome.PENDING
    assert "tee" in decision.summary
