"""What each replica of a local cluster uses right now: CPU time and memory summed over its process tree."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class ReplicaUsage:
    """One replica at one moment, as its agent sees it.

    ``cpu_seconds`` is the CPU time of the replica's live processes plus what their exited children used (as the
    kernel accounts it to the parent that reaped them); None, like ``memory_bytes``, when no process runs.
    ``pid`` tells a restarted process from the one read before, whose CPU time the new one does not continue.
    """

    replica: str
    workload: str  # "<namespace>/<name>"
    node: str
    up: bool
    restarts: int
    pid: int | None
    cpu_seconds: float | None
    memory_bytes: float | None
    metrics_url: str | None  # where the replica serves its own series, if it declares them

    def labels(self) -> dict[str, str]:
        """The labels that name this replica on every series about it (the control plane adds the cluster's)."""
        namespace, _, workload = self.workload.partition("/")
        return {"replica": self.replica, "workload": workload, "namespace": namespace, "node": self.node}


def children_map() -> Mapping[int, list[int]]:
    """Pid -> pids of its children, for every process on the machine, from one pass over ``/proc``.

    ``Process.children()`` walks all of ``/proc`` each time it is called: once per observation, not once per replica.
    """
    children: dict[int, list[int]] = defaultdict(list)
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid:
            children[ppid].append(proc.pid)
    return children


def tree_usage(root: psutil.Process, children: Mapping[int, list[int]]) -> tuple[float, float] | None:
    """CPU seconds and resident bytes of ``root`` and its descendants; None when ``root`` itself is gone.

    A descendant that exits between the listing and the reading is skipped (its time shows up in its parent's
    ``children_*`` once reaped).
    """
    try:
        cpu, rss = _one(root)
    except psutil.Error:
        return None
    stack = list(children.get(root.pid, ()))
    seen = {root.pid}
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(psutil.Error):
            more_cpu, more_rss = _one(psutil.Process(pid))
            cpu += more_cpu
            rss += more_rss
        stack.extend(children.get(pid, ()))
    return cpu, rss


def _one(proc: psutil.Process) -> tuple[float, float]:
    with proc.oneshot():
        times = proc.cpu_times()
        rss = float(proc.memory_info().rss)
    return times.user + times.system + times.children_user + times.children_system, rss
