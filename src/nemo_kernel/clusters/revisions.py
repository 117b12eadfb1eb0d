"""Revisions of one cluster's reports, so that a heartbeat carries only what changed since the caller's last one.

A driver (or an agent) hands :class:`ReportRevisions` its current replicas and nodes whenever they may have
changed (:meth:`~ReportRevisions.update`); each replica whose reportable state differs from the last update, each
node whose readiness does, and each replica that disappeared, takes the next revision number. A revision is
``"<boot>:<number>"``: the boot is random per log, so a revision from an earlier agent or simulation is unknown to
this one and gets a full report, as does one older than the oldest removal still remembered (the log of removals
is bounded; the current replicas are remembered once each).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from nemo_kernel.clusters.base import ClusterReport, NodeReport, ReplicaReport

MAX_GONE = 10_000
"""Removals remembered; a caller further behind than that gets a full report."""

_State = tuple[object, ...]


def reportable(replica: ReplicaReport) -> _State:
    """What of a replica counts as a change (its usage does not: it reaches the analytics engine by scraping)."""
    return (replica.phase, replica.url, replica.pid, replica.restarts, replica.exit_code, replica.node, replica.message)


class ReportRevisions:
    """The change log of one cluster's reports; see the module docstring."""

    def __init__(self, max_gone: int = MAX_GONE) -> None:
        self._boot = uuid.uuid4().hex
        self._max_gone = max_gone
        self._number = 0
        self._floor = 0  # the oldest ``since`` that can still be answered by changes
        self._replicas: dict[str, tuple[_State, int]] = {}  # id -> (reportable state, revision it changed at)
        self._nodes: dict[str, tuple[bool, int]] = {}  # name -> (ready, revision it changed at)
        self._gone: dict[str, int] = {}  # id -> revision it was removed at, oldest first

    @property
    def revision(self) -> str:
        """The current revision."""
        return f"{self._boot}:{self._number}"

    def update(self, replicas: Iterable[ReplicaReport], nodes: Iterable[NodeReport]) -> None:
        """Record the cluster as it is now: what differs from the last update takes a new revision."""
        present: set[str] = set()
        for r in replicas:
            present.add(r.id)
            state = reportable(r)
            known = self._replicas.get(r.id)
            if known is None or known[0] != state:
                self._number += 1
                self._replicas[r.id] = (state, self._number)
                self._gone.pop(r.id, None)
        for rid in [rid for rid in self._replicas if rid not in present]:
            self._number += 1
            del self._replicas[rid]
            self._gone[rid] = self._number
        while len(self._gone) > self._max_gone:
            oldest = next(iter(self._gone))
            self._floor = self._gone.pop(oldest)
        for n in nodes:
            node = self._nodes.get(n.name)
            if node is None or node[0] != n.ready:
                self._number += 1
                self._nodes[n.name] = (n.ready, self._number)

    def report(
        self,
        cluster: str,
        replicas: Sequence[ReplicaReport],
        nodes: Sequence[NodeReport],
        sandbox: str | None,
        since: str | None,
    ) -> ClusterReport:
        """The report to answer ``status(since)`` with, from the replicas and nodes last given to :meth:`update`:
        whole when ``since`` is None or unknown, else only what changed after it."""
        after = self._known(since)
        if after is None:
            return ClusterReport.model_construct(
                cluster=cluster,
                nodes=list(nodes),
                replicas=list(replicas),
                sandbox=sandbox,
                revision=self.revision,
                full=True,
                gone=[],
            )
        if after == self._number:  # nothing changed: no scan (an idle cluster's heartbeat)
            changed_replicas: list[ReplicaReport] = []
            changed_nodes: list[NodeReport] = []
            gone: list[str] = []
        else:
            changed_replicas = [r for r in replicas if self._replicas.get(r.id, ((), 0))[1] > after]
            changed_nodes = [n for n in nodes if self._nodes.get(n.name, (True, 0))[1] > after]
            gone = [rid for rid, at in self._gone.items() if at > after]
        return ClusterReport.model_construct(
            cluster=cluster,
            nodes=changed_nodes,
            replicas=changed_replicas,
            sandbox=sandbox,
            revision=self.revision,
            full=False,
            gone=gone,
        )

    def _known(self, since: str | None) -> int | None:
        """The revision number ``since`` names, if this log can answer it with changes."""
        if since is None:
            return None
        boot, _, number = since.partition(":")
        if boot != self._boot or not number.isdecimal() or len(number) > 18:
            return None
        after = int(number)
        return after if self._floor <= after <= self._number else None


class MergedReport:
    """The caller's side: one cluster's whole report, kept up to date from its full and partial reports."""

    def __init__(self) -> None:
        self.revision: str | None = None
        """What to pass as ``since`` next; None: ask for a full report (the driver knows no revisions, or nothing
        was heard yet)."""
        self.report: ClusterReport | None = None
        """The cluster as of the last report merged, always whole (``full``)."""
        self._replicas: dict[str, ReplicaReport] = {}
        self._nodes: dict[str, NodeReport] = {}

    def merge(self, report: ClusterReport) -> bool:
        """Take in a report; True if the cluster's view changed (a full report always counts as a change: it is
        the first, a resync, or comes from a driver that reports no changes)."""
        self.revision = report.revision
        if report.full:
            self._replicas = {r.id: r for r in report.replicas}
            self._nodes = {n.name: n for n in report.nodes}
        elif report.replicas or report.nodes or report.gone or self.report is None:
            for r in report.replicas:
                self._replicas[r.id] = r
            for rid in report.gone:
                self._replicas.pop(rid, None)
            for n in report.nodes:
                self._nodes[n.name] = n
        else:
            return False  # nothing changed: the view (and its report object) stays as it is
        self.report = ClusterReport.model_construct(
            cluster=report.cluster,
            nodes=list(self._nodes.values()),
            replicas=list(self._replicas.values()),
            sandbox=report.sandbox,
            revision=report.revision,
            full=True,
            gone=[],
        )
        return True
