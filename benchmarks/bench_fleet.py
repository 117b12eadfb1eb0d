"""Fleet figures of today's engine on simulated clusters: steady-state CPU and RSS, restart to a fully reconciled
state, and the time to reschedule the replicas of clusters declared NotReady.

Run from the repository root (it takes minutes at full size)::

    .venv/bin/python benchmarks/bench_fleet.py --clusters 1000 --nodes 10 --workloads 100 --replicas 100 --append

Everything runs in this process as ``nemo up`` runs it: the real ``OrchestrationEngine`` and ``ResourceManager``
on SQLite in a temporary directory, the ``sim`` provider on the real clock (replicas start after their cluster's
delay), faults injected through the orchestrator's fault command, the garbage collector tuned as ``nemo up`` tunes it
(``--no-tune-gc``: CPython's defaults, for a baseline without the tuning). The steady state alternates windows of the
engine's loop (a pass every ``--interval`` seconds, as the control plane) with windows of the simulation alone
(every sim cluster's heartbeat, no engine), the baseline that says how much of the engine's figure is the
simulation's own cost.

Two restarts: first of the control plane alone (a new engine and resource manager over the same, running
simulation, as a real restart finds its clusters running: the new plane adopts what they report; the budgeted row,
which also counts the replicas sent again, from the ``deployment.applied`` events), then of everything (an empty
simulation: every replica is sent again). Then ``--rounds`` clusters holding about ``--reschedule`` replicas go down
one after the other (each row, and their median), and after them the cluster holding the most; each is timed from
the start of the pass that declares it NotReady until every desired replica runs elsewhere (so it includes the
simulated start delay of the slowest target cluster, 0.2 to 3 s).
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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
from results import publish
from sqlalchemy import func, select

from nemo_kernel.clusters import DriverProviders
from nemo_kernel.clusters.fleet import generate_fleet
from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.config import Settings
from nemo_kernel.domain import DriverKind, EventKind, FaultSpec, WorkloadDescriptor
from nemo_kernel.orchestrator.commands import FaultCommands
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, clusters, workloads
from nemo_kernel.store.tables import ClusterRow, EventRow, ReplicaRow

RUNNING = "Running"


class Plane:
    """The engine, its resource manager and the fault command over one simulation (one process's worth)."""

    def __init__(self, db: Database, settings: Settings, sim: SimProvider | None = None) -> None:
        """``sim``: the simulated world to drive (a control plane restarting over clusters that keep running);
        a new, empty one when None (the clusters restarted too)."""
        self.sim = sim if sim is not None else SimProvider(settings)
        self.resources = ResourceManager(db, settings, DriverProviders(settings, {DriverKind.SIM: self.sim}))
        self.engine = OrchestrationEngine(db, self.resources, settings)
        self.faults = FaultCommands(db, lambda: None, self.resources)


def events_after(db: Database, after: int, kind: EventKind) -> int:
    """How many events of ``kind`` were recorded after the event ``after``."""
    with db.snapshot() as s:
        return (
            s.scalar(select(func.count()).select_from(EventRow).where(EventRow.id > after, EventRow.kind == kind)) or 0
        )


def newest_event(db: Database) -> int:
    """The id of the newest event (0 when none)."""
    with db.snapshot() as s:
        return s.scalar(select(func.max(EventRow.id))) or 0


def count_running(db: Database, away_from: frozenset[str] = frozenset()) -> tuple[int, int]:
    """(desired replicas, of them Running and not on ``away_from``)."""
    with db.transaction() as s:
        desired = s.scalar(select(func.count()).select_from(ReplicaRow).where(ReplicaRow.desired.is_(True))) or 0
        query = (
            select(func.count())
            .select_from(ReplicaRow)
            .where(ReplicaRow.desired.is_(True), ReplicaRow.phase == RUNNING)
        )
        if away_from:
            query = query.where(ReplicaRow.cluster.not_in(away_from))
        return desired, s.scalar(query) or 0


async def passes_until(plane: Plane, done: Callable[[], bool], limit_s: float) -> tuple[float, int, float]:
    """Run passes back to back until ``done()``; (seconds, passes, CPU seconds of this process)."""
    start, passes, cpu = time.monotonic(), 0, time.process_time()
    while True:
        await plane.engine.reconcile_once()
        passes += 1
        if done():
            return time.monotonic() - start, passes, time.process_time() - cpu
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"not reconciled after {limit_s:.0f}s ({passes} passes)")


async def passes_after(
    plane: Plane, began: Callable[[], bool], done: Callable[[], bool], interval: float, limit_s: float
) -> tuple[float, int, float, int]:
    """Passes every ``interval`` seconds until one makes ``began()`` true, then back to back until ``done()``;
    (seconds, passes, CPU seconds, resync passes among them) from the start of the pass that made ``began()`` true
    (it did part of the work). A resync pass (every step forced, every NEMO_RESYNC_INTERVAL) is counted."""
    deadline = time.monotonic() + limit_s
    engine = plane.engine
    while True:
        start, cpu = time.monotonic(), time.process_time()
        resync = engine._next_resync  # moves on each full pass (a resync)
        await engine.reconcile_once()
        full = int(engine._next_resync != resync)
        if began():
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"not begun after {limit_s:.0f}s")
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))
    passes = 1
    while not done():
        resync = engine._next_resync
        await engine.reconcile_once()
        full += int(engine._next_resync != resync)
        passes += 1
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"not reconciled after {limit_s:.0f}s ({passes} passes)")
    return time.monotonic() - start, passes, time.process_time() - cpu, full


async def cpu_per_step(step: Callable[[], Awaitable[object]], seconds: float, interval: float) -> tuple[float, float]:
    """CPU seconds of this process per run of ``step``, run every ``interval`` seconds (or back to back when one
    takes longer) for ``seconds``, and CPU seconds per wall second over the window. CPU time, not wall time: on a
    shared machine it is what the step costs, and cost / interval is the share of a core it needs at that pace;
    the second figure is the share it took, which counts a rare slow step (a resync) at its real frequency."""
    cpu0, wall0, steps = time.process_time(), time.monotonic(), 0
    while time.monotonic() - wall0 < seconds or steps == 0:
        began = time.monotonic()
        await step()
        steps += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))
    cpu = time.process_time() - cpu0
    return cpu / steps, cpu / (time.monotonic() - wall0)


async def run(args: argparse.Namespace) -> dict[str, str]:
    figures: dict[str, str] = {}
    if args.tune_gc:
        # as ``nemo up`` does at start; imported here, so that the script runs against a baseline without it
        from nemo_kernel.orchestrator.memory import tune_garbage_collection

        tune_garbage_collection()

    def note(name: str, value: str) -> None:
        figures[name] = value
        print(f"{datetime.now(UTC):%H:%M:%S} {name}: {value}", file=sys.stderr, flush=True)  # progress

    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    db = Database(f"sqlite:///{root / 'nemo.db'}")
    db.migrate()
    settings = Settings(data_dir=root / "data", reconcile_interval=args.interval, heartbeat_timeout=args.timeout)
    process = psutil.Process()

    t = time.monotonic()
    with db.transaction() as s:
        for spec in generate_fleet(args.clusters, args.nodes, seed=args.seed):
            clusters.add_cluster(s, spec)
    note("register the fleet (s)", f"{time.monotonic() - t:.1f}")

    plane = Plane(db, settings)
    seconds, _, cpu = await passes_until(plane, lambda: True, 3600)
    note("first pass: open and hear every cluster (wall s, CPU s)", f"{seconds:.1f}, {cpu:.1f}")

    with db.transaction() as s:
        for w in range(args.workloads):
            body = {"name": f"w{w:05d}", "deployment": {"command": ["serve"], "replicas": args.replicas,
                                                       "resources": {"cpu": 0.01, "memory_mib": 16}}}  # fmt: skip
            workloads.apply_workload(s, WorkloadDescriptor.model_validate(body))
    total = args.workloads * args.replicas

    def all_running() -> bool:
        desired, running = count_running(db)
        return desired == total and running == total

    seconds, passes, cpu = await passes_until(plane, all_running, args.limit)
    note(f"deploy {total:,} replicas until all Running (wall s, CPU s, passes)", f"{seconds:.1f}, {cpu:.1f}, {passes}")

    engine_shares: list[float] = []
    sim_shares: list[float] = []
    drivers = [d for d in (plane.resources.driver(c) for c in plane.sim.simulation.clusters) if d is not None]

    async def heartbeats_only() -> None:
        await asyncio.gather(*(d.status() for d in drivers))

    engine_taken: list[float] = []
    for _ in range(args.windows):  # alternating, so that the machine's load hits both alike
        per_step, taken = await cpu_per_step(plane.engine.reconcile_once, args.steady, args.interval)
        engine_shares.append(per_step)
        engine_taken.append(taken)
        sim_shares.append((await cpu_per_step(heartbeats_only, args.steady, args.interval))[0])
    per_pass, per_beat = statistics.median(engine_shares), statistics.median(sim_shares)
    note("steady state: engine, CPU s per wall s over each window (share of a core taken)",
         ", ".join(f"{x:.2f}" for x in engine_taken))  # fmt: skip
    note(
        "steady state: CPU s per pass, engine (share of a core at one pass per interval)",
        f"{per_pass:.3f} ({per_pass / args.interval:.2f})",
    )
    note(
        "steady state: CPU s per round of sim heartbeats alone, baseline (share of a core)",
        f"{per_beat:.3f} ({per_beat / args.interval:.2f})",
    )
    note("RSS after steady state (MiB)", f"{process.memory_info().rss / 2**20:.0f}")

    # One whole resync interval of passes (every cluster's whole report falls in it): the longest pass is how long an
    # event (a cluster failing) can wait behind the safety net, and the CPU share is the steady state's, resync in.
    longest, cpu0, wall0 = 0.0, time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < settings.resync_interval:
        began = time.monotonic()
        await plane.engine.reconcile_once()
        longest = max(longest, time.monotonic() - began)
        await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - began)))
    note(
        f"over one resync interval ({settings.resync_interval:.0f} s): longest pass (wall s), CPU s per wall s",
        f"{longest:.2f}, {(time.process_time() - cpu0) / (time.monotonic() - wall0):.2f}",
    )

    # A restart of the control plane: the clusters keep running (the same simulated world), so the new plane adopts
    # what they report (full reports against the stored desired state); nothing is sent again.
    await plane.resources.close()
    world = plane.sim
    plane = Plane(db, settings, world)
    before = newest_event(db)
    seconds, passes, cpu = await passes_until(plane, all_running, args.limit)
    note(
        "restart, clusters running: adopt to fully reconciled (wall s, CPU s, passes; replicas sent again)",
        f"{seconds:.1f}, {cpu:.1f}, {passes}; {events_after(db, before, EventKind.DEPLOYMENT_APPLIED)}",
    )

    if not args.skip_resend:
        # A restart of everything: the simulation starts empty and the engine re-sends every desired replica.
        await plane.resources.close()
        plane = Plane(db, settings)
        seconds, passes, cpu = await passes_until(plane, all_running, args.limit)
        note(
            "restart, clusters empty: re-send to fully reconciled (wall s, CPU s, passes)",
            f"{seconds:.1f}, {cpu:.1f}, {passes}",
        )

    # Clusters holding about --reschedule replicas go down one after the other, then the cluster holding the most.
    downed: set[str] = set()
    timed: list[float] = []

    def about(n: int) -> int:
        return abs(n - args.reschedule)

    def most(n: int) -> int:
        return -n

    rounds = [(f"about --reschedule, round {i + 1}", about) for i in range(args.rounds)]
    for label, pick in [*rounds, ("the most", most)]:
        with db.transaction() as s:
            per_cluster = s.execute(
                select(ReplicaRow.cluster, func.count())
                .where(ReplicaRow.desired.is_(True), ReplicaRow.cluster.not_in(downed))
                .group_by(ReplicaRow.cluster)
            ).all()
        victim, affected = min(per_cluster, key=lambda row: (pick(row[1]), row[0]))
        downed.add(victim)
        await plane.faults.inject(victim, FaultSpec(kind="down", for_s=3600))

        def declared(victim: str = victim) -> bool:
            with db.transaction() as s:
                return s.scalar(select(ClusterRow.phase).where(ClusterRow.name == victim)) == "NotReady"

        def moved(victim: str = victim) -> bool:
            return count_running(db, frozenset({victim}))[1] == total

        seconds, passes, cpu, full = await passes_after(plane, declared, moved, args.interval, args.limit)
        note(
            f"reschedule the {affected} replicas of a NotReady cluster holding {label} "
            "(wall s, CPU s, passes, of them resyncs)",
            f"{seconds:.1f}, {cpu:.1f}, {passes}, {full}",
        )
        if pick is about:
            timed.append(seconds)
            if len(timed) == args.rounds:
                note(
                    "reschedule about --reschedule replicas: median of the rounds (wall s)",
                    f"{statistics.median(timed):.1f}",
                )
    note("RSS at the end (MiB)", f"{process.memory_info().rss / 2**20:.0f}")
    await plane.resources.close()
    db.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=100, help="replicas per workload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes in steady state")
    parser.add_argument("--timeout", type=float, default=6.0, help="heartbeat timeout (NotReady after it)")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds per steady-state window")
    parser.add_argument("--windows", type=int, default=3, help="windows of each kind, alternating")
    parser.add_argument("--reschedule", type=int, default=100, help="the first clusters down hold about this many")
    parser.add_argument("--rounds", type=int, default=3, help="clusters holding about --reschedule replicas to down")
    parser.add_argument("--skip-resend", action="store_true", help="skip the restart over an empty simulation")
    parser.add_argument(
        "--no-tune-gc", dest="tune_gc", action="store_false", help="keep CPython's collector defaults (a baseline)"
    )
    parser.add_argument("--limit", type=float, default=1800.0, help="give up on a phase after this many seconds")
    parser.add_argument("--append", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    command = "python " + " ".join(sys.argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"## Fleet: {args.clusters:,} sim clusters x {args.nodes} nodes, "
        f"{args.workloads * args.replicas:,} replicas, today's engine ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, SQLite; "
        f"load average at the end: {load}.",
        f"Command: `{command}`",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in figures.items()),
        "",
    ]
    text = "\n".join(lines)
    publish(text, append=args.append)


if __name__ == "__main__":
    main()
