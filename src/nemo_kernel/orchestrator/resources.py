"""Resource Manager: the cluster inventory's live side: drivers, heartbeats, cluster and node health.

Drivers come from the provider of each cluster's driver kind (``clusters.registry``); this module knows no driver.
A cluster whose kind has no provider stays without a driver and says so on its message, once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.orm import Session

from nemo_kernel.clusters import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    DriverProviders,
    DriverUnavailable,
    Link,
    NodeReport,
    SupportsAgentPid,
    SupportsLinkEmulation,
)
from nemo_kernel.clusters.revisions import MergedReport
from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterPhase, ClusterSpec, EventKind, ReplicaPhase, utcnow
from nemo_kernel.orchestrator.placement import ParsedSpecs
from nemo_kernel.store import Database
from nemo_kernel.store import clusters as cluster_store
from nemo_kernel.store.events import cluster_subject, record_event
from nemo_kernel.store.signals import CommitWatch
from nemo_kernel.store.tables import ClusterRow, NodeRow

log = logging.getLogger(__name__)

_MAX_CONCURRENT_HEARTBEATS = 64
_SPECS = select(ClusterRow.id, ClusterRow.name, ClusterRow.phase, cast(ClusterRow.spec, Text).label("spec"))
# Phases a replica passes through on its way up or down: a cluster reporting one is asked on every pass, so that a
# rollout (or a removal) is seen to finish at once rather than up to a heartbeat interval later.
_SETTLING = frozenset({ReplicaPhase.SCHEDULED, ReplicaPhase.STARTING, ReplicaPhase.STOPPING})
# Seconds between stored ``last_heartbeat`` stamps of a cluster that keeps answering. Liveness is judged in memory
# and the views show the live time (:meth:`ResourceManager.last_heartbeat`): the stored stamp is for whoever reads
# the row without this process, so it is written seldom. Every write is a commit that wakes every commit watcher
# (the gateway, the loops' commit watches), which is most of an idle control plane's work at a stamp every 3 s.
STAMP_INTERVAL = 60.0


@dataclass
class _Liveness:
    last_ok: float  # monotonic
    phase: str = ClusterPhase.PENDING.value  # as stored; the store is written only when it changes
    last_stored: float | None = None  # monotonic; when this process last stamped its last_heartbeat
    heard_at: datetime | None = None  # wall clock of its last answer, which the views show
    error: str = ""
    node_ready: dict[str, bool] = field(default_factory=dict)
    view: MergedReport = field(default_factory=MergedReport)
    next_beat: float = 0.0  # monotonic; asked again from then on (0: on the next pass)
    next_whole: float | None = None  # monotonic; its whole report is asked from then on (None: not scheduled yet)
    settling: bool = False
    """Whether its view shows a replica on its way up or down, which a user may be waiting for: set when the view
    changes (:meth:`merge`), not looked up on every pass over every replica of every quiet cluster."""

    def merge(self, report: ClusterReport) -> bool:
        """Take a report into the view; True if the view changed."""
        if not self.view.merge(report):
            return False
        whole = self.view.report
        self.settling = whole is not None and any(r.phase in _SETTLING for r in whole.replicas)
        return True


@dataclass(frozen=True)
class _LivenessWrites:
    """What one heartbeat round stores: the clusters to mark Ready, to stamp, their nodes whose readiness moved, and
    the clusters silent for too long (with why)."""

    now: float  # monotonic
    wall: datetime
    ready: list[str]
    stamp: list[str]
    nodes: dict[str, list[NodeReport]]
    silent: dict[str, str]


@dataclass
class _Inventory:
    """The cluster rows as read by ``sync_drivers``."""

    specs: dict[str, ClusterSpec] = field(default_factory=dict)  # the readable ones
    present: set[str] = field(default_factory=set)  # every registered cluster, readable or not
    phases: dict[str, str] = field(default_factory=dict)
    node_ready: dict[str, dict[str, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class Heartbeat:
    """One round of heartbeats: the whole report of every cluster that answered, and which clusters changed.

    A cluster not asked in this round (its heartbeat interval has not elapsed) is in ``reports`` with its last
    whole report, and never in ``changed``.
    """

    reports: dict[str, ClusterReport]
    changed: frozenset[str]
    """Clusters whose report changed (a replica's state, a node's readiness, a full report) or whose phase did."""
    asked: frozenset[str] = frozenset()
    """Clusters asked in this round (answering or not)."""
    full: frozenset[str] = frozenset()
    """Clusters that answered this round with a full report: every replica's usage in their report is current. In a
    cluster's whole report after a partial one, only the replicas that changed carry this round's usage."""


class ResourceManager:
    """Keeps one driver per registered cluster and turns heartbeats into cluster and node status."""

    def __init__(self, db: Database, settings: Settings, providers: DriverProviders | None = None) -> None:
        self._db = db
        self._settings = settings
        self._providers = providers if providers is not None else DriverProviders(settings)
        self._drivers: dict[str, ClusterDriver] = {}
        self._specs: dict[str, ClusterSpec] = {}  # clusters handed to their provider (opened, or being retried)
        self._unavailable: dict[str, str] = {}  # clusters whose kind has no provider -> why, as recorded on them
        self._liveness: dict[str, _Liveness] = {}
        self._sandboxes: dict[str, str | None] = {}
        self._rtt: dict[str, float] = {}  # cluster -> seconds its last answered heartbeat took
        # cluster -> (the driver given them, the links it was given); one entry per managed cluster
        self._links: dict[str, tuple[ClusterDriver, dict[str, Link]]] = {}
        self._sem = asyncio.Semaphore(_MAX_CONCURRENT_HEARTBEATS)
        self._clusters_revision: tuple[object, ...] | None = None  # of the cluster rows, when last read
        # SQLite's commit counter when the cluster rows were last compared: no commit since, no query (made on the
        # first pass, once the store exists; None on PostgreSQL, which is then asked every pass)
        self._commits: CommitWatch | None = None
        self._compared_at: int | None = None
        # Clusters whose driver was handed out since their last heartbeat: whoever took it (the rollout, a
        # migration's hand-off, a fault) may have changed what runs there, so they are asked on the next round.
        # At most one entry per managed cluster.
        self._touched: set[str] = set()
        self.specs = ParsedSpecs()
        """Validated cluster specs by their stored text: this manager's reads of the cluster rows and the engine's
        inventory loads share them, so a spec is validated once, not once by each."""

    def driver(self, cluster: str) -> ClusterDriver | None:
        """The driver of a cluster, if it has one yet; the cluster is asked for its report on the next heartbeat
        round, since the caller may be about to change what runs there."""
        driver = self._drivers.get(cluster)
        if driver is not None:
            self._touched.add(cluster)
        return driver

    def heartbeat_rtt(self, cluster: str) -> float | None:
        """Seconds the cluster's last answered heartbeat took (``status()``), or None if none was answered."""
        return self._rtt.get(cluster)

    def last_heartbeat(self, cluster: str) -> datetime | None:
        """When the cluster last answered a heartbeat of this process (None before its first answer); fresher than
        the stored ``last_heartbeat``, which is written every :data:`STAMP_INTERVAL` seconds."""
        live = self._liveness.get(cluster)
        return live.heard_at if live is not None else None

    def sandbox_of(self, cluster: str) -> str | None:
        """How the cluster keeps replicas from the control plane's data, as its last heartbeat said."""
        return self._sandboxes.get(cluster)

    def agent_pid(self, cluster: str) -> int | None:
        """Process id of the agent running a cluster, for drivers that have one (operators and tests use it to
        simulate an outage); None otherwise."""
        spec = self._specs.get(cluster)
        if spec is None:
            return None
        provider = self._providers.for_kind(spec.driver)
        return provider.pid_of(cluster) if isinstance(provider, SupportsAgentPid) else None

    async def sync_drivers(self, force: bool = False) -> None:
        """Open a driver for every registered cluster; tear down what belonged to removed clusters.

        The cluster rows are read (and their specs validated) only when they changed since the last read, by
        :func:`clusters_revision`, or when ``force`` (the engine's resync); otherwise only drivers that failed
        to open are tried again and links not applied yet are applied. On SQLite, that revision is not even asked
        while nothing was committed to the store since it was last compared (``Database.commit_watch``).
        """
        if self._commits is None:
            self._commits = self._db.commit_watch()
        commits = self._commits.look()  # before the read: a commit after it is seen on the next pass
        retry = len(self._drivers) < len(self._specs)
        if force or retry or commits is None or commits != self._compared_at:
            revision = await asyncio.to_thread(self._clusters_revision_now)
            if force or retry or revision != self._clusters_revision:
                await self._sync_specs()
                self._clusters_revision = revision
            self._compared_at = commits
        await asyncio.gather(*(self._apply_links(name) for name in list(self._drivers)))

    def _clusters_revision_now(self) -> tuple[object, ...]:
        with self._db.snapshot() as s:
            return clusters_revision(s)

    async def _sync_specs(self) -> None:
        stored = await asyncio.to_thread(self._load_specs)
        specs, present = stored.specs, stored.present
        for name in set(self._specs) - set(specs):
            if name in present:
                # Its stored spec no longer reads: it keeps what it runs (it was not removed), the control plane
                # just stops managing it until the spec is fixed; the error is recorded on the cluster.
                await self._let_go(name)
            else:
                await self._forget(name)
        unavailable: dict[str, str] = {}
        for name, spec in specs.items():
            if name in self._drivers:
                self._specs[name] = spec  # its links may have changed
                continue
            try:
                provider = self._providers.for_kind(spec.driver)
            except DriverUnavailable as exc:
                unavailable[name] = str(exc)
                continue
            self._specs[name] = spec
            try:
                self._drivers[name] = await provider.open(spec)
            except Exception as exc:
                log.warning("cluster %s: could not open its %s driver: %s", name, spec.driver.value, exc)
                continue
            # as stored: a restarted control plane writes only what differs from it
            self._liveness.setdefault(
                name, _Liveness(last_ok=time.monotonic(), node_ready=stored.node_ready.get(name, {}))
            )
        for name, live in self._liveness.items():
            live.phase = stored.phases.get(name, live.phase)  # a row deleted and added again is Pending again
        await self._report_unavailable(unavailable)

    def managed(self) -> dict[str, tuple[ClusterSpec, ClusterDriver]]:
        """Every cluster with a driver: its spec as last read from the store, and its driver."""
        return {name: (self._specs[name], driver) for name, driver in self._drivers.items() if name in self._specs}

    async def _apply_links(self, name: str) -> None:
        """Give the cluster's driver the links its spec declares, when they differ from what it was last given.

        Level-based: what was applied is remembered per driver (a new driver, after a restart or a revived
        agent, gets every link again); a cluster that does not answer is tried again on the next pass; a driver
        without link emulation, or one that refuses, is recorded on the cluster once.
        """
        driver, spec = self._drivers.get(name), self._specs.get(name)
        if driver is None or spec is None:
            return
        applied = self._links.get(name)
        before = applied[1] if applied is not None and applied[0] is driver else {}
        if applied is not None and applied[0] is driver and before == spec.links:
            return
        if not isinstance(driver, SupportsLinkEmulation):
            if spec.links and applied is None:
                self._links[name] = (driver, dict(spec.links))
                why = f"links declared, but the {spec.driver.value} driver cannot emulate links; they are ignored"
                await asyncio.to_thread(self._record_message, name, why)
            return
        try:
            async with self._sem:
                for peer, link in spec.links.items():
                    if before.get(peer) != link:
                        async with asyncio.timeout(self._settings.driver_timeout):
                            await driver.set_link(peer, link)
                for peer in set(before) - set(spec.links):
                    async with asyncio.timeout(self._settings.driver_timeout):
                        await driver.set_link(peer, None)
        except (ClusterUnreachable, TimeoutError) as exc:
            log.debug("cluster %s: links not applied yet: %s", name, exc)
            return
        except Exception as exc:
            # one cluster refusing its links must not keep the others from theirs
            self._links[name] = (driver, dict(spec.links))
            await asyncio.to_thread(self._record_message, name, f"links not applied: {exc}")
            return
        self._links[name] = (driver, dict(spec.links))
        log.info("cluster %s: links applied: %s", name, ", ".join(sorted(spec.links)) or "none")

    def _record_message(self, name: str, message: str) -> None:
        with self._db.transaction() as s:
            row = s.scalar(select(ClusterRow).where(ClusterRow.name == name))
            if row is not None:
                _record_failure(s, row, message)

    async def _let_go(self, name: str) -> ClusterSpec:
        """Stop managing cluster ``name``: close its driver and forget what this process knew of it."""
        spec = self._specs.pop(name)
        driver = self._drivers.pop(name, None)
        self._liveness.pop(name, None)
        self._sandboxes.pop(name, None)
        self._rtt.pop(name, None)
        self._links.pop(name, None)
        self._touched.discard(name)
        if driver is not None:
            await _close_quietly(driver, name)
        return spec

    async def _forget(self, name: str) -> None:
        spec = await self._let_go(name)
        try:
            await self._providers.for_kind(spec.driver).forget(name)
        except Exception:
            # The cluster's row is gone, so there is nowhere to record this but the log; the others go on.
            log.exception("cluster %s removed, but its %s driver failed to stop it", name, spec.driver.value)
            return
        log.info("cluster %s removed: its %s driver stopped its replicas", name, spec.driver.value)

    async def _report_unavailable(self, unavailable: dict[str, str]) -> None:
        # Recorded on the cluster (message and event) when it first happens, not logged on every pass.
        new = {name: why for name, why in unavailable.items() if self._unavailable.get(name) != why}
        self._unavailable = unavailable
        if new:
            await asyncio.to_thread(self._record_unavailable, new)

    def _record_unavailable(self, unavailable: dict[str, str]) -> None:
        with self._db.transaction() as s:
            for row in s.scalars(select(ClusterRow).where(ClusterRow.name.in_(list(unavailable)))):
                _record_failure(s, row, f"{unavailable[row.name]}; the cluster is not managed")

    def _load_specs(self) -> _Inventory:
        """The readable specs, and what is stored of every registered cluster (readable or not)."""
        found = _Inventory()
        with self._db.transaction() as s:
            # Columns, the spec as its stored text: an unchanged spec is neither decoded nor validated again (the
            # ORM would decode every one on every read), and a new one only once, for this manager and the engine.
            for cluster_id, name, phase, text in s.execute(_SPECS):
                found.present.add(name)
                found.phases[name] = phase
                try:
                    found.specs[name] = self.specs.cluster(name, text)
                except ValidationError as exc:
                    # One unreadable cluster must not stop the others: it is left without a driver, and says why.
                    row = s.get_one(ClusterRow, cluster_id)
                    _unmanage(s, row, str(cluster_store.spec_refusal(name, exc)))
                    found.phases[name] = row.phase
            query = select(ClusterRow.name, NodeRow.name, NodeRow.ready).join(
                NodeRow, NodeRow.cluster_id == ClusterRow.id
            )
            for cluster, node, ready in s.execute(query):
                found.node_ready.setdefault(cluster, {})[node] = ready
        self.specs.keep(found.present)  # a removed cluster's spec goes with it
        return found

    async def heartbeat(self, full: bool = False, resync: float | None = None) -> Heartbeat:
        """Ask the clusters that are due what changed since their last report (every cluster, everything, when
        ``full``); store phase changes; return the whole reports of those that answered, the last whole report of
        those not asked, and which clusters changed.

        A cluster is due every ``NEMO_HEARTBEAT_INTERVAL`` seconds, and on every round while its last heartbeat
        failed (so that it is declared NotReady ``NEMO_HEARTBEAT_TIMEOUT`` after it last answered, and a dead
        agent is revived at once), while it reports a replica starting or stopping, after its driver was handed
        out (:meth:`driver`), and before its first answer.

        ``resync``: seconds between whole reports of each cluster (the safety net of change-driven reports). Each
        cluster's are asked at a point of the interval fixed by its name (the second one to two intervals after the
        first), so that a fleet's whole reports are spread over the interval, a few per round, rather than all
        asked in one round every interval (at 1,000 clusters and 100,000 replicas such a round and its pass took
        several seconds, during which no failure was handled).
        """
        now = time.monotonic()
        resyncing = {n for n in self._drivers if full or self._whole_due(n, now)}
        names = [n for n in self._drivers if n in resyncing or self._due(n, now)]
        self._touched.difference_update(names)
        results = await asyncio.gather(*(self._status(n, n in resyncing) for n in names))
        reports: dict[str, ClusterReport] = {}
        for name in self._drivers.keys() - set(names):
            cached = self._liveness[name].view.report if name in self._liveness else None
            if cached is not None:
                reports[name] = cached
        # At least twice per timeout: a quiet cluster that stops answering is noticed within half of it, and is then
        # asked on every pass, so it is NotReady one timeout after it last answered, whatever the interval.
        interval = min(self._settings.heartbeat_interval, self._settings.heartbeat_timeout / 2)
        for name in names:
            if name in self._liveness:
                self._liveness[name].next_beat = now + interval
        changed: set[str] = set()
        whole_reports: set[str] = set()
        errors = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, str)}
        for name, report in zip(names, results, strict=True):
            live = self._liveness.get(name)
            if not isinstance(report, ClusterReport) or live is None:
                continue
            if report.full:
                whole_reports.add(name)
                if resync is not None:
                    live.next_whole = _next_whole(live.next_whole, name, now, resync)
            if live.merge(report):
                changed.add(name)
            whole = live.view.report
            assert whole is not None  # merged a report just now
            reports[name] = whole
            if report.sandbox == "none" and self._sandboxes.get(name) != "none":
                log.warning("cluster %s has NO SANDBOX: its replicas can read the data directory (see its agent.log)",
                            name)  # fmt: skip
            self._sandboxes[name] = report.sandbox
        # a round that asked nobody, or whose answers change nothing stored, has no thread and no transaction
        writes = self._judge_liveness({n: reports[n] for n in names if n in reports}, errors) if names else None
        if writes is not None:
            changed |= await asyncio.to_thread(self._store_liveness, writes)
        return Heartbeat(reports, frozenset(changed), frozenset(names), frozenset(whole_reports))

    def _whole_due(self, name: str, now: float) -> bool:
        live = self._liveness.get(name)
        return live is not None and live.next_whole is not None and now >= live.next_whole

    def _due(self, name: str, now: float) -> bool:
        live = self._liveness.get(name)
        if live is None or live.view.report is None or live.error or name in self._touched:
            return True
        return now >= live.next_beat or live.settling

    async def _status(self, name: str, whole: bool) -> ClusterReport | str:
        driver = self._drivers[name]
        live = self._liveness.get(name)
        since = None if whole or live is None else live.view.revision
        async with self._sem:
            try:
                # timed here, where the heartbeat already happens: the RTT costs no extra call to the cluster
                started = time.perf_counter()
                # ``since`` only to a driver that returned a revision: one that knows none may not take it
                asked = driver.status(since) if since is not None else driver.status()
                async with asyncio.timeout(self._settings.driver_timeout):  # no task per call, as wait_for makes
                    report = await asked
                self._rtt[name] = time.perf_counter() - started
                return report
            except (ClusterUnreachable, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:
                # A driver failing in an unexpected way (an unreadable report) counts as a missed heartbeat of
                # this cluster only; the pass goes on for the others.
                log.warning("cluster %s: heartbeat failed: %s", name, exc, exc_info=True)
                return f"heartbeat failed: {exc}"
            self._rtt.pop(name, None)  # a silent cluster has no round trip to report, not its last one
            fresh = await self._revive(name)
            if fresh is None:
                return error
            # The first heartbeat of a revived agent counts: the cluster is Ready again as soon as the new agent
            # answers, not one pass later (by when it could have been silent for longer than the timeout).
            try:
                async with asyncio.timeout(self._settings.driver_timeout):
                    return await fresh.status()  # a new driver: whole
            except (ClusterUnreachable, TimeoutError):
                return error

    async def _revive(self, name: str) -> ClusterDriver | None:
        # The provider restarts what runs the cluster if it died (a local agent adopts the replicas still
        # running); what is alive but silent (hung, stopped, partitioned) is left alone: the cluster goes NotReady.
        spec = self._specs.get(name)
        if spec is None:
            return None
        try:
            fresh = await self._providers.for_kind(spec.driver).revive(spec)
        except Exception as exc:
            log.debug("cluster %s: not revived: %s", name, exc)
            return None
        if fresh is None:
            return None
        old = self._drivers.get(name)
        self._drivers[name] = fresh
        if old is not None:
            await _close_quietly(old, name)
        return fresh

    def _judge_liveness(self, reports: dict[str, ClusterReport], errors: dict[str, str]) -> _LivenessWrites | None:
        """Decide each cluster's phase in memory; what to store: only transitions, node readiness that changed, and
        the answering clusters' ``last_heartbeat`` every :data:`STAMP_INTERVAL` seconds, or at once for one that is
        Ready again, answers again after failed heartbeats or answers this process for the first time. None when
        there is nothing to store (a round of unchanged, Ready clusters)."""
        now, wall = time.monotonic(), utcnow()
        ready: list[str] = []
        stamp: list[str] = []
        nodes: dict[str, list[NodeReport]] = {}
        for name, report in reports.items():
            live = self._liveness.get(name)
            if live is None:
                continue
            back = live.phase != ClusterPhase.READY.value
            if back:
                ready.append(name)
            # at once when it answers again (Ready again, a revived agent) or first answers this process; else seldom
            if back or live.error or live.last_stored is None or now - live.last_stored >= STAMP_INTERVAL:
                stamp.append(name)
            live.last_ok, live.error, live.heard_at = now, "", wall
            moved = [n for n in report.nodes if live.node_ready.get(n.name) != n.ready]
            if moved:
                nodes[name] = moved
        silent: dict[str, str] = {}
        for name, error in errors.items():
            live = self._liveness.get(name)
            if live is None:
                continue
            live.error = error
            quiet = now - live.last_ok
            if quiet >= self._settings.heartbeat_timeout and live.phase != ClusterPhase.NOT_READY.value:
                silent[name] = f"no heartbeat for {quiet:.0f}s: {error}"
        if not (ready or stamp or nodes or silent):
            return None
        return _LivenessWrites(now, wall, ready, stamp, nodes, silent)

    def _store_liveness(self, writes: _LivenessWrites) -> set[str]:
        """Store what :meth:`_judge_liveness` decided, in one transaction; the clusters whose phase changed."""
        ready, stamp, nodes, silent = writes.ready, writes.stamp, writes.nodes, writes.silent
        with self._db.transaction() as s:
            if stamp:
                # updated_at kept: it is the clusters' revision (``clusters_revision``), which a heartbeat is not
                s.execute(
                    update(ClusterRow)
                    .where(ClusterRow.name.in_(stamp))
                    .values(last_heartbeat=writes.wall, updated_at=ClusterRow.updated_at)
                )
            query = select(ClusterRow.name, ClusterRow.id).where(ClusterRow.name.in_(list(nodes)))
            ids: dict[str, int] = {name: cid for name, cid in s.execute(query)}
            for name, moved in nodes.items():
                self._store_node_readiness(s, ids.get(name), moved, self._liveness[name])
            for name in ready:
                self._store_phase(
                    s, name, ClusterPhase.READY, "", EventKind.CLUSTER_READY, f"cluster {name} is answering"
                )
            for name, message in silent.items():
                self._store_phase(s, name, ClusterPhase.NOT_READY, message, EventKind.CLUSTER_NOT_READY, message)
        for name in stamp:
            self._liveness[name].last_stored = writes.now
        return set(ready) | set(silent)

    def _store_phase(
        self, s: Session, name: str, phase: ClusterPhase, message: str, kind: EventKind, what: str
    ) -> None:
        done = s.execute(
            update(ClusterRow)
            .where(ClusterRow.name == name)
            .values(phase=phase.value, message=message, updated_at=ClusterRow.updated_at)
        )
        if done.rowcount:  # type: ignore[attr-defined]
            self._liveness[name].phase = phase.value
            record_event(s, kind, cluster_subject(name), what)

    @staticmethod
    def _store_node_readiness(s: Session, cluster_id: int | None, moved: list[NodeReport], live: _Liveness) -> None:
        for node in moved:
            live.node_ready[node.name] = node.ready
            if cluster_id is not None:
                s.execute(
                    update(NodeRow)
                    .where(NodeRow.cluster_id == cluster_id, NodeRow.name == node.name)
                    .values(ready=node.ready)
                )

    async def close(self) -> None:
        """Close drivers and their providers (local agents stop; clusters and their replicas keep running)."""
        for name, driver in self._drivers.items():
            await _close_quietly(driver, name)
        self._drivers.clear()
        await self._providers.close()
        if self._commits is not None:
            self._commits.close()
            self._commits = None


async def _close_quietly(driver: ClusterDriver, name: str) -> None:
    # Closing a driver only releases its connections: a failure there must not fail the pass (or the shutdown)
    # for every other cluster.
    try:
        await driver.close()
    except Exception:
        log.exception("cluster %s: closing its driver failed", name)


def _next_whole(due: float | None, name: str, now: float, interval: float) -> float:
    """When to ask a cluster that just sent a whole report for its next one (monotonic seconds).

    After its first, between one and two intervals later, at a point fixed by the cluster's name, so that a fleet's
    (which all answered the first pass with one) are spread over the interval; then on that point's grid, the first
    grid point after ``now``: a slow pass that delayed a few clusters' whole reports must not bunch them together
    for good, as ``now + interval`` would.
    """
    if due is None:
        return now + interval * (1 + (zlib.crc32(name.encode()) + 1) / 2**32)
    return due + interval * (math.floor((now - due) / interval) + 1)


def clusters_revision(s: Session) -> tuple[object, ...]:
    """A value that changes whenever a cluster is added, removed or its row updated (spec, flags, message):
    how many rows, the highest id and the latest ``updated_at``. Heartbeats keep ``updated_at`` as it is."""
    return tuple(
        s.execute(select(func.count(ClusterRow.id), func.max(ClusterRow.id), func.max(ClusterRow.updated_at))).one()
    )


def _unmanage(s: Session, row: ClusterRow, refusal: str) -> None:
    """Mark a cluster whose stored spec this version refuses as Unmanaged, with one ``cluster.failed`` event.

    Its replicas are left as they are (it is not NotReady, which would move them: a row edited by mistake must not
    empty a cluster), and no placement goes there (the decision engine cannot read it either); its stored phase
    would otherwise say Ready forever, from a heartbeat nobody asks any more. A spec that reads again makes it
    Ready on its first heartbeat."""
    if row.phase != ClusterPhase.UNMANAGED.value:
        row.phase = ClusterPhase.UNMANAGED.value
        row.message = ""  # a new state: its event is recorded even if the message was already said
    _record_failure(s, row, f"{refusal}; until then it is not managed and its replicas are left as they are")


def _record_failure(s: Session, row: ClusterRow, message: str) -> None:
    """Record on a cluster why it is not handled; once per distinct message, not once per pass."""
    message = " ".join(message.split())[:500]
    if row.message == message:
        return
    log.warning("cluster %r: %s", row.name, message)
    row.message = message
    record_event(s, EventKind.CLUSTER_FAILED, cluster_subject(row.name), message)
