"""SLAs through a running `nemo up` (REST and CLI): lifecycle, bad input, filters and pages, roles, OpenSLO in and
out, violations, and Prometheus rules checked and tested by promtool."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.stack import Stack, expect_error, running_stack, wait_for

from nemo_kernel.domain.sla import Comparison
from nemo_kernel.store import Database, slas

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

SLEEPER = {"name": "shop", "deployment": {"command": ["sleep", "600"], "replicas": 1}}
DEMO = {"name": "demo", "deployment": {"command": ["sleep", "600"], "replicas": 1}}  # what examples/sla-demo.yaml binds


def _sla(name: str = "gold", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "workload": "shop",
        "period": "7d",
        "press": {"data_residency": ["ES", "DE", "FR"]},
        "slos": [
            {"name": "errors", "kind": "error_rate", "target": 0.999},
            {"name": "p99", "kind": "latency", "threshold": 0.3, "percentile": 99},
        ],
    }
    doc.update(changes)
    return doc


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"slas-{request.param}")
    env = {"NEMO_RECONCILE_INTERVAL": "0.3", "NEMO_WEBHOOK_HOSTS": "hooks.example.com"}  # the OpenSLO target
    if request.param == "postgresql":  # a database of its own for the module's whole stack
        name = f"nemo_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env["NEMO_DATABASE_URL"] = f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"

        def drop() -> None:
            with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        request.addfinalizer(drop)
    with running_stack(root / "data", env) as s:
        # the clusters first: placing while the agents start contends for SQLite's write lock (see the report)
        wait_for(lambda: {c["phase"] for c in s.api("GET", "/clusters").json()} == {"Ready"}, 60, "clusters ready")
        for workload in (SLEEPER, DEMO):
            created = s.api("POST", "/workloads", json=workload)
            assert created.status_code == 201, created.text
        for name in ("shop", "demo"):
            wait_for(lambda n=name: s.api("GET", f"/workloads/{n}").json()["phase"] == "Running", 60, f"{name} running")
        yield s


def _state(stack: Stack, name: str) -> str:
    return str(stack.api("GET", f"/slas/{name}").json()["state"])


def _kinds(stack: Stack, name: str) -> list[str]:
    return [e["kind"] for e in stack.api("GET", f"/slas/{name}/events").json()]


def test_lifecycle_draft_active_new_version_terminated(stack: Stack) -> None:
    created = stack.api("POST", "/slas", json=_sla())
    assert (created.status_code, created.json()["outcome"]) == (201, "created")
    # its workload runs: Active at once (a Draft becomes Active on workload.running: tests/ppef)
    assert created.json()["sla"]["state"] == "Active"
    assert _kinds(stack, "gold")[:2] == ["sla.applied", "sla.activated"]
    status = stack.api("GET", "/slas/gold/status").json()
    assert [s["slo"] for s in status["slos"]] == ["errors", "p99"]
    # NoData until the SLO loop evaluates it (never Met without an evaluation)
    assert all(s["state"] == "NoData" for s in status["slos"] if s["evaluated_at"] is None)
    same = stack.api("POST", "/slas", content=yaml.safe_dump(_sla()), headers={"content-type": "application/yaml"})
    assert (same.status_code, same.json()["outcome"], same.json()["sla"]["version"]) == (200, "unchanged", 1)
    changed = stack.api("POST", "/slas", json=_sla(period="28d")).json()
    assert (changed["outcome"], changed["sla"]["version"], changed["sla"]["state"]) == ("updated", 2, "Active")
    deleted = stack.api("DELETE", "/slas/gold")
    assert (deleted.status_code, deleted.json()["state"]) == (200, "Terminated")
    assert _kinds(stack, "gold")[-2:] == ["sla.applied", "sla.terminated"]
    assert stack.api("DELETE", "/slas/gold").json()["state"] == "Terminated"  # twice: nothing more recorded
    assert _kinds(stack, "gold").count("sla.terminated") == 1
    expect_error(stack.api("GET", "/slas/nope"), 404, "not_found")
    expect_error(stack.api("GET", "/slas/nope/status"), 404, "not_found")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workload": "ghost"}, "workload"),
        ({"slos": [{"name": "x", "kind": "happiness"}]}, "slos[0].kind"),
        ({"slos": [{"name": "up", "kind": "availability", "target": 1.01}]}, "slos[0].target"),
        ({"slos": [{"name": "up", "kind": "availability", "window": "8d"}]}, "slos"),
        (
            {
                "slos": [{"name": "up", "kind": "availability"}],
                "penalties": [{"slo": "x", "below": 0.9, "credit_percent": 5}],
            },
            "penalties",
        ),
        ({"colour": "red"}, "colour"),
        ({"policies": [{"action": "notify", "webhook": "https://evil.example.net/x"}]}, "policies[0].webhook"),
        ({"policies": [{"action": "move", "webhook": "https://hooks.example.com/x"}]}, "policies[0].webhook"),
        ({"policies": [{"action": "move", "triggers": ["soon"]}]}, "policies[0].on[0]"),
        ({"slos": [{"name": "p", "kind": "latency", "threshold": 1, "timeslice": "1ms"}]}, "slos[0].timeslice"),
        ({"slos": [{"name": "p", "kind": "latency", "threshold": 1, "timeslice": "500ms"}]}, "slos[0].timeslice"),
        ({"slos": [{"name": "p", "kind": "latency", "window": "5m", "timeslice": "6m"}]}, "slos[0].timeslice"),
        ({"slos": [{"name": "up", "kind": "availability", "window": "1ms"}]}, "slos[0].window"),
        ({"period": "500ms", "slos": [{"name": "up", "kind": "availability", "window": "1s"}]}, "period"),
        ({"press": {"data_residency": ["ES", "XX"]}}, "press.data_residency[1]"),  # two capitals, no country
        ({"press": {"data_residency": ["UK"]}}, "press.data_residency[0]"),  # the United Kingdom is GB
    ],
)
def test_bad_sla_names_the_field_and_stores_nothing(stack: Stack, change: dict[str, Any], field: str) -> None:
    error = expect_error(stack.api("POST", "/slas", json=_sla("bad", **change)), 422, "invalid")
    assert field in [d["field"] for d in error["details"]]
    expect_error(stack.api("GET", "/slas/bad"), 404, "not_found")
    assert stack.api("GET", "/slas/bad/events").status_code == 404


def test_a_bare_yaml_on_key_is_refused_by_name_and_triggers_or_a_quoted_on_work(stack: Stack) -> None:
    def apply(text: str) -> Any:
        return stack.api("POST", "/slas", content=text, headers={"content-type": "application/yaml"})

    document = "name: onkey\nworkload: shop\nslos: [{name: p99, kind: latency, threshold: 0.25}]\npolicies:\n"
    error = expect_error(apply(document + "  - {action: move, on: [violated]}\n"), 422, "invalid")
    [detail] = [d for d in error["details"] if d["field"] == "policies[0].on"]
    assert "YAML 1.1" in detail["message"] and "triggers" in detail["message"]
    expect_error(stack.api("GET", "/slas/onkey"), 404, "not_found")
    for written in ("triggers: [violated]", '"on": [violated]'):
        applied = apply(document + f"  - {{action: move, {written}}}\n")
        assert applied.status_code in (200, 201), applied.text
        assert applied.json()["sla"]["spec"]["policies"][0]["on"] == ["violated"]
    stack.api("DELETE", "/slas/onkey")


def test_filters_sort_pages(stack: Stack) -> None:
    for name, body in (
        ("f-a", _sla("f-a")),
        ("f-b", _sla("f-b", namespace="filt", workload=None, slos=[{"name": "eur", "kind": "cost", "threshold": 2}])),
        ("f-c", _sla("f-c", namespace="filt", workload=None, slos=[{"name": "up", "kind": "availability"}])),
    ):
        assert stack.api("POST", "/slas", json=body).status_code == 201, name
    by_workload = stack.api("GET", "/slas", params={"workload": "shop", "kind": "latency"}).json()
    assert "f-a" in [s["name"] for s in by_workload] and "f-b" not in [s["name"] for s in by_workload]
    page = stack.api("GET", "/slas", params={"namespace": "filt", "sort": "-name", "limit": 1})
    assert (page.headers["x-total-count"], [s["name"] for s in page.json()]) == ("2", ["f-c"])
    second = stack.api("GET", "/slas", params={"namespace": "filt", "sort": "-name", "limit": 1, "offset": 1}).json()
    assert [s["name"] for s in second] == ["f-b"]
    by_kind = stack.api("GET", "/slas", params={"namespace": "filt", "kind": "cost"}).json()
    assert [s["name"] for s in by_kind] == ["f-b"]
    # namespace-wide SLAs are Active at once: they bind whatever runs in the namespace
    active = stack.api("GET", "/slas", params={"namespace": "filt", "state": "Active"}).json()
    assert [s["name"] for s in active] == ["f-b", "f-c"]
    expect_error(stack.api("GET", "/slas", params={"sort": "password"}), 422, "invalid")
    expect_error(stack.api("GET", "/slas", params={"state": "Happy"}), 422, "invalid")
    expect_error(stack.api("GET", "/slas", params={"limit": 10**9}), 422, "invalid")


def test_roles_viewer_reads_operator_applies(stack: Stack) -> None:
    def client(client_id: str, role: str) -> str:
        created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": [role]})
        assert created.status_code == 201, created.text
        return stack.token(client_id, str(created.json()["secret"]))

    viewer, operator = client("sla-viewer", "nemo-viewer"), client("sla-operator", "nemo-operator")
    error = expect_error(stack.api("POST", "/slas", token=viewer, json=_sla("roles")), 403, "insufficient_scope")
    assert error["details"] == {"required_role": "nemo-operator"}
    expect_error(stack.api("GET", "/slas/roles"), 404, "not_found")  # refused: nothing stored
    assert stack.api("POST", "/slas", token=operator, json=_sla("roles")).status_code == 201
    assert stack.api("GET", "/slas", token=viewer).status_code == 200
    assert stack.api("GET", "/slas/roles/status", token=viewer).status_code == 200
    assert stack.api("GET", "/violations", token=viewer).status_code == 200
    expect_error(stack.api("DELETE", "/slas/roles", token=viewer), 403, "insufficient_scope")
    assert stack.api("DELETE", "/slas/roles", token=operator).json()["state"] == "Terminated"
    expect_error(stack.api("GET", "/slas", token=None), 401, "invalid_token")


def test_violations_as_evaluation_records_them(stack: Stack) -> None:
    assert stack.api("POST", "/slas", json=_sla("viol")).status_code == 201
    # part B's evaluator writes through store.slas; here the same functions on the stack's own database
    db = Database(stack.env.get("NEMO_DATABASE_URL") or f"sqlite:///{stack.data_dir / 'nemo.db'}")
    try:
        with db.transaction() as s:
            row = slas.get_sla(s, "default", "viol")
            slas.open_violation(s, row, "p99", value=0.45, comparison=Comparison.AT_MOST, breach_level="page")
    finally:
        db.dispose()
    found = stack.api("GET", "/violations", params={"sla": "viol", "open": "true"})
    assert found.headers["x-total-count"] == "1"
    (violation,) = found.json()
    assert (violation["slo"], violation["worst_value"], violation["ended_at"]) == ("p99", 0.45, None)
    stack.api("DELETE", "/slas/viol")  # terminating closes what is open
    assert stack.api("GET", "/violations", params={"sla": "viol", "open": "true"}).json() == []
    assert stack.cli_json("sla", "violations", "--sla", "viol")[0]["ended_at"] is not None
    expect_error(stack.api("GET", "/violations", params={"slo": "Not A Name"}), 422, "invalid")


OPENSLO = """\
apiVersion: openslo/v1
kind: SLI
metadata:
  name: shop-errors
spec:
  thresholdMetric:
    metricSource:
      type: NEMO
      spec: {kind: error_rate, window: 5m}
---
apiVersion: openslo/v1
kind: AlertPolicy
metadata:
  name: page-on-fast-burn
spec:
  alertWhenBreaching: true
  conditions:
    - kind: AlertCondition
      metadata: {name: fast-burn}
      spec:
        severity: page
        condition: {kind: burnrate, op: gte, threshold: 14.4, lookbackWindow: 1h}
  notificationTargets:
    - kind: AlertNotificationTarget
      metadata: {name: on-call}
      spec: {target: "https://hooks.example.com/on-call"}
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: shop-availability
  displayName: Shop error rate
spec:
  description: 99.9% of requests succeed over 30 days
  service: shop
  indicatorRef: shop-errors
  timeWindow:
    - duration: 30d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - displayName: errors
      target: 0.999
  alertPolicies: [page-on-fast-burn]
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: shop-latency
spec:
  service: shop
  indicator:
    metadata: {name: shop-latency}
    spec:
      thresholdMetric:
        metricSource:
          type: NEMO
          spec: {kind: latency, percentile: 99}
  timeWindow:
    - duration: 30d
      isRolling: true
  budgetingMethod: Timeslices
  objectives:
    - op: lte
      value: 0.25
      targetPercent: 99
      timeSliceWindow: 1m
"""


def test_openslo_in_and_out_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "openslo.yaml"
    source.write_text(OPENSLO)
    applied = stack.cli_json("sla", "apply", "-f", str(source))
    assert applied["outcome"] == "created"
    spec = applied["sla"]["spec"]
    assert (spec["name"], spec["workload"], spec["period"]) == ("shop", "shop", "30d")
    assert [(s["name"], s["kind"], s["budgeting"]) for s in spec["slos"]] == [
        ("shop-availability", "error_rate", "Occurrences"),
        ("shop-latency", "latency", "Timeslices"),
    ]
    assert spec["slos"][1]["timeslice"] == "1m" and spec["slos"][1]["threshold"] == 0.25
    assert spec["policies"] == [
        {
            "action": "notify",
            "on": ["predicted", "violated"],
            "slos": ["shop-availability"],
            "step": 1,
            "max_replicas": 10,
            "cooldown": "5m",
            "webhook": "https://hooks.example.com/on-call",
        }
    ]
    exported = stack.cli("sla", "get", "shop", "-o", "openslo").stdout
    again = tmp_path / "exported.yaml"
    again.write_text(exported)
    assert stack.cli_json("sla", "apply", "-f", str(again))["outcome"] == "unchanged"


def test_openslo_as_a_yaml_stream_through_the_api(stack: Stack) -> None:
    # OpenSLO files are YAML streams (--- between objects), as `nemo sla get -o openslo` writes them; the API
    # answered 400 "expected a single document" to the very file its CLI exported.
    assert stack.api("POST", "/slas", json=_sla("streamed")).status_code == 201
    exported = stack.api("GET", "/slas/streamed/openslo").json()
    stream = yaml.safe_dump_all(exported).encode()
    assert stream.count(b"\n---\n") == len(exported) - 1 > 0
    response = stack.api("POST", "/slas", content=stream, headers={"content-type": "application/yaml"})
    assert (response.status_code, response.json()["outcome"]) == (200, "unchanged"), response.text
    changed = stream.replace(b"target: 0.999", b"target: 0.99")
    response = stack.api("POST", "/slas", content=changed, headers={"content-type": "application/yaml"})
    assert (response.status_code, response.json()["sla"]["version"]) == (200, 2), response.text
    assert stack.api("DELETE", "/slas/streamed").status_code == 200


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("budgetingMethod: Timeslices", "budgetingMethod: RatioTimeslices"), "[3].spec.budgetingMethod"),
        (
            ("      targetPercent: 99", "      targetPercent: 99\n      compositeWeight: 2"),
            "[3].spec.objectives[0].compositeWeight",
        ),
        (
            ("type: NEMO\n      spec: {kind: error_rate", "type: Prometheus\n      spec: {kind: error_rate"),
            "[0].spec.thresholdMetric.metricSource.type",
        ),
        (
            ("threshold: 14.4, lookbackWindow: 1h", "threshold: 14.4, lookbackWindow: 2h"),
            "[1].spec.conditions[0].spec.condition.lookbackWindow",
        ),
        (("  name: shop-latency\nspec:", "  name: shop-latency\n  labels: {team: a}\nspec:"), "[3].metadata.labels"),
    ],
)
def test_unsupported_openslo_field_is_named(stack: Stack, edit: tuple[str, str], field: str) -> None:
    old, new = edit
    assert old in OPENSLO
    documents = list(yaml.safe_load_all(OPENSLO.replace(old, new)))
    documents = [{**d, "metadata": {**d["metadata"]}} for d in documents]
    for d in documents:  # another SLA name, so that nothing of the good test is in the way
        if d["kind"] == "SLO":
            d["spec"]["service"] = "shop-bad"
    error = expect_error(stack.api("POST", "/slas", json=documents), 422, "invalid")
    assert [d["field"] for d in error["details"]] == [field]
    expect_error(stack.api("GET", "/slas/shop-bad"), 404, "not_found")


def _promtool_test(rules: Path, tmp_path: Path, errors_per_step: int, expect_page: bool) -> None:
    groups = yaml.safe_load(rules.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    page = next(r for name, r in alerts.items() if name.startswith("RulesErrors") and name.endswith("Page"))
    ticket = next(r for name, r in alerts.items() if name.startswith("RulesErrors") and name.endswith("Ticket"))
    labels = 'namespace="default",workload="shop"'
    fired = [{"exp_labels": page["labels"], "exp_annotations": page["annotations"]}]
    cases: list[dict[str, Any]] = [
        {"eval_time": "30m", "alertname": page["alert"], "exp_alerts": fired if expect_page else []}
    ]
    if not expect_page:  # a good series raises no ticket either (on a 10% error rate it may, and may not yet)
        cases.append({"eval_time": "30m", "alertname": ticket["alert"], "exp_alerts": []})
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {"series": f"nemo_workload_requests_total{{{labels}}}", "values": "0+100x160"},
                    {"series": f"nemo_workload_request_errors_total{{{labels}}}", "values": f"0+{errors_per_step}x160"},
                ],
                "alert_rule_test": cases,
            }
        ],
    }
    path = tmp_path / f"test-{errors_per_step}.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed on the CI machine")
def test_rules_pass_promtool_and_page_only_on_a_burning_series(stack: Stack, tmp_path: Path) -> None:
    sla = _sla(
        "rules",
        slos=[
            {"name": "errors", "kind": "error_rate", "target": 0.999},
            {"name": "p99", "kind": "latency", "threshold": 0.3, "percentile": 99},
            {"name": "eur", "kind": "cost", "threshold": 2},
        ],
    )
    assert stack.api("POST", "/slas", json=sla).status_code == 201
    rules = tmp_path / "rules.yaml"
    stack.cli("sla", "rules", "rules", "--out", str(rules))
    assert "No burn-rate rules for SLOs without a ratio SLI: eur." in rules.read_text()
    # An existing file is never replaced by surprise (a typo in --out, run as root, could name any file).
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    refused = stack.cli("sla", "rules", "rules", "--out", str(kept), check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr + refused.stdout
    assert kept.read_text() == "mine"
    stack.cli("sla", "rules", "rules", "--out", str(kept), "--force")
    assert kept.read_text() == rules.read_text()
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {r.get("record") for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert {"slo:sli_error:ratio_rate70s", "slo:sli_error:ratio_rate7d", "slo:error_budget:ratio"} <= names
    _promtool_test(rules, tmp_path, errors_per_step=10, expect_page=True)  # 10% errors: burn 100
    _promtool_test(rules, tmp_path, errors_per_step=0, expect_page=False)  # no errors: silent


def test_the_example_sla_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sla-demo.yaml"
    applied = stack.cli("sla", "apply", "-f", str(example)).stdout
    assert "sla default/demo-gold created (version 1" in applied
    assert _state(stack, "demo-gold") == "Active"
    listed = stack.cli("sla", "list", "--workload", "demo").stdout
    assert "demo-gold" in listed and "Active" in listed
    status = stack.cli_json("sla", "status", "demo-gold")
    assert len(status["slos"]) == 12
    assert {s["state"] for s in status["slos"]} <= {"NoData", "Met", "AtRisk", "Violated"}
    assert all(s["state"] == "NoData" for s in status["slos"] if s["evaluated_at"] is None)
    assert "time-to-scale" in stack.cli("sla", "status", "demo-gold").stdout
    assert stack.cli_json("sla", "get", "demo-gold")["spec"]["press"]["data_residency"] == [
        "ES",
        "DE",
        "FR",
        "PT",
        "IT",
    ]
    refused = stack.cli(
        "sla", "apply", "-f", "-", input="name: x\nworkload: ghost\nslos: [{name: a, kind: cost}]\n", check=False
    )
    assert refused.returncode != 0 and "workload" in refused.stderr
    assert "Terminated" in stack.cli("sla", "delete", "demo-gold").stdout
