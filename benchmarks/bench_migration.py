"""Migration downtime at 200 requests/s through the gateway: recreate (the seed's baseline: stop, then start),
stateless (make-before-break) and stateful (state hand-off of a counter), side by side in one run.

One `nemo up` with two local clusters (cloud and IoT, amd64 nodes). Each round moves one workload per mode to the
other cluster, in the order recreate, stateless, stateful, so the baseline and the candidates alternate under the
same load. During each move an open-loop client sends 200 requests/s through the gateway (GET for the two demo
services, POST /increment for the counter) from well before the move until well after it. Per move: failed
requests, the longest gap between two successful answers the client saw (its downtime), the control plane's own
measure (freeze-to-switch for stateful, stop-to-switch for recreate) and the total migration time; for the counter,
whether the final count equals the increments acknowledged.

Usage: ``.venv/bin/python benchmarks/bench_migration.py [--moves 20] [--rate 200] [--append benchmarks/RESULTS.md]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.stack import Stack, running_stack, wait_for  # noqa: E402
from tests.traffic import SteadyClient  # noqa: E402

CLUSTERS = """
clusters:
  - name: cloud-eu
    tier: cloud
    region: eu-central
    country: DE
    nodes: [{name: cloud-eu-n1, architecture: amd64, cpu: 8, memory_mib: 16384}]
  - name: iot-gateway
    tier: iot
    region: eu-south
    country: ES
    nodes: [{name: iot-gateway-n1, architecture: amd64, cpu: 2, memory_mib: 2048}]
"""
MODES = (("recreate", "baseline", "demo_service.py"), ("stateless", "web", "demo_service.py"),
         ("stateful", "counter", "counter_service.py"))  # fmt: skip


def deploy(stack: Stack, name: str, service: str, stateful: bool) -> None:
    deployment = {
        "command": ["python3", "-u", service], "working_dir": str(ROOT / "examples"), "replicas": 1,
        "stateful": stateful, "resources": {"cpu": 0.25, "memory_mib": 64},
        "ports": [{"name": "http", "port": 8080}], "health": {"http_path": "/healthz", "timeout_seconds": 1.0},
    }  # fmt: skip
    body = {"name": name, "namespace": "default", "services": [{"Name": name}], "deployment": deployment}
    assert stack.api("POST", "/workloads", json=body).status_code in (200, 201)
    stack.cli("gateway", "expose", name, "--path", f"/{name}")
    wait_for(lambda: httpx.get(f"{stack.gateway_url}/{name}/", timeout=5).status_code == 200, 120, f"{name} served")


def cluster_of(stack: Stack, name: str) -> str:
    replicas = stack.api("GET", f"/workloads/{name}").json()["replicas"]
    return str(next(r["cluster"] for r in replicas if r["phase"] == "Running"))


def move(stack: Stack, mode: str, name: str, rate: float) -> dict[str, Any]:
    """One move under traffic; what the client and the control plane measured."""
    target = "iot-gateway" if cluster_of(stack, name) == "cloud-eu" else "cloud-eu"
    counter = mode == "stateful"
    before = int(httpx.get(f"{stack.gateway_url}/{name}/", timeout=5).json()["count"]) if counter else 0
    method, path = ("POST", f"/{name}/increment") if counter else ("GET", f"/{name}/")
    with SteadyClient(method, f"{stack.gateway_url}{path}", rate=rate) as client:
        wait_for(lambda: client.report.ok >= rate, 30, "traffic flowing", interval=0.05)  # a second of it
        started = stack.api("POST", "/migrations", json={"workload": name, "to": {"cluster": target}, "mode": mode})
        assert started.status_code == 202, started.text
        mid = started.json()["id"]

        def final() -> dict[str, Any] | None:
            m = stack.api("GET", f"/migrations/{mid}").json()
            return m if m["phase"] in ("Completed", "Failed", "RolledBack") else None

        done = wait_for(final, 120, f"migration {mid}", interval=0.1)
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + rate, 30, "traffic after the move", interval=0.05)
    report = client.report
    first = datetime.fromisoformat(done["timings"][0]["started_at"])
    last = datetime.fromisoformat(done["timings"][-1]["ended_at"])
    intact = None
    if counter:
        intact = int(httpx.get(f"{stack.gateway_url}/{name}/", timeout=5).json()["count"]) == before + report.ok
    return {
        "phase": done["phase"], "failed": report.failed, "sent": report.sent, "gap_ms": report.longest_gap_ms,
        "downtime_ms": done["downtime_ms"], "total_s": (last - first).total_seconds(), "intact": intact,
    }  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--moves", type=int, default=20, help="moves per mode")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the client")
    parser.add_argument("--append", type=Path, help="append the results section to this file")
    args = parser.parse_args()
    # SIGTERM (a `timeout`, Ctrl-C from a supervisor) unwinds like an error, so the stack and its replicas are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _, _ in MODES}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        clusters = Path(tmp) / "clusters.yaml"
        clusters.write_text(CLUSTERS)
        with running_stack(Path(tmp) / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as stack:
            for cluster in ("cloud-eu", "iot-gateway"):
                wait_for(lambda c=cluster: stack.api("GET", f"/clusters/{c}").json()["phase"] == "Ready", 60, cluster)
            for mode, name, service in MODES:
                deploy(stack, name, service, stateful=mode == "stateful")
            for i in range(args.moves):
                for mode, name, _ in MODES:
                    outcome = move(stack, mode, name, args.rate)
                    results[mode].append(outcome)
                    print(f"move {i + 1:2d} {mode:9s} {outcome}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    lines = [
        f"\n## Migrations at {args.rate:g} requests/s through the gateway: recreate vs stateless vs stateful "
        f"({datetime.now(UTC):%Y-%m-%d})\n",
        f"{args.moves} moves per mode between two local clusters (one `nemo up`, SQLite, gateway polling its routes "
        f"every 0.1 s, migration drain 2 s), the modes alternating move by move. Python {platform.python_version()}, "
        f"{platform.machine()}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores shared "
        "with other work). Gap: the longest time between two successful answers the client saw during a move (at "
        f"{args.rate:g} requests/s the gap without any move is about {1000 / args.rate:g} ms plus jitter). "
        "Control plane: the downtime the migration record measured (stateful: freeze to switch commit; recreate: "
        "source stop to switch; stateless: 0).\n",
        "```sh",
        f".venv/bin/python benchmarks/bench_migration.py --moves {args.moves} --rate {args.rate:g}",
        "```\n",
        "| mode | moves completed | failed requests (total / worst move) | client gap p50 / p99 (ms) "
        "| control plane downtime p50 / p99 (ms) | total migration time p50 / p99 (s) | state intact |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, _, _ in MODES:
        runs = results[mode]
        gaps = [r["gap_ms"] for r in runs]
        totals = [r["total_s"] for r in runs]
        downs = [r["downtime_ms"] for r in runs if r["downtime_ms"] is not None]
        failed = [r["failed"] for r in runs]
        completed = sum(r["phase"] == "Completed" for r in runs)
        intact = "n/a" if mode != "stateful" else f"{sum(bool(r['intact']) for r in runs)}/{len(runs)}"
        down = f"{percentile(downs, 50):.0f} / {percentile(downs, 99):.0f}" if downs else "-"
        lines.append(
            f"| {mode} | {completed}/{len(runs)} | {sum(failed)} / {max(failed)} | {percentile(gaps, 50):.0f} / "
            f"{percentile(gaps, 99):.0f} | {down} | {percentile(totals, 50):.1f} / {percentile(totals, 99):.1f} "
            f"| {intact} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with args.append.open("a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
