"""The SLO loop on a simulated clock, against the embedded metrics store and the SLA store (SQLite, PostgreSQL):
a latency ramp is predicted before it violates, the SLA goes Violated and back, every step is an event."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from nemo_kernel.config import Settings
from nemo_kernel.domain import EventKind, WorkloadDescriptor
from nemo_kernel.domain.sla import Comparison, SlaSpec, SlaState, SloState
from nemo_kernel.metrics import EmbeddedMetrics, Sample
from nemo_kernel.metrics import names as n
from nemo_kernel.orchestrator.control_plane import ControlPlane
from nemo_kernel.orchestrator.reactions import load_reactions
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.orchestrator.slo_loop import HISTORY_POINTS, SloLoop, _History
from nemo_kernel.store import Database, events, slas, workloads
from nemo_kernel.store.tables import ClusterRow, EventRow, ReplicaRow

T0 = float(int(time.time()) - 3 * 3600)  # the simulated clock starts three hours ago and runs faster
SCRAPE = 5.0
INTERVAL = 15.0
BUCKETS = [0.05 * i for i in range(1, 21)]  # 50 ms .. 1 s
LABELS = {"namespace": "default", "workload": "demo", "replica": "demo-0", "cluster": "edge-1"}


def latency_at(t: float, fixed_at: float) -> float:
    """100 ms for 15 minutes, then +10 ms a minute (past 250 ms at 30 minutes) until fixed."""
    minutes = (t - T0) / 60
    if t >= fixed_at:
        return 0.1
    return 0.1 + max(0.0, minutes - 15) * 0.01


class Demo:
    """The demo workload's gateway series: 20 requests a scrape, all with the latency of the moment."""

    def __init__(self, store: EmbeddedMetrics, fixed_at: float) -> None:
        self.store = store
        self.fixed_at = fixed_at
        self.t = T0
        self.requests = 0.0
        self.buckets = [0.0] * len(BUCKETS)

    def until(self, now: float) -> None:
        samples: list[Sample] = []
        while self.t <= now:
            latency = latency_at(self.t, self.fixed_at)
            self.requests += 20
            for i, le in enumerate(BUCKETS):
                if latency <= le + 1e-9:
                    self.buckets[i] += 20
            samples.append(Sample(n.WORKLOAD_REQUESTS.name, LABELS, self.requests, self.t))
            for le, count in zip(BUCKETS, self.buckets, strict=True):
                samples.append(Sample(n.WORKLOAD_LATENCY.name + "_bucket", {**LABELS, "le": f"{le:g}"}, count, self.t))
            samples.append(Sample(n.WORKLOAD_LATENCY.name + "_bucket", {**LABELS, "le": "+Inf"}, self.requests, self.t))
            self.t += SCRAPE
        self.store.ingest(samples)


def sla() -> SlaSpec:
    return SlaSpec.model_validate(
        {
            "name": "gold",
            "workload": "demo",
            "period": "1d",
            "slos": [
                {
                    "name": "p99",
                    "kind": "latency",
                    "percentile": 99,
                    "threshold": 0.25,
                    "window": "1m",
                    "min_events": 0,
                },
                {"name": "errors", "kind": "error_rate", "target": 0.99, "window": "1m"},
                {"name": "spend", "kind": "cost", "threshold": 1.0},
            ],
            "policies": [
                {"action": "scale_out", "slos": ["p99"], "step": 1, "max_replicas": 3, "cooldown": "10m"},
                {"action": "notify_only", "on": ["violated"]},
            ],
        }
    )


async def test_a_ramp_is_predicted_then_violated_then_recovers(database: Database) -> None:
    now = [T0]
    store = EmbeddedMetrics(clock=lambda: now[0])
    demo = Demo(store, fixed_at=T0 + 40 * 60)
    loop = SloLoop(database, lambda: store, INTERVAL, clock=lambda: now[0])
    dispatcher = ReactionDispatcher(database, load_reactions())  # as the control plane loads them
    with database.transaction() as s:
        demo_workload = {"name": "demo", "deployment": {"command": ["true"], "replicas": 1}}
        workloads.apply_workload(s, WorkloadDescriptor.model_validate(demo_workload))
        row = slas.apply_sla(s, sla()).row
        slas.set_sla_state(s, row, SlaState.ACTIVE, "workload deployed")

    def statuses() -> dict[str, SloState]:
        with database.transaction() as s:
            return {st.slo: st.state for st in slas.slo_statuses(s, slas.get_sla(s, "default", "gold"))}

    seen: list[tuple[float, dict[str, SloState]]] = []
    recovered_at = None
    deadline = T0 + 90 * 60
    while now[0] < deadline:
        now[0] += INTERVAL
        demo.until(now[0])
        assert await loop.evaluate_once() == 3
        await dispatcher.run_once()  # the closed loop: reactions to the events this pass recorded
        seen.append((now[0], statuses()))
        if now[0] > demo.fixed_at and seen[-1][1]["p99"] is SloState.MET:
            recovered_at = now[0]
            break
    assert recovered_at is not None, "p99 never came back to Met"

    with database.transaction() as s:
        history = events.history(s, slas.sla_subject("default", "gold"))
        row = slas.get_sla(s, "default", "gold")
        assert row.state == SlaState.ACTIVE.value
        violations, total = slas.list_violations(s, sla="gold")
        final = {st.slo: st for st in slas.slo_statuses(s, row)}
        audit = list(reversed(slas.list_actions(s, row)))
        replicas = WorkloadDescriptor.model_validate(workloads.get_workload(s, "default", "demo").descriptor)
    kinds = [e.kind for e in history]
    predicted = kinds.index(EventKind.SLA_BREACH_PREDICTED)
    violated = kinds.index(EventKind.SLA_VIOLATED)
    assert predicted < violated < kinds.index(EventKind.SLA_RECOVERED)
    prediction = history[predicted]
    assert prediction.data["slo"] == "p99" and 0.9 <= prediction.data["confidence"] <= 1
    # predicted at least five minutes before the p99 crossed 250 ms (30 minutes in)
    assert prediction.created_at is not None
    first_violated = next(t for t, st in seen if st["p99"] is SloState.VIOLATED)
    assert prediction.data["predicted_at"]
    assert first_violated >= T0 + 30 * 60
    predicted_pass = next(t for t, st in seen if st["p99"] in (SloState.AT_RISK, SloState.VIOLATED))
    assert first_violated - predicted_pass >= 300
    # the violation was opened and closed, its worst value recorded
    assert total == 1 and violations[0].slo == "p99" and violations[0].ended_at is not None
    assert violations[0].worst_value is not None and violations[0].worst_value > 0.25
    # every request succeeded: Met with its budget whole; cost without a running replica: NoData, never Met
    assert final["errors"].state is SloState.MET and final["errors"].budget_remaining == 1.0
    assert final["spend"].state is SloState.NO_DATA and final["spend"].message == "no replica runs"
    assert final["p99"].budget_remaining is not None and 0 < final["p99"].budget_remaining < 1
    assert all(math.isfinite(v) for v in final["p99"].burn_rates.values())
    # the closed loop: scaled out on the prediction (once: the violation came within the cooldown), the violation
    # recorded by notify_only; both followed up when p99 was back to Met
    assert [(a.trigger, a.action) for a in audit] == [("predicted", "scale_out"), ("violated", "notify_only")]
    assert audit[0].outcome == "scaled out from 1 to 2 replicas"
    assert audit[0].predicted["slo"] == "p99" and audit[0].predicted["confidence"] >= 0.9
    assert replicas.deployment is not None and replicas.deployment.replicas == 2
    assert all(a.followup is not None and a.followup["slo_state"] == "Met" for a in audit)


async def test_no_data_never_violates_and_a_bad_sla_does_not_stop_the_pass(database: Database) -> None:
    now = [T0 + 3600]
    store = EmbeddedMetrics(clock=lambda: now[0])
    loop = SloLoop(database, lambda: store, INTERVAL, clock=lambda: now[0])
    with database.transaction() as s:
        for name in ("quiet", "broken"):
            row = slas.apply_sla(s, sla().model_copy(update={"name": name})).row
            slas.set_sla_state(s, row, SlaState.ACTIVE)
        broken = slas.get_sla(s, "default", "broken")
        broken.spec = {**broken.spec, "period": "not a duration"}  # as if written by an older, laxer version
    assert await loop.evaluate_once() == 3  # the quiet SLA's three SLOs; the broken one is skipped
    with database.transaction() as s:
        quiet = slas.get_sla(s, "default", "quiet")
        assert quiet.state == SlaState.ACTIVE.value
        assert {st.state for st in slas.slo_statuses(s, quiet)} == {SloState.NO_DATA}
        assert slas.get_sla(s, "default", "broken").message.startswith("not measured")


async def test_press_compliance_and_cost_are_read_from_the_running_replicas(database: Database) -> None:
    now = [T0]
    store = EmbeddedMetrics(clock=lambda: now[0])
    loop = SloLoop(database, lambda: store, INTERVAL, clock=lambda: now[0])
    spec = SlaSpec.model_validate(
        {
            "name": "press",
            "workload": "demo",
            "press": {"data_residency": ["DE"]},
            "slos": [
                {"name": "residency", "kind": "press_compliance"},
                {"name": "spend", "kind": "cost", "threshold": 0.05},
            ],
        }
    )
    with database.transaction() as s:
        demo_workload = {"name": "demo", "deployment": {"command": ["true"], "replicas": 2}}
        wl = workloads.apply_workload(s, WorkloadDescriptor.model_validate(demo_workload)).row
        s.flush()
        for name, country in (("de-1", "DE"), ("us-1", "US")):
            prices = {"cpu_hour_eur": 0.03, "gib_hour_eur": 0.004}
            s.add(
                ClusterRow(
                    name=name, driver="local", tier="edge", region=name, country=country, spec={"prices": prices}
                )
            )
            s.add(
                ReplicaRow(
                    id=f"demo-{name}",
                    workload_id=wl.id,
                    version=1,
                    index=0,
                    cluster=name,
                    node="n1",
                    cpu_request=1.0,
                    memory_request_mib=1024,
                    phase="Running",
                )
            )
        slas.set_sla_state(s, slas.apply_sla(s, spec).row, SlaState.ACTIVE)

    def states() -> dict[str, tuple[SloState, float | None]]:
        with database.transaction() as s:
            return {st.slo: (st.state, st.value) for st in slas.slo_statuses(s, slas.get_sla(s, "default", "press"))}

    await loop.evaluate_once()
    got = states()
    # one replica of two outside Germany; two replicas at 1 core x 0.03 + 1 GiB x 0.004 EUR/h each
    assert got["residency"] == (SloState.VIOLATED, 0.5)
    assert got["spend"][0] is SloState.VIOLATED and got["spend"][1] == pytest.approx(0.068)
    with database.transaction() as s:
        s.get(ReplicaRow, "demo-us-1").phase = "Stopped"  # type: ignore[union-attr]
    now[0] += INTERVAL
    await loop.evaluate_once()
    got = states()
    assert got["residency"] == (SloState.MET, 1.0)
    assert got["spend"][0] is SloState.MET and got["spend"][1] == pytest.approx(0.034)


async def test_the_control_plane_evaluates_the_live_slas_on_its_interval(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    settings = Settings(data_dir=tmp_path / "data", clusters_file=clusters, slo_interval=0.2)
    plane = ControlPlane(settings)
    await plane.start()
    try:
        with plane.db.transaction() as s:
            slas.set_sla_state(s, slas.apply_sla(s, sla()).row, SlaState.ACTIVE)

        def evaluated() -> bool:
            with plane.db.transaction() as s:
                return all(st.evaluated_at for st in slas.slo_statuses(s, slas.get_sla(s, "default", "gold")))

        deadline = time.monotonic() + 20
        while not evaluated():
            assert time.monotonic() < deadline, "the SLA was never evaluated"
            await asyncio.sleep(0.05)  # poll interval of the condition above
        with plane.db.transaction() as s:
            # no series at all: every SLO is NoData, and NoData never violates
            assert {st.state for st in slas.slo_statuses(s, slas.get_sla(s, "default", "gold"))} == {SloState.NO_DATA}
            assert slas.get_sla(s, "default", "gold").state == SlaState.ACTIVE.value
    finally:
        await plane.stop()


def test_an_slo_history_keeps_its_newest_points_in_order() -> None:
    history = _History()
    history.append(1.0, 10.0)
    assert [list(a) for a in history.arrays()] == [[1.0], [10.0]]
    for i in range(HISTORY_POINTS + 5):
        history.append(float(i), float(i))
    times, values = history.arrays()
    assert len(times) == HISTORY_POINTS and times[0] == 5 and times[-1] == HISTORY_POINTS + 4
    assert (values == times).all() and (np.diff(times) == 1).all()


async def test_scalability_and_incident_response_are_measured_from_the_slas_records(database: Database) -> None:
    """Scalability: seconds from a scale-out decision to the workload's next ``workload.running`` (one still
    waiting counts its time so far); incident response: MTTR of the SLA's other SLOs' violations closed in the
    window. Neither is NoData once its records exist."""
    now = time.time()
    at = datetime.fromtimestamp
    spec = SlaSpec.model_validate(
        {
            "name": "ops",
            "workload": "demo",
            "slos": [
                {"name": "p99", "kind": "latency", "threshold": 0.25},
                {"name": "scale", "kind": "scalability", "threshold": 60, "window": "1h"},
                {"name": "mttr", "kind": "incident_response", "threshold": 300, "window": "1h"},
            ],
        }
    )
    store = EmbeddedMetrics()
    loop = SloLoop(database, lambda: store, INTERVAL)
    with database.transaction() as s:
        demo_workload = {"name": "demo", "deployment": {"command": ["true"], "replicas": 1}}
        workloads.apply_workload(s, WorkloadDescriptor.model_validate(demo_workload))
        row = slas.apply_sla(s, spec).row
        slas.set_sla_state(s, row, SlaState.ACTIVE, "workload deployed")

    def states() -> dict[str, tuple[SloState, float | None]]:
        with database.transaction() as s:
            return {st.slo: (st.state, st.value) for st in slas.slo_statuses(s, slas.get_sla(s, "default", "ops"))}

    await loop.evaluate_once(now)
    assert states()["scale"][0] is SloState.NO_DATA and states()["mttr"][0] is SloState.NO_DATA
    with database.transaction() as s:
        row = slas.get_sla(s, "default", "ops")
        slas.record_action(s, row, slo="p99", trigger="predicted", predicted={}, action="scale_out",
                           outcome="scaled out from 1 to 2 replicas", at=at(now - 300, UTC))  # fmt: skip
        s.add(EventRow(kind=EventKind.WORKLOAD_RUNNING.value, subject="workload/default/demo", data={},
                       created_at=at(now - 280, UTC)))  # fmt: skip
        for start, end in ((now - 1800, now - 1680), (now - 900, now - 840), (now - 7200, now - 3700)):
            violation = slas.open_violation(s, row, "p99", value=0.5, comparison=Comparison.AT_MOST, at=at(start, UTC))
            assert violation is not None
            slas.close_violation(s, row, "p99", at=at(end, UTC))
    await loop.evaluate_once(now + 1)
    got = states()
    # 20 s to serve the new replica; violations of 120 s and 60 s closed in the hour (the third ended before it)
    assert got["scale"][0] is SloState.MET and got["scale"][1] == pytest.approx(20, abs=0.5)
    assert got["mttr"][0] is SloState.MET and got["mttr"][1] == pytest.approx(90, abs=0.5)

    with database.transaction() as s:  # a second scale-out, decided 100 s ago, still waiting
        row = slas.get_sla(s, "default", "ops")
        slas.record_action(s, row, slo="p99", trigger="violated", predicted={}, action="scale_out",
                           outcome="scaled out from 2 to 3 replicas", at=at(now - 100, UTC))  # fmt: skip
    await loop.evaluate_once(now + 2)
    assert states()["scale"][0] is SloState.VIOLATED and states()["scale"][1] == pytest.approx(102, abs=0.5)
