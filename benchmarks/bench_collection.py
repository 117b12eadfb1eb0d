"""CPU cost of metrics collection: the same `nemo up` stack with collection on (candidate) and off (baseline).

Two stacks run side by side, each with 3 local clusters (2 nodes each) and one demo workload of 20 replicas that
serve their own ``/metrics`` (declared, so the candidate's agents scrape them too). The baseline has
``NEMO_METRICS_INTERVAL=0`` (no collector), the candidate the default 5 s. The CPU time of each stack's control-plane
processes (``nemo up``, its agents and its gateway; not the replicas, whose work is the workload's) is read over
windows that alternate between the two stacks, and the difference of the medians is the cost of collection, in
percent of one core.

    .venv/bin/python benchmarks/bench_collection.py --windows 5 --window 30 --append-results
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml
from results import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's Stack: `nemo up` as a process, and its cleanup

from tests.stack import Stack, wait_for  # noqa: E402

CLUSTERS = {
    "clusters": [
        {
            "name": f"bench-{i}",
            "tier": "edge",
            "region": "bench",
            "country": "ES",
            "nodes": [{"name": f"bench-{i}-n{j}", "cpu": 4, "memory_mib": 4096} for j in (1, 2)],
        }
        for i in (1, 2, 3)
    ]
}


def workload(replicas: int) -> dict[str, object]:
    """The demo service with its own /metrics declared."""
    return {
        "name": "bench-demo",
        "deployment": {
            "command": ["python3", "-u", "demo_service.py"],
            "working_dir": str(ROOT / "examples"),
            "replicas": replicas,
            "resources": {"cpu": 0.1, "memory_mib": 32},
            "ports": [{"name": "http", "port": 8080}],
            "health": {"http_path": "/healthz"},
            "metrics": {"path": "/metrics", "port": "http"},
        },
    }


def control_plane_processes(stack: Stack) -> list[psutil.Process]:
    """``nemo up`` and its direct children (agents, gateway): not the replicas, which are the agents' children."""
    assert stack.proc is not None
    root = psutil.Process(stack.proc.pid)
    return [root, *root.children(recursive=False)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU time of ``processes`` now (a process that exited counts 0 from then on)."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def start(root: Path, name: str, interval: str, replicas: int) -> Stack:
    """A stack in ``root/name`` with the benchmark's clusters and workload, once every replica is Running."""
    clusters = root / f"{name}-clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    data = root / name
    data.mkdir()
    stack = Stack(data, {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_METRICS_INTERVAL": interval})
    stack.start(timeout=120)
    response = stack.api("POST", "/workloads", json=workload(replicas))
    assert response.status_code == 201, response.text

    def running() -> bool:
        w = stack.api("GET", "/workloads/bench-demo").json()
        return sum(r["phase"] == "Running" for r in w["replicas"]) == replicas

    wait_for(running, 180, f"{replicas} replicas of {name} to run")
    return stack


def main() -> None:
    """Run the benchmark and print (optionally append) a Markdown section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5, help="windows per side")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window")
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after both stacks run, not measured")
    parser.add_argument("--append-results", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-collection-"))
    stacks: dict[str, Stack] = {}
    load_before = os.getloadavg()
    usage: dict[str, list[float]] = {"baseline": [], "candidate": []}
    try:
        stacks["baseline"] = start(work, "baseline", "0", args.replicas)
        stacks["candidate"] = start(work, "candidate", "5", args.replicas)
        processes = {side: control_plane_processes(stack) for side, stack in stacks.items()}
        time.sleep(args.warmup)  # both stacks settle (first heartbeats, first collections): not a measurement
        for _ in range(args.windows):
            for side in ("baseline", "candidate"):
                before, started = cpu_seconds(processes[side]), time.monotonic()
                time.sleep(args.window)  # the measurement window itself
                used = cpu_seconds(processes[side]) - before
                usage[side].append(100.0 * used / (time.monotonic() - started))
        counts = {side: len(processes[side]) for side in stacks}
    finally:
        for stack in stacks.values():
            stack.kill_everything()
    load_after = os.getloadavg()

    base, cand = statistics.median(usage["baseline"]), statistics.median(usage["candidate"])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f".venv/bin/python benchmarks/bench_collection.py --windows {args.windows} --window {args.window:g} "
        f"--replicas {args.replicas}{' --append-results' if args.append_results else ''}"
    )

    def cells(values: list[float]) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    section = "\n".join(
        [
            f"## Metrics collection: CPU cost, collection off vs on ({when})",
            "",
            f"Commit {commit.stdout.strip() or '?'}. Two `nemo up` stacks side by side, each 3 local clusters "
            f"(2 nodes each) and {args.replicas} replicas of the demo service serving their own `/metrics`; "
            f"baseline `NEMO_METRICS_INTERVAL=0`, candidate `5` (s). CPU of `nemo up` + agents + gateway "
            f"({counts['baseline']} and {counts['candidate']} processes), replicas excluded, over {args.windows} "
            f"windows of {args.window:g} s per side, alternating baseline and candidate. Load average (1/5/15 min) "
            f"before {'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)} "
            "(2 cores shared with other sessions).",
            "",
            "```",
            command,
            "```",
            "",
            "| side | % of one core, median | every window |",
            "|---|---:|---|",
            f"| baseline (collection off) | {base:.2f} | {cells(usage['baseline'])} |",
            f"| candidate (every 5 s) | {cand:.2f} | {cells(usage['candidate'])} |",
            "",
            f"Cost of collection: **{cand - base:+.2f}% of one core** (goal <= 2%).",
            "",
        ]
    )
    publish(section, append=args.append_results)


if __name__ == "__main__":
    main()
