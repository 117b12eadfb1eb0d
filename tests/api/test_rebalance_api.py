"""The rebalancer through a served control plane on simulated clusters: the periodic loop (NEMO_REBALANCE_INTERVAL)
plans and applies on its own, moving a replica to the cheaper, greener cluster once it may; a plan's answer holds a
page of its moves with their count, and the rest page by page; bad paging is refused naming the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.served_api import served_api
from tests.stack import wait_for

from nemo_kernel.domain import MOVES_PAGE, EventKind, MoveState, RebalanceState
from nemo_kernel.orchestrator.commands.rebalance import REBALANCER
from nemo_kernel.store import rebalances, workloads
from nemo_kernel.store.tables import RebalanceMoveRow, RebalanceRow


def _cluster(name: str, price: float, intensity: float) -> dict[str, Any]:
    return {
        "name": name,
        "tier": "cloud",
        "region": "eu",
        "country": "ES",
        "prices": {"cpu_hour_eur": price, "gib_hour_eur": price / 8},
        "carbon_intensity": intensity,
        "nodes": [{"name": f"{name}-n1", "cpu": 8, "memory_mib": 8192}],
    }


CLUSTERS = [_cluster("costly", 0.10, 700.0), _cluster("cheap", 0.02, 50.0)]
WORKLOAD = {"name": "web", "deployment": {"command": ["serve"], "resources": {"cpu": 1, "memory_mib": 512}}}


def _replicas(api: Any) -> list[tuple[str, str]]:
    replicas = api.api("GET", "/workloads/web").json()["replicas"]
    return sorted((r["cluster"], r["phase"]) for r in replicas)


def test_the_periodic_rebalance_moves_a_replica_once_a_better_cluster_opens(tmp_path: Path) -> None:
    with served_api(tmp_path, CLUSTERS, rebalance_interval=1.0) as api:
        wait_for(lambda: all(c["phase"] == "Ready" for c in api.api("GET", "/clusters").json()), 30, "clusters Ready")
        assert api.api("POST", "/clusters/cheap/cordon").status_code == 200
        assert api.api("POST", "/workloads", json=WORKLOAD).status_code == 201
        wait_for(lambda: _replicas(api) == [("costly", "Running")], 30, "web running on costly")
        running = max((p["id"] for p in api.api("GET", "/rebalance").json()), default=0)
        # Cordoned, cheap is refused by a filter: the periodic plans consider web and move nothing.
        kept = wait_for(lambda: _periodic(api, moving=False, after=running), 30, "a periodic plan that moves nothing")
        assert kept["message"] == "not applied: every replica is already where it is best", kept
        assert not kept["pinned"] and kept["state"] == RebalanceState.PLANNED, kept

        assert api.api("POST", "/clusters/cheap/uncordon").status_code == 200
        plan = wait_for(lambda: _periodic(api, moving=True), 60, "a periodic plan that moves web")
        assert plan["apply"] and plan["solver_status"] == "optimal", plan
        assert [(m["workload"], m["from_cluster"], m["to_cluster"]) for m in plan["moves"]] == [
            ("default/web", "costly", "cheap")
        ]
        # Applied make-before-break through a migration: web ends on cheap, and the plan says so.
        wait_for(lambda: _replicas(api) == [("cheap", "Running")], 60, "web running on cheap")
        done = wait_for(
            lambda: (p := api.api("GET", f"/rebalance/{plan['id']}").json())["state"] == RebalanceState.APPLIED and p,
            60,
            "the plan applied",
        )
        assert [m["state"] for m in done["moves"]] == [MoveState.DONE]
        # Moved once: within its cooldown the next periodic plans keep it where it is.
        later = wait_for(lambda: _periodic(api, moving=False, after=plan["id"]), 30, "a later periodic plan")
        assert later["pinned"] == {"default/web": "moved by the rebalancer within NEMO_REBALANCE_COOLDOWN"}


def _periodic(api: Any, *, moving: bool, after: int = 0) -> dict[str, Any] | None:
    """The latest plan the periodic loop stored after plan ``after``, that moves something (or nothing)."""
    for plan in api.api("GET", "/rebalance").json():
        if plan["requested_by"] == REBALANCER and plan["id"] > after and (plan["moves_total"] > 0) == moving:
            return dict(plan)
    return None


def _move(workload_id: int, index: int) -> RebalanceMoveRow:
    return RebalanceMoveRow(
        workload_id=workload_id,
        workload="default/web",
        replica=f"r{index}",
        index=index,
        from_cluster="costly",
        from_node="costly-n1",
        to_cluster="cheap",
        to_node="cheap-n1",
        saving_eur_h=0.01,
        saving_gco2_h=1.0,
        criterion="cost",
        state="skipped",
        reason="not applied",
    )


def test_a_plan_answers_a_page_of_its_moves_and_the_rest_on_request(tmp_path: Path) -> None:
    total = MOVES_PAGE * 2 + 37
    with served_api(tmp_path, CLUSTERS) as api:
        assert api.api("POST", "/workloads", json=WORKLOAD).status_code == 201
        with api.plane.db.transaction() as s:  # a plan as big as a fleet-wide rebalance stores
            web = workloads.get_workload(s, "default", "web").id
            row = RebalanceRow(state="planned", apply=False, solver_status="optimal", message="big",
                               totals={"before": {"eur_h": 1.0, "gco2_h": 1.0}, "after": {"eur_h": 0.5, "gco2_h": 0.5}},
                               solve_seconds=1.0, pinned={}, requested_by="test")  # fmt: skip
            moves = [_move(web, i) for i in range(total)]
            plan_id = rebalances.create_rebalance(s, row, moves, event=EventKind.REBALANCE_PLANNED, data={}).id

        first = api.api("GET", f"/rebalance/{plan_id}").json()
        assert first["moves_total"] == total
        assert [m["index"] for m in first["moves"]] == list(range(MOVES_PAGE))
        listed = api.api("GET", "/rebalance").json()
        assert [(p["id"], p["moves_total"], len(p["moves"])) for p in listed] == [(plan_id, total, MOVES_PAGE)]

        pages: list[int] = []
        offset = 0
        while offset < total:
            page = api.api("GET", f"/rebalance/{plan_id}", params={"offset": offset, "limit": 90}).json()
            assert page["moves_total"] == total
            pages += [m["index"] for m in page["moves"]]
            offset += 90
        assert pages == list(range(total))
        assert api.api("GET", f"/rebalance/{plan_id}", params={"offset": total}).json()["moves"] == []

        for params, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
                              ({"limit": "x"}, "limit")):  # fmt: skip
            refused = api.api("GET", f"/rebalance/{plan_id}", params=params)
            assert refused.status_code == 422, refused.text
            assert [d["field"] for d in refused.json()["error"]["details"]] == [f"query.{field}"], refused.text
