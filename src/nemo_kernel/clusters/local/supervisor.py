"""The process supervisor of a local agent: every replica is a real OS process, restarted when it dies.

One asyncio task drives everything (no thread per replica, so one agent carries hundreds of replicas):
each pass notices exits, starts what is due, launches health probes (concurrent, bounded by a semaphore)
and samples CPU and memory. Between passes it sleeps until something is due: an exit wakes it at once (a pidfd
per process, watched by the event loop), so a quiet agent runs one pass per sample interval, not two a second.
State that must outlive the agent (spec, pid, ports, restarts) is written to ``replicas.json`` on each change,
and a new agent *adopts* processes that are still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from nemo_kernel.clusters.base import ReplicaReport, ReplicaSpec
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.local.processes import (
    free_port,
    is_alive,
    live_process,
    poll_until,
    port_is_free,
    signal_group,
)
from nemo_kernel.clusters.local.sandbox import SAFE_PATH, Sandbox, SandboxMode
from nemo_kernel.clusters.local.state import (
    HOMES_DIR,
    LOGS_DIR,
    REPLICAS_FILE,
    ReplicaRecord,
    ReplicaTable,
    load_replica_table,
    make_private_dir,
    save_replica_table,
)
from nemo_kernel.clusters.local.usage import ProcessTrees, ReplicaUsage
from nemo_kernel.domain import ReplicaPhase

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True)
class SupervisorTimings:
    """Tunables of the supervisor, in seconds."""

    poll_interval: float = 0.5  # while a replica is starting; and for exits, where no pidfd can be had
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_reset_after: float = 30.0  # of Running without a crash
    stop_grace: float = 5.0  # between SIGTERM and SIGKILL
    probe_interval_running: float = 2.0  # a Starting replica is probed on every pass
    sample_interval: float = 2.0
    unready_after: int = 3  # consecutive failed probes before a Running replica counts as not ready
    probe_concurrency: int = 32


@dataclass(eq=False)
class _Process:
    """A running replica process: our own child, or one adopted from a previous agent."""

    pid: int
    create_time: float | None
    ps: psutil.Process | None
    popen: subprocess.Popen[bytes] | None = None  # None when adopted: another agent was its parent
    pidfd: int | None = None  # readable once the process exited; None: not watched, its exit is polled for

    def has_exited(self) -> bool:
        """Whether the process is gone; an own child stays unreaped so its pid cannot be reused yet."""
        if self.popen is not None:
            if self.popen.returncode is not None:
                return True
            try:
                # WNOWAIT: look without reaping, so the group can still be signalled safely afterwards
                return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True
        return self.ps is None or not is_alive(self.ps)

    def reap(self) -> int | None:
        """Collect the exit code (own children only; an adopted process's code is not ours to know)."""
        if self.popen is None:
            return None
        return self.popen.poll()


@dataclass(eq=False)
class _Replica:
    spec: ReplicaSpec
    ports: dict[str, int]
    restarts: int = 0
    phase: ReplicaPhase = ReplicaPhase.STARTING
    message: str = ""
    exit_code: int | None = None
    process: _Process | None = None
    started_at: datetime | None = None
    running_since: float | None = None  # monotonic
    backoff: float = 1.0
    next_start_at: float | None = None  # monotonic; None while not scheduled
    restart_pending: bool = False  # the next start is a restart (counts in ``restarts``)
    removed: bool = False
    stopping: asyncio.Task[None] | None = None
    probing: asyncio.Task[None] | None = None
    next_probe_at: float = 0.0
    probe_failures: int = 0
    cpu_percent: float | None = None
    memory_mib: float | None = None

    def report(self) -> ReplicaReport:
        first = self.spec.ports[0].name if self.spec.ports else None
        url = f"http://127.0.0.1:{self.ports[first]}" if first is not None and first in self.ports else None
        return ReplicaReport(
            id=self.spec.id,
            node=self.spec.node,
            phase=ReplicaPhase.STOPPING if self.stopping is not None else self.phase,
            url=url,
            pid=self.process.pid if self.process is not None else None,
            restarts=self.restarts,
            exit_code=self.exit_code,
            cpu_percent=self.cpu_percent,
            memory_mib=self.memory_mib,
            started_at=self.started_at,
            message=self.message,
        )


def check_runnable(spec: ReplicaSpec) -> None:
    """Refuse what the local driver cannot run; raises :class:`ReplicaRejected`."""
    if not spec.command:
        raise ReplicaRejected(
            "no_command", "the local driver runs commands; this replica gives only an image", {"image": spec.image}
        )
    if spec.working_dir is not None and not Path(spec.working_dir).is_absolute():
        # a relative directory would resolve against the agent's cwd, which nobody chose on purpose
        raise ReplicaRejected(
            "relative_working_dir", "working_dir must be an absolute path", {"working_dir": spec.working_dir}
        )
    if spec.health.http_path is not None and not spec.ports:
        details = {"http_path": spec.health.http_path}
        raise ReplicaRejected("no_port", "an HTTP health check needs a port to probe", details)


class ProcessSupervisor:
    """Runs, watches and restarts the replicas of one local cluster.

    Use :meth:`start` before anything else and :meth:`close` at the end; closing leaves every replica
    running, for the next supervisor on the same state directory to adopt.
    """

    def __init__(
        self, cluster: str, state_dir: Path, sandbox: Sandbox, timings: SupervisorTimings | None = None
    ) -> None:
        self.cluster = cluster
        self.state_dir = state_dir
        self.sandbox = sandbox
        self.timings = timings or SupervisorTimings()
        self._replicas: dict[str, _Replica] = {}
        self._state_file = state_dir / REPLICAS_FILE
        self._logs = state_dir / LOGS_DIR
        self._homes = state_dir / HOMES_DIR
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._probe_slots = asyncio.Semaphore(self.timings.probe_concurrency)
        self._http: httpx.AsyncClient | None = None
        self._dirty = False
        self._next_sample_at = 0.0
        self._trees = ProcessTrees()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load ``replicas.json``, adopt live processes, restart the others, and begin supervising."""
        # replicas' logs and everyone's directories: for the agent only (a replica gets its own log as stdout)
        for directory in (self._logs, self._homes):
            make_private_dir(directory)
        # health probes go to 127.0.0.1 only; never through a proxy from the environment
        self._http = httpx.AsyncClient(trust_env=False)
        now = time.monotonic()
        for record in load_replica_table(self._state_file).replicas:
            self._adopt(record, now)
        self._persist()
        self._loop_task = asyncio.create_task(self._run(), name=f"supervisor-{self.cluster}")

    async def close(self) -> None:
        """Stop supervising; replicas keep running. Unfinished stops are resumed by the next agent."""
        tasks: list[asyncio.Task[None]] = [] if self._loop_task is None else [self._loop_task]
        for replica in self._replicas.values():
            tasks.extend(t for t in (replica.stopping, replica.probing) if t is not None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in self._replicas.values():
            if replica.process is not None:
                self._unwatch_exit(replica.process)  # the process runs on, for the next agent to adopt
        self._persist()
        if self._http is not None:
            await self._http.aclose()

    # ----------------------------------------------------------------- API

    def reports(self) -> list[ReplicaReport]:
        """What every supervised replica is doing, sorted by id."""
        return [self._replicas[key].report() for key in sorted(self._replicas)]

    def report(self, replica_id: str) -> ReplicaReport | None:
        """What one replica is doing, or None if it is not supervised."""
        replica = self._replicas.get(replica_id)
        return None if replica is None else replica.report()

    def usage(self) -> list[ReplicaUsage]:
        """What every supervised replica uses now (CPU and memory over its process tree), sorted by id.

        Reads ``/proc``: call it when a reading is wanted (a scrape), not on every supervision pass.
        """
        running = {
            r.spec.id: r.process.pid
            for r in self._replicas.values()
            if not r.removed and r.process is not None and not r.process.has_exited()
        }
        readings = self._trees.usage(running.values(), time.monotonic())
        usages = []
        for key in sorted(self._replicas):
            replica = self._replicas[key]
            if replica.removed:
                continue
            process = replica.process
            reading = readings.get(running[key]) if key in running else None
            spec = replica.spec
            port = replica.ports.get(spec.metrics.port) if spec.metrics is not None else None
            up = replica.phase is ReplicaPhase.RUNNING and replica.stopping is None and reading is not None
            usages.append(
                ReplicaUsage(
                    replica=spec.id,
                    workload=spec.workload,
                    node=spec.node,
                    up=up,
                    restarts=replica.restarts,
                    pid=process.pid if process is not None and reading is not None else None,
                    cpu_seconds=reading[0] if reading is not None else None,
                    memory_bytes=reading[1] if reading is not None else None,
                    # only once Running: a replica still starting has nothing to serve yet, and is not failing
                    metrics_url=(
                        f"http://127.0.0.1:{port}{spec.metrics.path}"
                        if spec.metrics is not None and port is not None and up
                        else None
                    ),
                )
            )
        return usages

    def ensure(self, spec: ReplicaSpec) -> ReplicaReport:
        """Run ``spec`` (idempotent: the same spec is a no-op, a changed one replaces the process)."""
        check_runnable(spec)
        self.sandbox.check(spec)
        replica = self._replicas.get(spec.id)
        if replica is None:
            replica = _Replica(spec=spec, ports={}, backoff=self.timings.backoff_initial)
            replica.ports = self._assign_ports(replica)
            replica.next_start_at = time.monotonic()
            self._replicas[spec.id] = replica
        elif replica.spec == spec:
            # a removal still in progress is cancelled by asking again; the stop task restarts it
            replica.removed = False
        else:
            replica.spec = spec
            replica.removed = False
            replica.ports = self._assign_ports(replica)
            # a new spec deserves a fresh start: what the old one did says nothing about it
            replica.restarts = 0
            replica.backoff = self.timings.backoff_initial
            replica.restart_pending = False
            if replica.process is not None and replica.stopping is None:
                replica.stopping = asyncio.create_task(self._stop(replica))
            elif replica.process is None:
                replica.next_start_at = time.monotonic()
                replica.phase = ReplicaPhase.STARTING
                replica.message = "spec changed"
        self._persist()
        self._wake.set()
        return replica.report()

    def remove(self, replica_id: str) -> None:
        """Stop the replica (SIGTERM to its process group, SIGKILL after the grace) and forget it."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        replica.removed = True
        if replica.process is None and replica.stopping is None:
            del self._replicas[replica_id]
        elif replica.stopping is None:
            replica.stopping = asyncio.create_task(self._stop(replica))
        self._persist()

    # ----------------------------------------------------------------- adoption and persistence

    def _adopt(self, record: ReplicaRecord, now: float) -> None:
        replica = _Replica(
            spec=record.spec,
            ports=dict(record.ports),
            restarts=record.restarts,
            started_at=record.started_at,
            removed=record.removed,
            backoff=self.timings.backoff_initial,
        )
        ps = live_process(record.pid, record.create_time) if record.pid is not None else None
        if ps is not None and record.pid is not None:
            replica.process = _Process(pid=record.pid, create_time=record.create_time, ps=ps)
            self._watch_exit(replica.process)
            replica.running_since = now
            replica.message = "adopted"
            self._replicas[record.spec.id] = replica
            if record.sandbox != self.sandbox.mode and not record.removed:
                # started before its sandbox existed (or in a weaker one): it still sees what it must not
                log.warning("replica %s runs in sandbox %s; restarting it in %s", record.spec.id,
                            record.sandbox, self.sandbox.mode)  # fmt: skip
                replica.message = f"restarting into sandbox {self.sandbox.mode}"
                replica.stopping = asyncio.create_task(self._stop(replica))
            elif record.removed or record.stop_pending:
                replica.stopping = asyncio.create_task(self._stop(replica))
            return
        if record.removed:
            self._remove_home(record.spec.id)
            return  # its process is gone: the removal is complete
        if not set(record.ports) >= {p.name for p in record.spec.ports}:
            replica.ports = self._assign_ports(replica)
        replica.next_start_at = now
        # a replace that was interrupted starts the new spec; anything else died while no agent watched
        replica.restart_pending = record.pid is not None and not record.stop_pending
        replica.message = "process gone while no agent watched; restarting" if replica.restart_pending else ""
        self._replicas[record.spec.id] = replica

    def _persist(self) -> None:
        table = ReplicaTable(
            replicas=[
                ReplicaRecord(
                    spec=r.spec,
                    ports=r.ports,
                    pid=r.process.pid if r.process is not None else None,
                    create_time=r.process.create_time if r.process is not None else None,
                    restarts=r.restarts,
                    started_at=r.started_at,
                    removed=r.removed,
                    stop_pending=r.stopping is not None,
                    sandbox=self.sandbox.mode if r.process is not None else None,
                )
                for r in self._replicas.values()
            ]
        )
        save_replica_table(self._state_file, table)
        self._dirty = False

    def _assign_ports(self, replica: _Replica) -> dict[str, int]:
        """Host ports for every port of the spec, keeping those the replica already had (stable URLs)."""
        taken = {port for other in self._replicas.values() if other is not replica for port in other.ports.values()}
        ports: dict[str, int] = {}
        for spec_port in replica.spec.ports:
            current = replica.ports.get(spec_port.name)
            if current is None or current in taken:
                current = free_port(avoid=taken | set(ports.values()))
            ports[spec_port.name] = current
        return ports

    # ----------------------------------------------------------------- the supervision loop

    async def _run(self) -> None:
        while True:
            try:
                self._pass(time.monotonic())
            except Exception:  # the loop must outlive any single bad replica
                log.exception("supervision pass failed")
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        """Sleep until the next start, probe or sample is due, or an exit or a request wakes the loop (starts are
        kept to the moment, so backoff delays are precise); one poll interval at most while a replica is starting
        or a process's exit cannot be watched."""
        now = time.monotonic()
        delay = max(0.0, self._next_sample_at - now)
        for replica in self._replicas.values():
            process = replica.process
            if replica.next_start_at is not None:
                delay = min(delay, max(0.0, replica.next_start_at - now))
            if process is None or replica.stopping is not None:
                continue
            if process.pidfd is None or replica.phase is ReplicaPhase.STARTING:
                delay = min(delay, self.timings.poll_interval)
            elif replica.spec.health.http_path is not None and replica.probing is None:
                delay = min(delay, max(0.0, replica.next_probe_at - now))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    def _pass(self, now: float) -> None:
        sample = now >= self._next_sample_at
        if sample:
            self._next_sample_at = now + self.timings.sample_interval
        for replica in list(self._replicas.values()):
            if replica.stopping is not None:
                continue  # the stop task owns it until the process is gone
            process = replica.process
            if process is not None and process.has_exited():
                self._on_exit(replica, process, now)
            elif process is None and replica.next_start_at is not None and replica.next_start_at <= now:
                self._launch(replica, now)
            elif process is not None:
                self._watch(replica, now, sample)
        if self._dirty:
            self._persist()

    def _watch(self, replica: _Replica, now: float, sample: bool) -> None:
        running_for = now - replica.running_since if replica.running_since is not None else 0.0
        if replica.phase is ReplicaPhase.RUNNING and running_for >= self.timings.backoff_reset_after:
            replica.backoff = self.timings.backoff_initial
        if replica.spec.health.http_path is None:
            if replica.phase is not ReplicaPhase.RUNNING:
                self._mark_running(replica, now)
        elif replica.probing is None and now >= replica.next_probe_at:
            replica.probing = asyncio.create_task(self._probe(replica, replica.process))
        if sample and replica.process is not None and replica.process.ps is not None:
            try:
                with replica.process.ps.oneshot():
                    # the first cpu_percent of a handle is 0.0 by definition; later ones cover the interval
                    replica.cpu_percent = replica.process.ps.cpu_percent(None)
                    replica.memory_mib = round(replica.process.ps.memory_info().rss / _MIB, 1)
            except psutil.Error:
                pass  # gone between checks: the next pass sees the exit

    def _watch_exit(self, process: _Process) -> None:
        """Have the event loop wake the supervisor when ``process`` exits (Linux pidfd). Without one (an old
        kernel, a process already gone) its exit is noticed by the next pass, which then comes within a poll
        interval."""
        try:
            process.pidfd = os.pidfd_open(process.pid)
        except (OSError, AttributeError):  # AttributeError: no os.pidfd_open on this platform
            return
        fd = process.pidfd
        loop = asyncio.get_running_loop()

        def exited() -> None:
            # once: a pidfd stays readable after the exit, and the pass that handles it may be a while (a stop)
            loop.remove_reader(fd)
            self._wake.set()

        loop.add_reader(fd, exited)

    @staticmethod
    def _unwatch_exit(process: _Process) -> None:
        fd, process.pidfd = process.pidfd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _mark_running(self, replica: _Replica, now: float) -> None:
        replica.phase = ReplicaPhase.RUNNING
        replica.running_since = now
        replica.message = ""

    def _on_exit(self, replica: _Replica, process: _Process, now: float) -> None:
        if process.popen is not None:
            # leftovers of the group (children of a shell wrapper) would keep the port busy
            signal_group(process.pid, signal.SIGKILL)
        code = process.reap()
        self._unwatch_exit(process)
        replica.process = None
        replica.exit_code = code
        replica.phase = ReplicaPhase.CRASHED
        replica.cpu_percent = replica.memory_mib = None
        ran = now - replica.running_since if replica.running_since is not None else 0.0
        if ran >= self.timings.backoff_reset_after:
            replica.backoff = self.timings.backoff_initial
        delay = replica.backoff
        replica.backoff = min(replica.backoff * 2, self.timings.backoff_max)
        replica.running_since = None
        replica.next_start_at = now + delay
        replica.restart_pending = True
        how = _describe_exit(code)
        replica.message = f"{how}; restarting in {delay:g} s"
        log.info("replica %s %s", replica.spec.id, replica.message)
        self._dirty = True

    def _launch(self, replica: _Replica, now: float) -> None:
        spec = replica.spec
        replica.next_start_at = None
        for name, port in list(replica.ports.items()):
            if not port_is_free(port):  # someone else took it while the replica was down
                taken = {p for other in self._replicas.values() for p in other.ports.values()}
                replica.ports[name] = free_port(avoid=taken)
        if replica.restart_pending:
            replica.restarts += 1
            replica.restart_pending = False
        replica.exit_code = None
        replica.probe_failures = 0
        replica.next_probe_at = now
        replica.started_at = datetime.now(UTC)
        self._dirty = True
        assert spec.command is not None  # guaranteed by check_runnable
        log_path = self._logs / f"{spec.id}.log"
        home = self._homes / spec.id
        cwd = Path(spec.working_dir) if spec.working_dir is not None else home
        env = self._environment(replica, home)
        try:
            self.sandbox.prepare_home(home)
            _find_executable(spec.command[0], cwd, env.get("PATH"))
            with log_path.open("ab") as log_file:
                log_file.write(f"--- {replica.started_at.isoformat()} starting {spec.command!r}\n".encode())
                log_file.flush()
                popen = subprocess.Popen(
                    self.sandbox.argv(spec.command, home=home, cwd=cwd),
                    # confine enters the working directory itself, once the sandbox is set up
                    cwd=cwd if self.sandbox.mode is SandboxMode.NONE else "/",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # own session: signals to the agent (Ctrl-C, SIGTERM) do not reach replicas, which
                    # outlive the agent; and the whole group can be stopped at once
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            replica.process = None
            replica.running_since = None
            delay = replica.backoff
            replica.backoff = min(replica.backoff * 2, self.timings.backoff_max)
            replica.next_start_at = now + delay
            replica.restart_pending = True
            replica.phase = ReplicaPhase.CRASHED
            replica.message = f"cannot start: {exc}; retrying in {delay:g} s"
            return
        try:
            ps: psutil.Process | None = psutil.Process(popen.pid)
            create_time: float | None = ps.create_time() if ps is not None else None
        except psutil.Error:
            ps, create_time = None, None  # already exited; the next pass reaps it
        replica.process = _Process(pid=popen.pid, create_time=create_time, ps=ps, popen=popen)
        self._watch_exit(replica.process)
        replica.phase = ReplicaPhase.STARTING
        replica.message = ""

    def _environment(self, replica: _Replica, home: Path) -> dict[str, str]:
        """What the descriptor asks for, and the replica's identity; nothing of the agent's own environment.

        The agent runs with the control plane's environment (database URL, issuer secrets, ``NEMO_*``
        settings): none of it reaches a replica. Not even LANG or TZ: a replica behaves the same whoever
        started ``nemo up`` from whichever shell, and its descriptor sets them when it needs them.
        """
        spec = replica.spec
        env = {"PATH": SAFE_PATH, "HOME": str(home)}
        env.update(spec.env)
        if spec.ports:
            env["PORT"] = str(replica.ports[spec.ports[0].name])
        for spec_port in spec.ports:
            env[f"PORT_{spec_port.name.upper().replace('-', '_')}"] = str(replica.ports[spec_port.name])
        env["NEMO_WORKLOAD"] = spec.workload
        env["NEMO_REPLICA"] = spec.id
        env["NEMO_NODE"] = spec.node
        env["NEMO_CLUSTER"] = self.cluster
        return env

    # ----------------------------------------------------------------- health

    async def _probe(self, replica: _Replica, process: _Process | None) -> None:
        try:
            ok, why = await self._http_probe(replica)
            if process is None or replica.process is not process or replica.stopping is not None:
                return  # the process changed while we asked: this answer is about a previous one
            now = time.monotonic()
            interval = self.timings.probe_interval_running
            replica.next_probe_at = now + (interval if replica.phase is ReplicaPhase.RUNNING else 0.0)
            if ok:
                replica.probe_failures = 0
                if replica.phase is not ReplicaPhase.RUNNING:
                    self._mark_running(replica, now)
                return
            replica.probe_failures += 1
            if replica.phase is ReplicaPhase.RUNNING and replica.probe_failures >= self.timings.unready_after:
                # readiness, not liveness: the process keeps running, the engine sees it is not serving
                replica.phase = ReplicaPhase.STARTING
                replica.running_since = None
            if replica.phase is ReplicaPhase.STARTING:
                replica.message = f"health check failing: {why}"
        finally:
            replica.probing = None

    async def _http_probe(self, replica: _Replica) -> tuple[bool, str]:
        spec = replica.spec
        if self._http is None or not spec.ports or spec.health.http_path is None:
            return False, "no port to probe"
        url = f"http://127.0.0.1:{replica.ports[spec.ports[0].name]}{spec.health.http_path}"
        async with self._probe_slots:
            try:
                response = await self._http.get(url, timeout=spec.health.timeout_seconds)
            except httpx.HTTPError as exc:
                return False, f"{type(exc).__name__} on GET {spec.health.http_path}"
        if response.status_code >= 400:
            return False, f"GET {spec.health.http_path} answered {response.status_code}"
        return True, ""

    # ----------------------------------------------------------------- stopping

    async def _stop(self, replica: _Replica) -> None:
        """Stop the replica's process group, then forget the replica or start its new spec."""
        process = replica.process
        try:
            if process is not None:
                await self._terminate(process)
        finally:
            if process is not None:
                self._unwatch_exit(process)
            replica.process = None
            replica.stopping = None
            replica.running_since = None
            replica.cpu_percent = replica.memory_mib = None
            if replica.removed:
                self._replicas.pop(replica.spec.id, None)
                self._remove_home(replica.spec.id)
            else:
                replica.phase = ReplicaPhase.STARTING
                replica.next_start_at = time.monotonic()
                self._wake.set()
            self._persist()

    def _remove_home(self, replica_id: str) -> None:
        # a forgotten replica's files go with it; a replaced or restarted one keeps them
        shutil.rmtree(self._homes / replica_id, ignore_errors=True)

    async def _terminate(self, process: _Process) -> None:
        if process.has_exited():
            process.reap()
            return
        signal_group(process.pid, signal.SIGTERM)
        if not await poll_until(process.has_exited, self.timings.stop_grace):
            log.warning("pid %s ignored SIGTERM for %g s; killing its group", process.pid, self.timings.stop_grace)
            signal_group(process.pid, signal.SIGKILL)
            # SIGKILL cannot be ignored, but a process in uninterruptible sleep is slow to go
            await poll_until(process.has_exited, self.timings.stop_grace)
        elif process.popen is not None:
            signal_group(process.pid, signal.SIGKILL)  # leftovers of the group
        process.reap()


def _find_executable(program: str, cwd: Path, path: str | None) -> None:
    """Raise FileNotFoundError, as exec would, when ``program`` is nowhere to be found.

    In a sandbox the exec happens in a helper that has already started, so a missing program would only
    show as exit code 127; this keeps the clearer "cannot start" of a program that does not exist.
    """
    if not cwd.is_dir():
        raise FileNotFoundError(2, "No such directory (working_dir)", str(cwd))
    found = (cwd / program).is_file() if "/" in program else shutil.which(program, path=path or os.defpath)
    if not found:
        raise FileNotFoundError(2, "No such file or directory", program)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown: adopted from a previous agent)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
