"""What each replica of a local cluster uses right now: CPU time and memory summed over its process tree."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


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


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class _Stat:
    ppid: int
    cpu_seconds: float  # utime + stime + cutime + cstime: its own and its reaped children's
    rss_bytes: float


class ProcessTrees:
    """CPU time and resident memory of process trees, read from ``/proc/<pid>/stat``.

    Which processes make up each tree needs every process's parent, so a walk over all of ``/proc`` (the costly
    part: the kernel formats a stat file per process); it is done when a tree is asked for the first time, or once
    ``rescan_every`` seconds. In between only the trees' known members are read. A child started since the last walk
    is counted from the next one (its CPU time then, all of it); one that exits in between is not lost either, as
    its parent's ``cutime`` holds it once reaped.
    """

    def __init__(self, rescan_every: float = 15.0, proc: Path = Path("/proc")) -> None:
        self.rescan_every = rescan_every
        self._proc = proc
        self._members: dict[int, list[int]] = {}  # root pid -> pids of its tree at the last walk
        self._next_walk = 0.0  # monotonic

    def usage(self, roots: Iterable[int], now: float) -> dict[int, tuple[float, float]]:
        """CPU seconds and resident bytes per root pid, for the roots that run; ``now`` is monotonic seconds."""
        wanted = list(roots)
        if now >= self._next_walk or any(root not in self._members for root in wanted):
            self._walk(wanted)
            self._next_walk = now + self.rescan_every
        out: dict[int, tuple[float, float]] = {}
        for root in wanted:
            cpu = rss = 0.0
            alive = []
            for pid in self._members.get(root, ()):
                stat = self._read(pid)
                if stat is None:
                    if pid == root:
                        break  # the root is gone: the tree no longer runs
                    continue
                alive.append(pid)
                cpu += stat.cpu_seconds
                rss += stat.rss_bytes
            else:
                if alive:
                    out[root] = (cpu, rss)
            self._members[root] = alive
        return out

    def _walk(self, roots: list[int]) -> None:
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.scandir(self._proc):
            if entry.name.isdigit():
                stat = self._read(int(entry.name))
                if stat is not None:
                    children[stat.ppid].append(int(entry.name))
        self._members = {}
        for root in roots:
            members, stack = [], [root]
            while stack:
                pid = stack.pop()
                if pid not in members:
                    members.append(pid)
                    stack.extend(children.get(pid, ()))
            self._members[root] = members  # the root first: its absence means the tree is gone

    def _read(self, pid: int) -> _Stat | None:
        try:
            with open(f"{self._proc}/{pid}/stat", "rb") as handle:
                return _parse_stat(handle.read())
        except OSError:
            return None  # exited


def _parse_stat(raw: bytes) -> _Stat | None:
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return _Stat(ppid=int(fields[1]), cpu_seconds=ticks / _TICKS, rss_bytes=float(int(fields[21]) * _PAGE))
    except (IndexError, ValueError):
        return None
