"""Drain of a cluster through migrations: time until it runs nothing, by how many evacuations may be in flight.

Run from the repository root::

    .venv/bin/python benchmarks/bench_drain.py --clusters 20 --nodes 4 --moved 40 --concurrency 8 --rounds 3 --append

Everything runs in this process as ``nemo up`` runs it: the real ``OrchestrationEngine`` (whose evacuate step starts
the migrations) and ``MigrationRunner`` on SQLite in a temporary directory, over the ``sim`` provider on the real
clock (a replica starts after its cluster's delay). ``--moved`` single-replica workloads are placed on one cluster
(the others cordoned meanwhile), then that cluster is drained; a reconcile pass and a migration step alternate back
to back until it runs nothing and no move is left. The baseline is ``NEMO_EVACUATION_CONCURRENCY=1`` (one move at a
time), run alternately with the candidate in the same command; medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results import publish
from sqlalchemy import func, select

from nemo_kernel.clusters import DriverProviders
from nemo_kernel.clusters.fleet import generate_fleet
from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.config import Settings
from nemo_kernel.domain import ACTIVE_PHASES, DriverKind, WorkloadDescriptor
from nemo_kernel.migration import MigrationRunner, MigrationTimings
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, clusters, workloads
from nemo_kernel.store.tables import MigrationRow, ReplicaRow, WorkloadRow


def _counts(db: Database, drained: str) -> tuple[int, int, int]:
    """(desired replicas on the drained cluster, migrations running, Running workloads)."""
    with db.transaction() as s:
        left = s.scalar(
            select(func.count()).where(ReplicaRow.cluster == drained, ReplicaRow.desired.is_(True))
        )  # fmt: skip
        moving = s.scalar(select(func.count()).where(MigrationRow.phase.in_(ACTIVE_PHASES)))
        running = s.scalar(select(func.count()).where(WorkloadRow.phase == "Running"))
        return left or 0, moving or 0, running or 0


async def drain_once(args: argparse.Namespace, concurrency: int) -> tuple[float, int, int, int]:
    """One drain; (seconds until the cluster runs nothing, passes, most moves in flight, fewest Running workloads)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(data_dir=root / "data", evacuation_concurrency=concurrency)
        db = Database(f"sqlite:///{root / 'nemo.db'}")
        db.migrate()
        fleet = generate_fleet(args.clusters, args.nodes, seed=args.seed)
        drained = fleet[0].name
        with db.transaction() as s:
            for spec in fleet:
                clusters.add_cluster(s, spec)
                if spec.name != drained:
                    clusters.set_schedulable(s, spec.name, cordoned=True)
            for i in range(args.moved):
                body = {"name": f"w{i:04d}", "deployment": {"command": ["serve"], "replicas": 1,
                        "resources": {"cpu": 0.01, "memory_mib": 8}}}  # fmt: skip
                workloads.apply_workload(s, WorkloadDescriptor.model_validate(body))
        sim = SimProvider(settings)
        resources = ResourceManager(db, settings, DriverProviders(settings, {DriverKind.SIM: sim}))
        engine = OrchestrationEngine(db, resources, settings)
        runner = MigrationRunner(db, resources.driver, lambda: None, MigrationTimings(drain=args.switch_drain))
        try:
            while _counts(db, drained)[2] < args.moved:
                await engine.reconcile_once()
            with db.transaction() as s:
                for spec in fleet[1:]:
                    clusters.set_schedulable(s, spec.name, cordoned=False)
                clusters.set_schedulable(s, drained, cordoned=True, draining=True)
            start, passes, most, fewest = time.monotonic(), 0, 0, args.moved
            while True:
                await engine.reconcile_once()
                await runner.advance()
                passes += 1
                left, moving, running = _counts(db, drained)
                most, fewest = max(most, moving), min(fewest, running)
                if left == 0 and moving == 0:
                    return time.monotonic() - start, passes, most, fewest
                if time.monotonic() - start > args.limit:
                    raise SystemExit(f"{drained} not drained after {args.limit:.0f} s ({left} replicas left)")
        finally:
            await resources.close()
            db.dispose()


async def run(args: argparse.Namespace) -> list[str]:
    seconds: dict[int, list[float]] = {args.baseline_concurrency: [], args.concurrency: []}
    rows: list[str] = []
    for r in range(args.rounds):
        for concurrency in (args.baseline_concurrency, args.concurrency):  # alternating, baseline first
            took, passes, most, fewest = await drain_once(args, concurrency)
            seconds[concurrency].append(took)
            load = os.getloadavg()[0]
            rows.append(
                f"| {r + 1} | {concurrency} | {took:.1f} | {passes} | {most} | {fewest}/{args.moved} | {load:.1f} |"
            )
            print(rows[-1], flush=True)
    base, cand = statistics.median(seconds[args.baseline_concurrency]), statistics.median(seconds[args.concurrency])
    rows.append(
        f"| median | {args.baseline_concurrency} vs {args.concurrency} | {base:.1f} vs {cand:.1f} "
        f"(ratio {cand / base:.2f}) | | | | |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--moved", type=int, default=40, help="single-replica workloads on the drained cluster")
    parser.add_argument("--concurrency", type=int, default=8, help="the candidate NEMO_EVACUATION_CONCURRENCY")
    parser.add_argument("--baseline-concurrency", type=int, default=1)
    parser.add_argument("--switch-drain", type=float, default=0.5, help="seconds a source drains after the switch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=float, default=900.0, help="give up on a drain after this many seconds")
    parser.add_argument("--append", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    command = "python " + " ".join(sys.argv)
    lines = [
        f"## Drain through migrations: {args.moved} replicas off one of {args.clusters} sim clusters, "
        f"NEMO_EVACUATION_CONCURRENCY {args.baseline_concurrency} vs {args.concurrency} "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, SQLite; passes and "
        f"migration steps back to back; a source drains {args.switch_drain:g} s after its switch.",
        f"Command: `{command}`",
        "",
        "| round | concurrency | seconds to empty | passes | most moves in flight | fewest workloads Running | "
        "load (1 min) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    publish(text, append=args.append)


if __name__ == "__main__":
    main()
