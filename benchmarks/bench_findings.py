"""Benchmark of one findings cycle (``orchestrator/findings.py``) against the queries it is made of.

Run from the repository root::

    .venv/bin/python benchmarks/bench_findings.py                     # prints a markdown table
    .venv/bin/python benchmarks/bench_findings.py --append-results    # also appends it to benchmarks/RESULTS.md

A real control plane on SQLite in a temporary directory, with ``--replicas`` replicas of one workload placed on a
memory cluster of 20 nodes, and an hour of samples every 5 s of each replica's and node's CPU and memory in its
embedded store; the findings settings are the defaults (a cycle reads NEMO_ANOMALY_WINDOW at every
NEMO_FINDINGS_INTERVAL). The baseline is the eight range queries of a cycle alone (what any loop over that hour would
pay); the candidate is the whole cycle (queries, the replicas' requests from the store, the detectors on every
series, the episodes). Both are timed alternately in the same run, so the ratio says what judging costs on top of
reading, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import publish
from tests.orchestrator.fakes import MemoryProvider

from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, DriverKind, WorkloadDescriptor
from nemo_kernel.metrics import Aggregation, MetricsQuery, Sample, Selector
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.findings import _NODE, _REPLICA, _WORKLOAD

NODES = 20
STEP = 5.0


async def _plane(root: Path, replicas: int) -> tuple[ControlPlane, list[str]]:
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    plane = ControlPlane(
        Settings(data_dir=root / "data", clusters_file=clusters), providers={DriverKind.SIM: MemoryProvider()}
    )
    await asyncio.to_thread(plane.db.migrate)
    spec = {
        "name": "edge-a",
        "driver": "sim",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "nodes": [{"name": f"n{i}", "cpu": 64, "memory_mib": 262144} for i in range(NODES)],
    }
    plane.commands.clusters.add(ClusterSpec.model_validate(spec))
    deployment = {"command": ["app"], "replicas": replicas, "ports": [], "resources": {"cpu": 0.1, "memory_mib": 64}}
    plane.commands.workloads.apply(WorkloadDescriptor.model_validate({"name": "w", "deployment": deployment}))
    for _ in range(5):
        await plane.engine.reconcile_once()
    status = plane.views.workloads.status("default", "w")
    return plane, [r.id for r in status.replicas]


def _history(plane: ControlPlane, replicas: list[tuple[str, str]], start: float) -> None:
    for k in range(int(3600 / STEP)):
        t = start + k * STEP
        batch = []
        for replica, node in replicas:
            labels = {"namespace": "default", "workload": "w", "replica": replica, "cluster": "edge-a", "node": node}
            batch += [
                Sample("nemo_replica_cpu_seconds_total", labels, 0.05 * k * STEP, t),
                Sample("nemo_replica_memory_bytes", labels, 30e6 + (k % 7) * 1e5, t),
            ]
        for i in range(NODES):
            node = {"cluster": "edge-a", "node": f"n{i}"}
            batch += [
                Sample("nemo_node_cpu_seconds_total", node, 2.0 * k * STEP, t),
                Sample("nemo_node_cpu_cores", node, 64.0, t),
                Sample("nemo_node_memory_bytes", node, 2e9, t),
                Sample("nemo_node_memory_capacity_bytes", node, 2.7e11, t),
            ]
        plane.metrics_store.ingest(batch)


async def _queries_only(plane: ControlPlane, at: float) -> None:
    """The baseline: the cycle's eight range queries, as FindingsWatch asks them."""
    window = plane.findings.window
    step = plane.findings.step
    asked = [
        ("nemo_replica_cpu_seconds_total", "rate", _REPLICA),
        ("nemo_replica_memory_bytes", "avg", _REPLICA),
        ("nemo_node_cpu_seconds_total", "rate", _NODE),
        ("nemo_node_memory_bytes", "avg", _NODE),
        ("nemo_node_cpu_cores", "last", _NODE),
        ("nemo_node_memory_capacity_bytes", "last", _NODE),
        ("nemo_workload_requests_total", "rate", _WORKLOAD),
        ("nemo_workload_request_errors_total", "rate", _WORKLOAD),
    ]
    await asyncio.gather(
        *(
            plane.metrics.query(MetricsQuery(Selector(name), window, Aggregation(agg), step=step, by=by, at=at))
            for name, agg, by in asked
        )
    )


async def measure(replicas: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        plane, ids = await _plane(Path(tmp), replicas)
        try:
            at = time.time()
            _history(plane, [(r, f"n{i % NODES}") for i, r in enumerate(ids)], at - 3600)
            baseline, candidate = [], []
            for _ in range(rounds):  # alternating, so a busy moment of the machine hits both alike
                t0 = time.perf_counter()
                await _queries_only(plane, at)
                t1 = time.perf_counter()
                await plane.findings.run_once(at=at)
                t2 = time.perf_counter()
                baseline.append(t1 - t0)
                candidate.append(t2 - t1)
            return {"baseline": statistics.median(baseline), "candidate": statistics.median(candidate)}
        finally:
            await plane.resources.close()
            plane.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [(n, asyncio.run(measure(n, args.rounds))) for n in args.replicas]
    load_after = os.getloadavg()
    command = "\n".join(
        [
            f"## Findings: one cycle vs its queries alone ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            f"{args.rounds} alternating rounds each; one hour of samples every 5 s per replica and per node "
            f"({NODES} nodes); load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
            f"after {'/'.join(f'{x:.1f}' for x in load_after)} (2 cores shared with other sessions).",
            "",
            "```",
            f".venv/bin/python benchmarks/bench_findings.py --replicas {' '.join(map(str, args.replicas))} "
            f"--rounds {args.rounds}" + (" --append-results" if args.append_results else ""),
            "```",
            "",
            "| replicas | series judged | queries alone, ms (median) | whole cycle, ms (median) | judging adds |",
            "|---:|---:|---:|---:|---:|",
        ]
    )
    lines = [command]
    for n, r in rows:
        series = 2 * n + 2 * NODES
        lines.append(
            f"| {n:,} | {series:,} | {r['baseline'] * 1000:,.0f} | {r['candidate'] * 1000:,.0f} | "
            f"{(r['candidate'] / r['baseline'] - 1) * 100:+.0f}% |"
        )
    text = "\n".join(lines) + "\n"
    publish(text, append=args.append_results)


if __name__ == "__main__":
    main()
