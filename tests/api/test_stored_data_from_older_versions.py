"""A workload, cluster or SLA stored by an older NEMO, whose stored document this version's checks refuse, does not
break the API, the CLI or the loops: the list still answers, the object shows why, the others go on, and it can be
deleted or applied again."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from tests.cli.test_metrics_cli import nemo
from tests.served_api import ServedApi, served_api
from tests.stack import wait_for

from nemo_kernel.store.tables import ClusterRow, SlaRow, WorkloadRow

CLUSTERS = [
    {
        "name": "edge",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "nodes": [{"name": "edge-n1", "cpu": 4, "memory_mib": 4096}],
    },
    {
        "name": "old-edge",
        "tier": "edge",
        "region": "eu-west",
        "country": "FR",
        "nodes": [{"name": "old-n1", "cpu": 4, "memory_mib": 4096}],
    },
]


def _workload(name: str) -> dict[str, object]:
    return {"name": name, "deployment": {"command": ["serve"], "resources": {"cpu": 0.5, "memory_mib": 64}}}


def test_a_stored_descriptor_that_no_longer_validates_is_listed_with_the_reason(tmp_path: Path) -> None:
    with served_api(tmp_path, CLUSTERS) as api:
        for name in ("old", "fine"):
            assert api.api("POST", "/workloads", json=_workload(name)).status_code == 201
        wait_for(lambda: api.api("GET", "/workloads/old").json()["phase"] == "Running", 60, "old running")
        # As an older NEMO stored it: a country code that this version no longer accepts.
        with api.plane.db.transaction() as s:
            stored = s.get(WorkloadRow, 1)
            assert stored is not None and stored.name == "old"
            descriptor = dict(stored.descriptor)
            deployment = dict(descriptor["deployment"])
            deployment["placement"] = {"countries": ["XX"]}
            descriptor["deployment"] = deployment
            s.execute(update(WorkloadRow).where(WorkloadRow.id == 1).values(descriptor=descriptor))

        listed = api.api("GET", "/workloads")
        assert listed.status_code == 200, listed.text
        by_name = {w["name"]: w for w in listed.json()}
        assert by_name["fine"]["descriptor"]["deployment"]["command"] == ["serve"]
        old = by_name["old"]
        assert old["descriptor"] is None
        assert "deployment.placement.countries" in old["message"] and "apply it again" in old["message"], old
        # Its replica still runs; how many it asks for this version cannot read: unknown, not 0 ("1/0")
        assert (old["ready_replicas"], old["desired_replicas"]) == (1, None), old
        shown = nemo(api, "workload", "list").stdout
        [row] = [line for line in shown.splitlines() if " old " in line]
        assert " 1/? " in row and "1/0" not in row, shown
        assert api.api("GET", "/workloads/old").json()["descriptor"] is None
        # What needs the descriptor says why it cannot (409), not that the request was wrong (422).
        for method, path, body in [
            ("GET", "/workloads/old/placement/nodes", None),
            ("POST", "/migrations", {"workload": "default/old", "to": {"cluster": "edge"}}),
        ]:
            refused = api.api(method, path, json=body)
            assert refused.status_code == 409 and "apply it again" in refused.json()["error"]["message"], refused.text
        # The rebalancer plans for the others (it was a 422 naming the old workload's field, for everyone).
        wait_for(lambda: api.api("GET", "/workloads/fine").json()["phase"] == "Running", 60, "fine running")
        planned = api.api("POST", "/rebalance", json={})
        assert planned.status_code == 200, planned.text

        # Applied again, corrected, it reads as usual; deleted, it goes.
        assert api.api("POST", "/workloads", json=_workload("old")).status_code == 200
        assert api.api("GET", "/workloads/old").json()["descriptor"]["name"] == "old"
        assert api.api("DELETE", "/workloads/old").status_code in (200, 202)
        wait_for(lambda: api.api("GET", "/workloads/old").status_code == 404, 30, "old deleted")


def _store_as_an_older_nemo(
    api: ServedApi, table: type[ClusterRow] | type[SlaRow], name: str, **changes: object
) -> None:
    with api.plane.db.transaction() as s:
        row = s.scalars(select(table).where(table.name == name)).one()
        spec = {**row.spec, **changes}
        s.execute(update(table).where(table.id == row.id).values(spec=spec))


def test_a_stored_cluster_that_no_longer_validates_costs_only_itself(tmp_path: Path) -> None:
    with served_api(tmp_path, CLUSTERS) as api:
        wait_for(lambda: {c["phase"] for c in api.api("GET", "/clusters").json()} == {"Ready"}, 60, "clusters ready")
        deployment = {"command": ["serve"], "placement": {"clusters": ["old-edge"]}}
        assert api.api("POST", "/workloads", json={"name": "pinned", "deployment": deployment}).status_code == 201
        wait_for(lambda: api.api("GET", "/workloads/pinned").json()["phase"] == "Running", 60, "pinned running")
        before = api.api("GET", "/workloads/pinned").json()["replicas"]
        _store_as_an_older_nemo(api, ClusterRow, "old-edge", country="XX", region="eu\nwest")

        # Not managed, and shown so (not Ready from a heartbeat nobody asks any more), with one clear event.
        wait_for(lambda: api.api("GET", "/clusters/old-edge").json()["phase"] == "Unmanaged", 30, "old-edge refused")
        listed = api.api("GET", "/clusters")
        assert listed.status_code == 200, listed.text
        by_name = {c["name"]: c for c in listed.json()}
        assert by_name["edge"]["spec"]["country"] == "ES"
        old = by_name["old-edge"]
        assert old["spec"] is None
        assert "region" in old["message"] and "register it again" in old["message"], old
        assert "Value error" not in old["message"]  # pydantic's prefix, as in every other message
        assert api.api("GET", "/clusters/old-edge").json()["spec"] is None
        [failed] = [e for e in api.api("GET", "/clusters/old-edge/events").json() if e["kind"] == "cluster.failed"]
        assert "region" in failed["message"] and "replicas are left as they are" in failed["message"], failed
        assert "Value error" not in failed["message"] and "pydantic" not in failed["message"], failed
        assert "old-edge" not in api.plane.resources.managed()
        assert not any(n["ready"] for n in api.api("GET", "/clusters/old-edge/nodes").json())
        shown = nemo(api, "cluster", "list")  # the CLI's table too
        assert "old-edge" in shown.stdout and "Unmanaged" in shown.stdout, shown.stdout

        # Its replicas are left as they are (a row edited by mistake does not empty a cluster), and shown as nobody
        # observes them: phase Unknown (as Kubernetes shows a pod of a lost node), not ready, the workload saying why
        pinned = api.api("GET", "/workloads/pinned").json()
        assert [(r["id"], r["cluster"]) for r in pinned["replicas"]] == [(r["id"], r["cluster"]) for r in before]
        assert [r["id"] for r in before] == list(api.memory.clusters["old-edge"].replicas)
        [unobserved] = pinned["replicas"]
        assert unobserved["phase"] == "Unknown", unobserved
        assert "old-edge" in unobserved["message"] and "last reported Running" in unobserved["message"], unobserved
        assert pinned["ready_replicas"] == 0 and "not observed" in pinned["message"], pinned
        listed = nemo(api, "workload", "list")
        assert "0/1" in listed.stdout and "not observed" in listed.stdout, listed.stdout
        # ... and the loops go on for the others: a new workload is placed and runs on the cluster that reads.
        assert api.api("POST", "/workloads", json=_workload("web")).status_code == 201
        wait_for(lambda: api.api("GET", "/workloads/web").json()["phase"] == "Running", 60, "web running")
        [replica] = api.api("GET", "/workloads/web").json()["replicas"]
        assert replica["cluster"] == "edge"

        # Stored again as this version accepts it, it is managed again.
        _store_as_an_older_nemo(api, ClusterRow, "old-edge", country="FR", region="eu-west")
        wait_for(lambda: api.api("GET", "/clusters/old-edge").json()["phase"] == "Ready", 30, "old-edge managed")
        observed = api.api("GET", "/workloads/pinned").json()  # observed again: its cluster's report, as before
        assert [(r["id"], r["phase"]) for r in observed["replicas"]] == [(r["id"], "Running") for r in before]
        assert observed["ready_replicas"] == 1 and "not observed" not in observed["message"], observed
        assert "old-edge" in api.plane.resources.managed()
        # a list validates again what changed since the last one (the others come from its cache, by stored text)
        listed_again = {c["name"]: c for c in api.api("GET", "/clusters").json()}
        assert listed_again["old-edge"]["spec"]["country"] == "FR" and listed_again["old-edge"]["message"] == ""

        # Removed, and registered again, it is managed again.
        assert api.api("DELETE", "/clusters/old-edge").status_code == 204
        again = {**CLUSTERS[1], "driver": "sim"}
        assert api.api("POST", "/clusters", json=again).status_code == 201
        wait_for(lambda: api.api("GET", "/clusters/old-edge").json()["phase"] == "Ready", 60, "old-edge ready")


def test_a_stored_sla_that_no_longer_validates_is_listed_with_the_reason(tmp_path: Path) -> None:
    sla = {"name": "gold", "workload": "web", "slos": [{"name": "up", "kind": "availability", "window": "1h"}]}
    with served_api(tmp_path, CLUSTERS) as api:
        assert api.api("POST", "/workloads", json=_workload("web")).status_code == 201
        for name in ("gold", "silver"):
            applied = api.api("POST", "/slas", json={**sla, "name": name})
            assert applied.status_code == 201, applied.text
        _store_as_an_older_nemo(api, SlaRow, "gold", slos=[{"name": "up", "kind": "availability", "window": "1ms"}])

        listed = api.api("GET", "/slas")
        assert listed.status_code == 200, listed.text
        by_name = {s["name"]: s for s in listed.json()}
        assert by_name["silver"]["spec"]["slos"][0]["window"] == "1h"
        gold = by_name["gold"]
        assert gold["spec"] is None
        assert "slos[0].window" in gold["message"] and "apply it again" in gold["message"], gold
        assert api.api("GET", "/slas/gold").json()["spec"] is None
        status = api.api("GET", "/slas/gold/status")
        assert status.status_code == 200 and [s["slo"] for s in status.json()["slos"]] == ["up"], status.text
        rules = api.api("GET", "/slas/gold/rules")
        assert rules.status_code == 409 and "apply it again" in rules.json()["error"]["message"], rules.text
        shown = nemo(api, "sla", "list")
        assert "gold" in shown.stdout and "silver" in shown.stdout, shown.stdout

        # Applied again, corrected, it reads as usual; deleted, it goes.
        assert api.api("POST", "/slas", json=sla).status_code == 200
        assert api.api("GET", "/slas/gold").json()["spec"]["slos"][0]["window"] == "1h"
        assert api.api("DELETE", "/slas/gold").status_code == 200
