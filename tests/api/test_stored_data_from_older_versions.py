"""A workload stored by an older NEMO, whose descriptor this version's checks refuse, does not break the API: the
list still answers, the workload shows why, and it can be deleted or applied again."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from tests.served_api import served_api
from tests.stack import wait_for

from nemo_kernel.store.tables import WorkloadRow

CLUSTERS = [
    {
        "name": "edge",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "nodes": [{"name": "edge-n1", "cpu": 4, "memory_mib": 4096}],
    }
]


def _workload(name: str) -> dict[str, object]:
    return {"name": name, "deployment": {"command": ["serve"], "resources": {"cpu": 0.5, "memory_mib": 64}}}


def test_a_stored_descriptor_that_no_longer_validates_is_listed_with_the_reason(tmp_path: Path) -> None:
    with served_api(tmp_path, CLUSTERS) as api:
        for name in ("old", "fine"):
            assert api.api("POST", "/workloads", json=_workload(name)).status_code == 201
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
        assert api.api("GET", "/workloads/old").json()["descriptor"] is None

        # Applied again, corrected, it reads as usual; deleted, it goes.
        assert api.api("POST", "/workloads", json=_workload("old")).status_code == 200
        assert api.api("GET", "/workloads/old").json()["descriptor"]["name"] == "old"
        assert api.api("DELETE", "/workloads/old").status_code in (200, 202)
        wait_for(lambda: api.api("GET", "/workloads/old").status_code == 404, 30, "old deleted")
