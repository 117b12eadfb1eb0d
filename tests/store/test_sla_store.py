"""SLAs in the store, on SQLite and PostgreSQL: versions, lifecycle events, SLO status, violations, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from nemo_kernel.domain import utcnow
from nemo_kernel.domain.sla import Comparison, SlaSpec, SlaState, SloKind, SloState, SloStatus
from nemo_kernel.store import Conflict, Database, NotFound, events, slas


def _spec(**changes: Any) -> SlaSpec:
    doc: dict[str, Any] = {
        "name": "gold",
        "workload": "demo",
        "press": {"data_residency": ["ES", "PT"]},
        "slos": [
            {"name": "p99", "kind": "latency", "threshold": 0.3, "percentile": 99},
            {"name": "up", "kind": "availability", "target": 0.995},
        ],
    }
    doc.update(changes)
    return SlaSpec.model_validate(doc)


def test_apply_versions_and_lifecycle_events(database: Database) -> None:
    with database.transaction() as s:
        assert slas.apply_sla(s, _spec()).outcome == "created"
    with database.transaction() as s:
        assert slas.apply_sla(s, _spec()).outcome == "unchanged"
        again = slas.apply_sla(s, _spec(period="28d"))
        assert (again.outcome, again.row.version, again.row.state) == ("updated", 2, "Draft")
    with database.transaction() as s:
        row = slas.get_sla(s, "default", "gold")
        assert slas.set_sla_state(s, row, SlaState.ACTIVE, "workload deployed")
        assert not slas.set_sla_state(s, row, SlaState.ACTIVE)  # already there: no second event
        slas.set_sla_state(s, row, SlaState.VIOLATED)
        slas.set_sla_state(s, row, SlaState.ACTIVE)
        slas.set_sla_state(s, row, SlaState.TERMINATED)
        with pytest.raises(Conflict):
            slas.set_sla_state(s, row, SlaState.VIOLATED)
    with database.transaction() as s:
        kinds = [e.kind for e in events.history(s, "sla/default/gold")]
        assert kinds == [
            "sla.applied",
            "sla.applied",
            "sla.activated",
            "sla.violated",
            "sla.recovered",
            "sla.terminated",
        ]
        assert slas.active_slas(s) == []
        # applying a terminated SLA again is a new version, back to Draft
        reborn = slas.apply_sla(s, _spec(period="28d"))
        assert (reborn.outcome, reborn.row.version, reborn.row.state) == ("updated", 3, "Draft")


def test_list_filters_sort_and_pages(database: Database) -> None:
    with database.transaction() as s:
        for name, workload in (("a", "demo"), ("b", "other"), ("c", None)):
            slas.apply_sla(s, _spec(name=name, workload=workload))
        slas.apply_sla(s, _spec(name="d", slos=[{"name": "cost", "kind": "cost", "threshold": 2.0}], press={}))
        slas.set_sla_state(s, slas.get_sla(s, "default", "b"), SlaState.ACTIVE)
    with database.transaction() as s:
        rows, total = slas.list_slas(s, sort="-name", limit=2)
        assert ([r.name for r in rows], total) == (["d", "c"], 4)
        rows, total = slas.list_slas(s, sort="-name", limit=2, offset=2)
        assert [r.name for r in rows] == ["b", "a"]
        assert [r.name for r in slas.list_slas(s, workload="demo")[0]] == ["a", "d"]
        assert [r.name for r in slas.list_slas(s, state=SlaState.ACTIVE)[0]] == ["b"]
        assert [r.name for r in slas.list_slas(s, kind=SloKind.COST)[0]] == ["d"]
        assert [r.name for r in slas.active_slas(s)] == ["b"]
        # a namespace-wide SLA binds every workload of its namespace
        assert [r.name for r in slas.slas_of_workload(s, "default", "demo", live_only=False)] == ["a", "c", "d"]
        with pytest.raises(ValueError, match="sort"):
            slas.list_slas(s, sort="password")


def test_status_is_nodata_until_recorded(database: Database) -> None:
    with database.transaction() as s:
        row = slas.apply_sla(s, _spec()).row
    with database.transaction() as s:
        row = slas.get_sla(s, "default", "gold")
        assert [(st.slo, st.state, st.evaluated_at) for st in slas.slo_statuses(s, row)] == [
            ("p99", SloState.NO_DATA, None),
            ("up", SloState.NO_DATA, None),
        ]
        predicted = utcnow() + timedelta(minutes=7)
        slas.record_slo_status(
            s,
            row,
            SloStatus(
                slo="p99",
                kind=SloKind.LATENCY,
                state=SloState.AT_RISK,
                value=0.28,
                target=0.99,
                budget_remaining=0.4,
                burn_rates={"5m": 14.9, "1h": 7.0},
                predicted_breach_at=predicted,
                confidence=0.8,
            ),
        )
    with database.transaction() as s:
        first = slas.slo_statuses(s, slas.get_sla(s, "default", "gold"))[0]
        assert (first.state, first.value, first.burn_rates, first.confidence) == (
            SloState.AT_RISK,
            0.28,
            {"5m": 14.9, "1h": 7.0},
            0.8,
        )
        assert first.predicted_breach_at == predicted
        # a new version without that SLO forgets its status
        slas.apply_sla(s, _spec(slos=[{"name": "up", "kind": "availability"}]))
    with database.transaction() as s:
        assert [st.slo for st in slas.slo_statuses(s, slas.get_sla(s, "default", "gold"))] == ["up"]


def test_violations_open_worsen_close(database: Database) -> None:
    with database.transaction() as s:
        row = slas.apply_sla(s, _spec()).row
        first, new = slas.open_violation(s, row, "p99", value=0.5, comparison=Comparison.AT_MOST)
        assert new
        same, new = slas.open_violation(s, row, "p99", value=0.9, comparison=Comparison.AT_MOST, breach_level="page")
        assert (same.id, new, same.worst_value) == (first.id, False, 0.9)
        slas.open_violation(s, row, "p99", value=0.6, comparison=Comparison.AT_MOST)
    with database.transaction() as s:
        found, total = slas.list_violations(s, open_only=True)
        assert (total, found[0].worst_value, found[0].sla, found[0].ended_at) == (1, 0.9, "gold", None)
        assert slas.close_violation(s, slas.get_sla(s, "default", "gold"), "p99") is not None
        assert slas.close_violation(s, slas.get_sla(s, "default", "gold"), "p99") is None
    with database.transaction() as s:
        assert slas.list_violations(s, open_only=True) == ([], 0)
        closed, _ = slas.list_violations(s, sla="gold")
        assert closed[0].ended_at is not None


def test_actions_audit_with_followup(database: Database) -> None:
    with database.transaction() as s:
        row = slas.apply_sla(s, _spec()).row
        action = slas.record_action(
            s,
            row,
            slo="p99",
            trigger="predicted",
            predicted={"breach_at": "2026-12-01T13:00:00Z", "confidence": 0.9},
            action="scale_out",
            outcome="done: 2 -> 3 replicas",
        )
        action_id = action.id
    with database.transaction() as s:
        row = slas.get_sla(s, "default", "gold")
        assert [a.id for a in slas.list_actions(s, row, pending_followup=True)] == [action_id]
        slas.record_followup(s, action_id, {"slo_state": "Met"})
        with pytest.raises(NotFound):
            slas.record_followup(s, 10**6, {})
    with database.transaction() as s:
        row = slas.get_sla(s, "default", "gold")
        assert slas.list_actions(s, row, pending_followup=True) == []
        (audit,) = slas.list_actions(s, row)
        assert (audit.action, audit.followup, audit.predicted["confidence"]) == ("scale_out", {"slo_state": "Met"}, 0.9)
        assert [e.kind for e in events.history(s, "sla/default/gold")][-1] == "sla.action"


def test_residency_intersects_slas_until_terminated(database: Database) -> None:
    with database.transaction() as s:
        assert slas.residency_of_workload(s, "default", "demo") is None
        a = slas.apply_sla(s, _spec(name="a")).row
        # a Draft constrains the first placement of its workload already
        assert slas.residency_of_workload(s, "default", "demo") == ["ES", "PT"]
        b = slas.apply_sla(s, _spec(name="b", workload=None, press={"data_residency": ["PT", "FR"]})).row
        assert slas.residency_of_workload(s, "default", "demo") == ["PT"]
        assert slas.residency_of_workload(s, "default", "elsewhere") == ["FR", "PT"]
        assert slas.residency_of_workload(s, "other-ns", "demo") is None
        # a pass reads many workloads' residency at once: each gets what it would get alone
        many = [("default", "demo"), ("default", "elsewhere"), ("other-ns", "demo"), ("other-ns", "elsewhere")]
        assert slas.residency_of_workloads(s, many) == {
            ("default", "demo"): ["PT"],
            ("default", "elsewhere"): ["FR", "PT"],
            ("other-ns", "demo"): None,
            ("other-ns", "elsewhere"): None,
        }
        slas.set_sla_state(s, b, SlaState.TERMINATED)
        assert slas.residency_of_workload(s, "default", "demo") == ["ES", "PT"]
        slas.set_sla_state(s, a, SlaState.TERMINATED)
        assert slas.residency_of_workload(s, "default", "demo") is None
