"""The workload-phase rules and the per-cluster rollout plan: pure functions, tested without a store."""

from __future__ import annotations

import pytest

from nemo_kernel.clusters import ReplicaSpec
from nemo_kernel.domain import ReplicaPhase, WorkloadPhase
from nemo_kernel.orchestrator.reconcile import ready_count, workload_phase
from nemo_kernel.orchestrator.reconcile.phases import left_to_placement
from nemo_kernel.orchestrator.reconcile.rollout import plan_cluster, to_send
from nemo_kernel.store.clusters import DRAINED, NOT_ANSWERING
from nemo_kernel.store.tables import ReplicaRow

RUNNING = ReplicaPhase.RUNNING.value


def _replica(index: int, cluster: str, phase: str = RUNNING, *, desired: bool = True, rid: str = "") -> ReplicaRow:
    return ReplicaRow(
        id=rid or f"web-v1-{index}-{cluster}", index=index, version=1, cluster=cluster, node="n", phase=phase,
        desired=desired,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("wanted", "current", "ready", "was", "phase"),
    [
        pytest.param(None, 0, 0, WorkloadPhase.REGISTERED, WorkloadPhase.REGISTERED, id="catalogue-entry"),
        pytest.param(3, 0, 0, WorkloadPhase.PENDING, WorkloadPhase.PENDING, id="nothing-placed"),
        pytest.param(3, 0, 0, WorkloadPhase.RUNNING, WorkloadPhase.PENDING, id="every-replica-gone"),
        pytest.param(3, 3, 1, WorkloadPhase.PENDING, WorkloadPhase.DEPLOYING, id="placed-not-all-running"),
        pytest.param(3, 3, 1, WorkloadPhase.DEPLOYING, WorkloadPhase.DEPLOYING, id="still-deploying"),
        pytest.param(3, 3, 3, WorkloadPhase.DEPLOYING, WorkloadPhase.RUNNING, id="all-running"),
        pytest.param(3, 4, 3, WorkloadPhase.RUNNING, WorkloadPhase.RUNNING, id="running-while-a-replica-moves"),
        pytest.param(0, 0, 0, WorkloadPhase.PENDING, WorkloadPhase.RUNNING, id="scaled-to-zero"),
        pytest.param(3, 3, 2, WorkloadPhase.RUNNING, WorkloadPhase.DEGRADED, id="was-running-one-down"),
        pytest.param(3, 3, 2, WorkloadPhase.DEGRADED, WorkloadPhase.DEGRADED, id="still-degraded"),
        pytest.param(3, 3, 2, "Running", WorkloadPhase.DEGRADED, id="stored-phase-as-text"),
    ],
)
def test_workload_phase(wanted: int | None, current: int, ready: int, was: str, phase: WorkloadPhase) -> None:
    assert workload_phase(wanted, current, ready, was) is phase


def test_a_replica_moving_off_a_drained_cluster_serves_until_replaced() -> None:
    current = [_replica(0, "drained"), _replica(1, "b"), _replica(2, "c")]
    ready = ready_count(current, {"drained": DRAINED})
    assert ready == 3
    assert workload_phase(3, len(current), ready, WorkloadPhase.RUNNING) is WorkloadPhase.RUNNING


def test_a_replica_on_a_silent_cluster_does_not_count_until_its_replacement_runs() -> None:
    current = [_replica(0, "silent"), _replica(1, "b"), _replica(2, "c")]
    leaving = {"silent": NOT_ANSWERING}
    assert workload_phase(3, 3, ready_count(current, leaving), WorkloadPhase.RUNNING) is WorkloadPhase.DEGRADED
    replaced = [*current, _replica(0, "d")]  # the replacement of index 0 runs: the index counts once
    assert ready_count(replaced, leaving) == 3
    assert workload_phase(3, 4, ready_count(replaced, leaving), WorkloadPhase.DEGRADED) is WorkloadPhase.RUNNING


def test_only_running_replicas_count_and_each_index_once() -> None:
    current = [_replica(0, "a"), _replica(0, "b"), _replica(1, "a", ReplicaPhase.STARTING.value),
               _replica(2, "a", ReplicaPhase.REJECTED.value)]  # fmt: skip
    assert ready_count(current, {}) == 1


def test_a_cluster_plan_sends_the_missing_removes_the_unwanted_and_forgets_what_is_gone() -> None:
    sent, running, stopping, gone, rejected = (
        _replica(0, "a", ReplicaPhase.SCHEDULED.value, rid="sent"),
        _replica(1, "a", rid="running"),
        _replica(2, "a", ReplicaPhase.STOPPING.value, desired=False, rid="stopping"),
        _replica(3, "a", ReplicaPhase.STOPPING.value, desired=False, rid="gone"),
        _replica(4, "a", ReplicaPhase.REJECTED.value, rid="rejected"),
    )
    rows = [sent, running, stopping, gone, rejected]
    reported = {"running", "stopping", "stranger"}
    assert [r.id for r in rows if to_send(r, reported, {})] == ["sent"]
    assert not [r for r in rows if to_send(r, reported, {"a": DRAINED})]  # its replacement is placed elsewhere
    spec = ReplicaSpec(id="sent", workload="default/web", version=1, index=0, node="n")
    plan = plan_cluster(rows, reported, {"sent": spec})
    assert plan.ensure == [spec]
    assert sorted(plan.remove) == ["stopping", "stranger"]
    assert plan.forget == ["gone"]


@pytest.mark.parametrize(
    ("replica", "stateful", "given_up", "placed"),
    [
        pytest.param(_replica(0, "a"), True, set(), False, id="staying-cluster"),
        pytest.param(_replica(0, "drained"), False, set(), False, id="drained-running-moves-by-migration"),
        pytest.param(_replica(0, "drained", "Starting"), True, set(), True, id="drained-not-running"),
        pytest.param(_replica(0, "drained"), True, {"web-v1-0-drained"}, True, id="drained-evacuation-gave-up"),
        pytest.param(_replica(0, "silent"), False, set(), True, id="silent-stateless-no-state-to-hand-over"),
        pytest.param(_replica(0, "silent"), True, set(), False, id="silent-stateful-tries-the-hand-off"),
        pytest.param(_replica(0, "silent"), True, {"web-v1-0-silent"}, True, id="silent-stateful-gave-up"),
    ],
)
def test_left_to_placement(replica: ReplicaRow, stateful: bool, given_up: set[str], placed: bool) -> None:
    leaving = {"drained": DRAINED, "silent": NOT_ANSWERING}
    assert left_to_placement(replica, stateful, leaving, given_up) is placed
