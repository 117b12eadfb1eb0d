"""Prometheus out: ``/federate`` and ``/metrics`` of the control plane serve the series of the embedded store.

In process (the app on a real ``ControlPlane`` over SQLite, no clusters), with real tokens of the built-in issuer;
the parsing check is Prometheus' own client library.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nemo_kernel.access.issuer import IdentityAdmin
from nemo_kernel.api import create_app
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.config import Settings
from nemo_kernel.metrics.model import Sample
from nemo_kernel.orchestrator import ControlPlane


@dataclass
class Api:
    http: TestClient
    plane: ControlPlane
    tokens: dict[str, str]  # role -> bearer token

    def get(self, path: str, role: str | None = "viewer", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return self.http.get(path, params=params, headers=headers)


@contextmanager
def serving(root: Path, **settings: Any) -> Iterator[Api]:
    """The app on a real control plane over SQLite in ``root`` (no clusters), with an admin's and a viewer's
    tokens of the built-in issuer."""
    (root / "clusters.yaml").write_text("clusters: []\n")
    config = Settings(data_dir=root / "data", clusters_file=root / "clusters.yaml", **settings)
    plane = ControlPlane(config)
    access = ApiAccess.from_settings(config, plane.db, "http://testserver")
    assert access.realm is not None
    app = create_app(plane, access)
    with TestClient(app) as http:
        realm = access.realm
        admin = IdentityAdmin(realm.users, realm.clients, realm.hasher)
        issued = asyncio.run(admin.ensure_admin_client())
        assert issued is not None

        def token(client_id: str, secret: str) -> str:
            grant = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
            response = http.post("/realms/nemo/protocol/openid-connect/token", data=grant)
            response.raise_for_status()
            return str(response.json()["access_token"])

        admin_token = token(issued.client.client_id, issued.secret)
        body = {"client_id": "test-viewer", "roles": ["nemo-viewer"], "grant_types": ["client_credentials"]}
        made = http.post("/api/v1/clients", json=body, headers={"Authorization": f"Bearer {admin_token}"})
        yield Api(http, plane, {"admin": admin_token, "viewer": token("test-viewer", made.json()["secret"])})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(tmp_path_factory.mktemp("federate")) as served:
        yield served


def _samples_at(now: float) -> list[Sample]:
    cpu = "nemo_replica_cpu_seconds_total"
    return [
        Sample("nemo_replica_cpu_seconds_total", {"replica": "r1", "workload": "demo", "cluster": "c1"}, 12.5, now - 2),
        Sample("nemo_replica_cpu_seconds_total", {"replica": "r1", "workload": "demo", "cluster": "c1"}, 13.0, now - 1),
        Sample("nemo_replica_cpu_seconds_total", {"replica": "r2", "workload": "other", "cluster": "c2"}, 3.0, now - 1),
        Sample("nemo_node_power_watts", {"node": "n1", "cluster": "c1"}, 42.0, now - 1),
        Sample(cpu, {"replica": "gone", "workload": "old", "cluster": "c1"}, 1.0, now - 900),
        Sample("http_requests_total", {"replica": "r1", "path": 'a"b\\c'}, 7.0, now - 1),
    ]


@pytest.fixture(scope="module")
def now(api: Api) -> float:
    """When the samples were written: /federate looks back 5 minutes from the request, so the samples are stamped
    as the module's tests start, not when the suite was collected (which may be many minutes earlier)."""
    stamp = time.time()
    api.plane.metrics_store.ingest(_samples_at(stamp))
    return stamp


@pytest.fixture(autouse=True)
def _samples(now: float) -> None:
    """Every test of the module sees the samples."""


def _series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float | None]]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): (s.value, s.timestamp)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_federate_serves_the_newest_sample_of_each_selected_series(api: Api, now: float) -> None:
    response = api.get(
        "/federate", **{"match[]": ['nemo_replica_cpu_seconds_total{workload="demo"}', "nemo_node_power_watts"]}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    series = _series(response.text)
    assert series == {
        ("nemo_replica_cpu_seconds_total", (("cluster", "c1"), ("replica", "r1"), ("workload", "demo"))): (
            13.0,
            pytest.approx(now - 1, abs=1e-3),
        ),
        ("nemo_node_power_watts", (("cluster", "c1"), ("node", "n1"))): (42.0, pytest.approx(now - 1, abs=1e-3)),
    }


def test_federate_takes_prometheus_style_selectors_without_a_name(api: Api) -> None:
    response = api.get("/federate", **{"match[]": ['{__name__=~"nemo_.+",cluster="c2"}', '{path=~".+"}']})
    names = {(name, dict(labels).get("replica")) for name, labels in _series(response.text)}
    assert names == {("nemo_replica_cpu_seconds_total", "r2"), ("http_requests_total", "r1")}
    assert dict(next(k for k in _series(response.text) if k[0] == "http_requests_total")[1])["path"] == 'a"b\\c'


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({}, "give at least one match[] selector"),
        ({"match[]": "rate(up[5m])"}, "unknown function 'rate'"),
        ({"match[]": ["up", '{job=~".*"}']}, "match[] #2: selector: needs a metric name or a matcher"),
        ({"match[]": 'up{a=~"("}'}, "bad regular expression for label 'a'"),
        ({"match[]": ["up", 'up{a="\x00"}']}, "match[] #2: selector: control character '\\x00'"),
        ({"match[]": ["up"] * 65}, "at most 64 match[] selectors"),
    ],
)
def test_a_bad_federation_request_is_400_with_the_reason(api: Api, params: dict[str, object], says: str) -> None:
    response = api.get("/federate", **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_selector"
    assert says in error["message"]
    assert error["details"][0]["field"].startswith("match[")


def test_federate_needs_a_token_and_metrics_keeps_its_counters_open(api: Api) -> None:
    refused = api.get("/federate", role=None, **{"match[]": "up"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"]
    anonymous = api.get("/metrics", role=None)
    assert anonymous.status_code == 200
    assert "# TYPE nemo_bus_refused_total counter" in anonymous.text
    assert "nemo_replica_cpu_seconds_total" not in anonymous.text
    bad = api.http.get("/metrics", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401


def test_metrics_with_a_viewer_token_adds_every_collected_series(api: Api) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert "# TYPE nemo_bus_refused_total counter" in response.text
    series = _series(response.text)
    assert {"nemo_replica_cpu_seconds_total", "nemo_node_power_watts"} <= {name for name, _ in series}
    replicas = {dict(labels).get("replica") for name, labels in series if name == "nemo_replica_cpu_seconds_total"}
    assert replicas == {"r1", "r2"}  # "gone" is older than the 5-minute lookback


LIMIT = 10


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A control plane whose answers hold at most LIMIT series, holding more: 30 series of a workload's own and
    LIMIT of NEMO's links, one more of a node (the process' own counters are not in the count)."""
    with serving(tmp_path_factory.mktemp("federate-bounded"), federate_max_series=LIMIT) as served:
        now = time.time()
        own = [Sample("app_jobs_total", {"replica": "r1", "shard": str(i)}, float(i), now - 1) for i in range(30)]
        links = [
            Sample("nemo_link_rtt_seconds", {"cluster": "c1", "peer": f"p{i}"}, 0.01, now - 1) for i in range(LIMIT)
        ]
        served.plane.metrics_store.ingest(
            [*own, *links, Sample("nemo_node_power_watts", {"node": "n1"}, 42.0, now - 1)]
        )
        yield served


def test_federate_refuses_more_series_than_the_limit_naming_match_and_the_limit(bounded: Api) -> None:
    before = bounded.plane.metrics_store.series_count()
    refused = bounded.get("/federate", **{"match[]": "app_jobs_total"})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "too_many_series"
    assert "more than 10 series" in error["message"] and "NEMO_FEDERATE_MAX_SERIES" in error["message"]
    assert error["details"] == [{"field": "match[]", "message": error["message"], "limit": LIMIT}]
    # the same series split over three scrapes are served, and nothing changed
    parts = [bounded.get("/federate", **{"match[]": f'app_jobs_total{{shard=~"{r}"}}'}) for r in ("[0-9]", "1.", "2.")]
    assert [p.status_code for p in parts] == [200, 200, 200]
    assert sum(len(_series(p.text)) for p in parts) == 30
    assert bounded.plane.metrics_store.series_count() == before


def test_federate_at_the_limit_answers(bounded: Api) -> None:
    response = bounded.get("/federate", **{"match[]": "nemo_link_rtt_seconds"})
    assert response.status_code == 200, response.text
    assert len(_series(response.text)) == LIMIT
    over = bounded.get("/federate", **{"match[]": ["nemo_link_rtt_seconds", "nemo_node_power_watts"]})
    assert over.status_code == 422 and over.json()["error"]["details"][0]["limit"] == LIMIT


def test_metrics_serves_nemo_series_only_and_is_bounded_too(api: Api, bounded: Api) -> None:
    # A store full of a workload's own series does not weigh on /metrics: they are /federate's.
    served = _series(api.get("/metrics").text)
    assert "http_requests_total" not in {name for name, _ in served}
    refused = bounded.get("/metrics")  # NEMO's own series, 11, are over the limit of 10
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "too_many_series" and error["details"][0]["field"] == "NEMO_FEDERATE_MAX_SERIES"
    assert "/federate" in error["message"]
    anonymous = bounded.get("/metrics", role=None)  # the process' own counters never depend on the store
    assert anonymous.status_code == 200 and "nemo_bus_refused_total" in anonymous.text
