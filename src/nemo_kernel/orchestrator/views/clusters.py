"""Cluster views: the clusters with their phase and live sandbox, their nodes and their history."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from nemo_kernel.domain import ClusterStatus, Event, NodeStatus
from nemo_kernel.orchestrator.placement import ParsedSpecs
from nemo_kernel.store import Database, events
from nemo_kernel.store import clusters as cluster_store

#: How a cluster's agent keeps replicas from the control plane's data, as its last heartbeat said.
SandboxOf = Callable[[str], str | None]
#: When a cluster last answered a heartbeat of the running control plane (None: not yet, or no such plane).
LastHeartbeatOf = Callable[[str], datetime | None]


def never_heard(_: str) -> datetime | None:
    """The :data:`LastHeartbeatOf` of views without a running control plane: the stored time is shown."""
    return None


class ClusterViews:
    """Reads of clusters and nodes."""

    def __init__(self, db: Database, sandbox_of: SandboxOf, last_heartbeat_of: LastHeartbeatOf) -> None:
        self._db = db
        self._sandbox_of = sandbox_of
        self._last_heartbeat_of = last_heartbeat_of
        # Specs validated by earlier lists, by their stored text: a list validates only what changed since (0.3 ms
        # a spec of 10 nodes). Bounded by the registered clusters (each list keeps only those it read); the lock,
        # as lists run in the API's threads at once.
        self._specs = ParsedSpecs()
        self._specs_lock = threading.Lock()

    def every(self) -> list[ClusterStatus]:
        """Every cluster with its phase, by name."""
        with self._db.snapshot() as s:
            rows = cluster_store.clusters_with_spec_text(s)
            texts = {row.name: text for row, text in rows}
            with self._specs_lock:
                statuses = [
                    cluster_store.to_cluster_status(row, lambda r: self._specs.cluster(r.name, texts[r.name]))
                    for row, _ in rows
                ]
                self._specs.keep(set(texts))
        return [self.live(status) for status in statuses]

    def get(self, name: str) -> ClusterStatus:
        """One cluster; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            return self.live(cluster_store.to_cluster_status(cluster_store.get_cluster(s, name)))

    def nodes(self, name: str) -> list[NodeStatus]:
        """The nodes of a cluster with their capacity accounting and the released replicas each still runs;
        ``NotFound`` if the cluster is unknown."""
        with self._db.snapshot() as s:
            row = cluster_store.get_cluster(s, name)
            stopping = cluster_store.stopping_by_node(s, name)
            return [cluster_store.to_node_status(row, n, stopping=stopping.get(n.name, 0)) for n in row.nodes]

    def history(self, name: str, *, after: int = 0, limit: int = 500) -> list[Event]:
        """Events of a cluster after the id ``after``, oldest first; ``NotFound`` if the cluster is unknown."""
        with self._db.snapshot() as s:
            cluster_store.get_cluster(s, name)
            return events.history(s, events.cluster_subject(name), after_id=after, limit=limit)

    def live(self, status: ClusterStatus) -> ClusterStatus:
        """``status`` (a stored cluster, or a command's answer) with its live sandbox and last heartbeat, as every
        cluster view shows."""
        # what the last heartbeat said, not stored: it describes the running agent
        live: dict[str, object] = {"sandbox": self._sandbox_of(status.name)}
        # the stored stamp is written about once a minute (``resources.STAMP_INTERVAL``); the running plane knows
        heard = self._last_heartbeat_of(status.name)
        if heard is not None:
            live["last_heartbeat"] = heard
        return status.model_copy(update=live)
