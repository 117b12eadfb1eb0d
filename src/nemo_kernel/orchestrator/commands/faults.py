"""Fault commands: inject a fault into a cluster (``POST /clusters/{name}/faults``, ``nemo cluster fault``).

The cluster's driver makes the fault happen and ends it by itself when its time is up (the
:class:`~nemo_kernel.clusters.SupportsFaultInjection` ability); this command checks the request, and records the
fault's start and, through :meth:`FaultCommands.expire` (called by the control plane's fault loop), its end.

What is remembered in memory is re-derivable: the faults in progress are the ``cluster.fault_started`` events of
the last :data:`~nemo_kernel.domain.faults.MAX_FAULT_SECONDS` without a ``cluster.fault_ended``. A fault started by
an earlier control plane process is recorded as ended at the next start: the simulation that held it ended with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.clusters import ClusterDriver, ReplicaRejected, SupportsFaultInjection
from nemo_kernel.domain import EventKind, Fault, FaultKind, FaultSpec, utcnow
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.faults import MAX_FAULT_SECONDS
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, NotFound
from nemo_kernel.store import clusters as cluster_store
from nemo_kernel.store.events import cluster_subject, record_event
from nemo_kernel.store.tables import EventRow

log = logging.getLogger(__name__)

_END_SLACK = 0.01  # seconds past a fault's end at which the fault loop looks
_Key = tuple[str, FaultKind, str | None]  # cluster, kind, node: a new fault with the same key replaces the old one


class FaultCommands:
    """Injects faults through the clusters' drivers and records their start and end as events."""

    def __init__(self, db: Database, wake: Wake, resources: ResourceManager) -> None:
        self._db = db
        self._wake = wake
        self._resources = resources
        # Faults this process started and has not seen end; bounded by clusters x kinds x nodes, since a new fault
        # with the same key replaces the old one.
        self._active: dict[_Key, Fault] = {}
        self._lock = threading.Lock()  # injections and expiry run in worker threads
        self._recovered = False

    async def inject(self, cluster: str, spec: FaultSpec) -> Fault:
        """Start ``spec`` on ``cluster`` now (events ``cluster.fault_started``, and ``cluster.fault_ended`` for a
        fault it replaces). ``NotFound`` (404) for an unknown cluster or node; ``ApiError`` 409 when its driver
        cannot inject faults, 503 when the cluster has no driver yet."""
        kind = await asyncio.to_thread(self._check, cluster, spec)
        driver = self._resources.driver(cluster)
        if driver is None:
            raise ApiError(503, "unavailable", f"cluster {cluster} has no driver yet; retry once it is managed")
        injector = _injector(driver, cluster, kind)
        try:
            await injector.inject_fault(spec)
        except ReplicaRejected as exc:
            raise ApiError(409, "unsupported", exc.message, {"field": "kind"}) from exc
        fault = await asyncio.to_thread(self._record_start, cluster, spec)
        self._wake()
        return fault

    def _check(self, cluster: str, spec: FaultSpec) -> str:
        """The cluster's driver kind, once the cluster (and node) are known to exist."""
        with self._db.transaction() as s:
            row = cluster_store.get_cluster(s, cluster)
            nodes = {n.name for n in row.nodes}
            kind = cluster_store.readable_spec(row).driver.value
        if spec.node is not None and spec.node not in nodes:
            raise NotFound("node", f"{cluster}/{spec.node}")
        return kind

    def _record_start(self, cluster: str, spec: FaultSpec) -> Fault:
        started = utcnow()
        ends = started + timedelta(seconds=spec.for_s)
        key: _Key = (cluster, spec.kind, spec.node)
        with self._lock, self._db.transaction() as s:
            replaced = self._active.get(key)
            if replaced is not None:
                _record_end(s, replaced, f"replaced by a new {spec.kind.value} fault")
            row = record_event(
                s,
                EventKind.CLUSTER_FAULT_STARTED,
                cluster_subject(cluster),
                f"fault {_describe(spec)} injected into cluster {cluster} for {spec.for_s:g}s",
                fault=spec.model_dump(mode="json"),
                ends_at=ends.isoformat(),
            )
            s.flush()
            fault = Fault(id=row.id, cluster=cluster, spec=spec, started_at=started, ends_at=ends)
            self._active[key] = fault
        return fault

    def active(self, cluster: str) -> list[Fault]:
        """The faults in progress on ``cluster`` that this control plane injected; ``NotFound`` if unknown."""
        with self._db.transaction() as s:
            cluster_store.get_cluster(s, cluster)
        now = utcnow()
        with self._lock:
            faults = [f for (name, _, _), f in self._active.items() if name == cluster and f.ends_at > now]
        return sorted(faults, key=lambda f: f.id)

    def seconds_to_next_end(self) -> float:
        """Seconds until the next fault this process started ends (infinity when none runs): the fault loop
        sleeps that long instead of polling."""
        now = utcnow()
        with self._lock:
            ends = [fault.ends_at for fault in self._active.values()]
        if not ends:
            return float("inf")
        # A little past the end, so that the wake-up finds it due rather than a hair early.
        return max(0.0, (min(ends) - now).total_seconds()) + _END_SLACK

    def expire(self) -> int:
        """Record the end of every fault whose time is up (and, on the first call, of those an earlier process
        started); returns how many ended."""
        now = utcnow()
        with self._lock:
            if self._recovered and all(fault.ends_at > now for fault in self._active.values()):
                return 0  # nothing to record: no write transaction (an idle control plane calls this)
        with self._lock, self._db.transaction() as s:
            ended = 0
            if not self._recovered:
                ended += _end_orphans(s, now, {f.id for f in self._active.values()})
                self._recovered = True
            for key, fault in list(self._active.items()):
                if fault.ends_at <= now:
                    _record_end(s, fault, f"its {fault.spec.for_s:g}s are up")
                    del self._active[key]
                    ended += 1
        if ended:
            self._wake()
        return ended


def _injector(driver: ClusterDriver, cluster: str, kind: str) -> SupportsFaultInjection:
    if not isinstance(driver, SupportsFaultInjection):
        raise ApiError(
            409, "unsupported", f"cluster {cluster}: the {kind} driver cannot inject faults", {"cluster": cluster}
        )
    return driver


def _describe(spec: FaultSpec) -> str:
    if spec.kind is FaultKind.NODE_DOWN:
        return f"node_down ({spec.node})"
    if spec.kind is FaultKind.SLOW:
        return f"slow ({spec.slow_ms} ms)"
    return spec.kind.value


def _record_end(s: Session, fault: Fault, why: str) -> None:
    record_event(
        s,
        EventKind.CLUSTER_FAULT_ENDED,
        cluster_subject(fault.cluster),
        f"fault {_describe(fault.spec)} on cluster {fault.cluster} ended: {why}",
        fault_id=fault.id,
        fault=fault.spec.model_dump(mode="json"),
    )


def _end_orphans(s: Session, now: datetime, ours: set[int]) -> int:
    """Record the end of faults started by an earlier process (not in ``ours``) and never recorded as ended."""
    since = now - timedelta(seconds=MAX_FAULT_SECONDS)
    window = select(EventRow).where(EventRow.created_at >= since)
    started = list(s.scalars(window.where(EventRow.kind == EventKind.CLUSTER_FAULT_STARTED.value)))
    if not started:
        return 0
    ended_rows = s.scalars(window.where(EventRow.kind == EventKind.CLUSTER_FAULT_ENDED.value))
    ended = {e.data.get("fault_id") for e in ended_rows}
    count = 0
    for row in started:
        if row.id in ended or row.id in ours:
            continue
        try:
            spec = FaultSpec.model_validate(row.data["fault"])
        except (KeyError, ValueError):
            log.warning("event %s: a fault_started event without a readable fault; skipped", row.id)
            continue
        cluster = row.subject.removeprefix("cluster/")
        fault = Fault(id=row.id, cluster=cluster, spec=spec, started_at=row.created_at, ends_at=row.created_at)
        _record_end(s, fault, "the control plane restarted, and the simulation holding it with it")
        count += 1
    return count
