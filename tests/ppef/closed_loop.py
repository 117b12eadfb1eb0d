"""PPEF's "done when", end to end through the CLI on a `nemo up` stack: the demo workload and an SLA are applied
with `nemo`, traffic goes through the gateway, the demo replica is made slower step by step with its latency knob,
``sla.breach_predicted`` comes before ``sla.violated``, the ``move`` policy re-places the replica through the
migration service, the p99 latency SLO is back to ``Met``, and `nemo sla status`, `history` and `audit` show it.

The SLA uses short windows and a 1 s evaluation interval (not sleeps) so a run takes about a minute. The scenario
runs once on the embedded metrics store (test_closed_loop_e2e.py) and once with the stack reading a real Prometheus
(test_closed_loop_prometheus_e2e.py): two modules, so that the suite's parallel processes (one module each) run
them side by side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.stack import HTTP, Stack, wait_for
from tests.traffic import SteadyClient

ROOT = Path(__file__).resolve().parents[2]


SLA = """
name: demo-fast
workload: demo
period: 1h
slos:
  - {name: p99-latency, kind: latency, percentile: 99, threshold: 0.25, target: 0.9, window: 10s, min_events: 5}
policies:
  - {action: notify_only, triggers: [predicted], cooldown: 10m}
  - {action: move, slos: [p99-latency], triggers: [violated], cooldown: 10m}
"""


def _workload(tmp: Path) -> Path:
    """The demo workload of examples/, one replica with its knobs allowed."""
    workload = yaml.safe_load((ROOT / "examples" / "demo-workload.yaml").read_text())
    workload["deployment"].update(replicas=1, working_dir=str(ROOT / "examples"), env={"DEMO_KNOBS": "1"})
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(workload))
    return path


def _replica(stack: Stack) -> dict[str, Any]:
    running = [r for r in stack.cli_json("workload", "get", "demo")["replicas"] if r["phase"] == "Running"]
    return dict(running[0]) if len(running) == 1 else {}


def closed_loop(stack: Stack, tmp: Path) -> None:
    """The scenario, through `nemo` commands; asserts every step."""
    stack.cli("workload", "apply", "-f", str(_workload(tmp)))
    wait_for(lambda: stack.cli_json("workload", "get", "demo")["phase"] == "Running", 60, "demo running")
    stack.cli("gateway", "expose", "demo", "--path", "/demo")
    url = f"{stack.gateway_url}/demo/"
    wait_for(lambda: HTTP.get(url, timeout=5).status_code == 200, 60, "demo served by the gateway")
    sla = tmp / "sla.yaml"
    sla.write_text(SLA)
    assert "created" in stack.cli("sla", "apply", "-f", str(sla)).stdout
    first = _replica(stack)
    assert first

    def p99() -> dict[str, Any]:
        return dict(stack.cli_json("sla", "status", "demo-fast")["slos"][0])

    with SteadyClient("GET", url, rate=20.0, timeout=10.0):
        wait_for(lambda: p99()["state"] == "Met", 60, "p99 Met under traffic")
        # the replica gets slower by 10 ms a second until it is moved away (the replica the move starts has its
        # knobs at zero). The gateway's histogram buckets (..., 50, 100, 250 ms) make p99 a staircase; at this pace
        # it climbs for about ten evaluations before 250 ms, enough points for the forecast to see the trend
        knob, started, latency = f"{first['url']}/knobs", time.monotonic(), 0
        while latency < 600:
            latency = round(10 * (time.monotonic() - started))
            try:
                HTTP.post(knob, json={"latency_ms": latency}, timeout=5).raise_for_status()
            except httpx.HTTPError:
                break  # the slow replica is gone: moved
            time.sleep(0.5)  # the ramp's pace: the scenario, not a synchronisation
        moved = wait_for(lambda: (r := _replica(stack)) and r["cluster"] != first["cluster"] and r, 60, "moved")
        wait_for(lambda: p99()["state"] == "Met", 60, "p99 back to Met after the move")

    kinds = [e["kind"] for e in stack.cli_json("sla", "history", "demo-fast")]
    predicted, violated = kinds.index("sla.breach_predicted"), kinds.index("sla.violated")
    assert predicted < violated < kinds.index("sla.recovered", violated)
    audit = list(reversed(stack.cli_json("sla", "audit", "demo-fast")))
    assert [(a["trigger"], a["action"]) for a in audit] == [("predicted", "notify_only"), ("violated", "move")]
    move = audit[1]
    assert move["slo"] == "p99-latency" and move["predicted"]["value"] > 0.25
    assert f"to {moved['cluster']}" in move["outcome"] and "migration" in move["outcome"]
    assert move["followup"] is None or move["followup"]["slo_state"] == "Met"
    wait_for(lambda: stack.cli_json("sla", "audit", "demo-fast")[0]["followup"], 20, "the move's follow-up")
    table = stack.cli("sla", "audit", "demo-fast").stdout
    assert "move" in table and "Met after" in table
    assert "p99-latency" in stack.cli("sla", "status", "demo-fast").stdout  # (NoData now: the traffic stopped)
    assert stack.cli_json("sla", "violations", "--sla", "demo-fast")[0]["ended_at"] is not None


ENV = {
    "NEMO_SLO_INTERVAL": "1",
    "NEMO_METRICS_INTERVAL": "1",
    "NEMO_RECONCILE_INTERVAL": "0.3",
    "NEMO_MIGRATION_DRAIN": "0.5",
}


def ready(stack: Stack) -> Stack:
    """``stack`` once all its clusters are Ready."""
    wait_for(lambda: {c["phase"] for c in stack.cli_json("cluster", "list")} == {"Ready"}, 60, "clusters ready")
    return stack
