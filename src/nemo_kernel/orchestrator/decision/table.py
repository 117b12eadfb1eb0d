"""The node table: the candidates of a decision as numpy columns, built once per inventory revision.

A decision over 1,000 clusters x 10 nodes must take well under a millisecond, which rules out touching 10,000
Python objects per decision. The table holds one row per node, in (cluster name, node name) order, so a row's
index is also its rank among equal scores, and one entry per cluster in name order; strings that filters compare
(architecture, runtimes, TEE, tier, region, country) are small integer codes. Filters become boolean masks and
criteria arrays (``criteria.base.VectorCriterion``); the original candidates stay reachable for the scalar filters
that word a rejection and for criteria without a vectorised form.

A table is immutable: a caller that keeps one between decisions derives the next with :meth:`NodeTable.with_hosted`
(the replicas of another workload) or :meth:`NodeTable.with_allocated` (after placing replicas), both O(nodes) in
numpy without rebuilding anything else. Tables derived so share a memo of what decisions can reuse (``memo``,
``sized``, ``by_allocation``, ``derived``, ``gathered``): values kept with the arrays they came from, read-only.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
_ALLOCATION = ("allocated_cpu", "allocated_memory_mib", "hosted_replicas_of_workload")
_NODE_FIELDS = tuple(f.name for f in fields(NodeCandidate))
if _NODE_FIELDS[-3:] != _ALLOCATION:  # NodeTable.node passes them last, by position
    raise TypeError(f"NodeCandidate's last fields must be {_ALLOCATION}, got {_NODE_FIELDS}")
_static_fields: Callable[[NodeCandidate], tuple[Any, ...]] = operator.attrgetter(*_NODE_FIELDS[:-3])
"""A node's fields but its allocation, in order: ``NodeTable.node`` copies a node with another allocation."""
_new_node: Callable[..., NodeCandidate] = NodeCandidate
"""The constructor, called with every field by position (which mypy cannot check after a starred tuple: the check
of ``_NODE_FIELDS`` above does)."""
_V = TypeVar("_V")
Patch = tuple[_V, Sequence[int]]
"""What a ``patch`` gives: the value brought up to date, and the positions where it differs from the kept one."""
_S = TypeVar("_S", bound=np.generic)
_Patches = dict[int, tuple["weakref.ref[Any]", "weakref.ref[Any]", Sequence[int]]]
"""The patches a table records (``record_patch``): the array made, its source and the positions, by id of the made."""
_SIZES = 64
"""Request sizes (or other keys) whose derived columns a table keeps (``sized``, ``by_allocation``)."""
_ROW_SETS = 8
"""Sets of rows (workloads' requirements) a ``by_allocation`` column is kept for: a scheduler deciding workloads of
a few kinds in turn brings each one's up to date; past that the column starts over."""
_STEPS = 8
"""``with_allocated`` steps a table remembers (``by_allocation``)."""
_PATCHED = 64
"""Rows a kept value is brought up to date at, one by one in Python floats; past that, numpy over every row is
cheaper (a decision placing hundreds of replicas)."""
_DERIVED = 256
"""Values a table keeps for the next decision (``derived``): a few per requirement set."""


class Codes:
    """A string <-> small integer dictionary, in first-seen order."""

    def __init__(self) -> None:
        self.names: list[Any] = []
        self._index: dict[Any, int] = {}

    def code(self, name: Any) -> int:
        """The code of ``name``, assigning the next one the first time it is seen."""
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = len(self.names)
            self.names.append(name)
        return found

    def lookup(self, wanted: frozenset[Any] | set[Any]) -> Bools:
        """A boolean array indexed by code: True for the codes of the ``wanted`` names."""
        out = np.zeros(len(self.names), dtype=bool)
        for name in wanted:
            found = self._index.get(name)
            if found is not None:
                out[found] = True
        return out


def _name(candidate: ClusterCandidate | NodeCandidate) -> str:
    return candidate.name


@dataclass(frozen=True, eq=False)
class NodeTable:
    """The columns of every candidate cluster and node; see the module docstring. Build with :meth:`build`."""

    clusters: tuple[ClusterCandidate, ...]
    cluster_names: Objects
    cluster_ready: Bools
    cluster_cordoned: Bools
    cluster_excluded: Bools
    cluster_has_nodes: Bools
    cluster_tier: Ints
    cluster_region: Ints
    cluster_country: Ints
    cluster_cpu_price: Floats
    cluster_gib_price: Floats
    cluster_intensity: Floats
    first_row: Ints
    """Row of each cluster's first node; its nodes are rows first_row[c] to first_row[c + 1] - 1."""

    nodes: tuple[NodeCandidate, ...]
    node_names: Objects
    """``cluster/node`` per row, as explanations name nodes."""
    cluster_of: Ints
    cpu: Floats
    memory_mib: Floats
    allocated_cpu: Floats
    allocated_memory_mib: Floats
    ready: Bools
    hosted: Ints
    idle_watts: Floats
    max_watts: Floats
    dynamic_watts: Floats
    """max_watts - idle_watts, computed once."""
    power_tabled: Bools
    """Rows whose power model is a piecewise table (the energy criterion interpolates those one by one)."""
    architecture: Ints
    runtimes: Ints
    tee: Ints

    tiers: Codes
    regions: Codes
    countries: Codes
    architectures: Codes
    runtime_lists: Codes
    tees: Codes
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _steps: tuple[tuple[Floats, Floats, tuple[int, ...]], ...] = field(default=(), repr=False)
    """The allocations this one was derived from by ``with_allocated``, oldest first, with the rows each step changed
    (at most ``_STEPS``): a column kept for one of them is brought up to date at those rows (``by_allocation``)."""
    _steps_to: Floats | None = field(default=None, repr=False)
    """The ``allocated_cpu`` the steps lead to: a table that replaced its allocation otherwise has no steps."""

    @classmethod
    def build(cls, candidates: Sequence[ClusterCandidate]) -> NodeTable:
        """The table of ``candidates``; raises ValueError if two clusters share a name (assignments name clusters)."""
        clusters = tuple(sorted(candidates, key=_name))
        for before, after in itertools.pairwise(clusters):
            if before.name == after.name:
                raise ValueError(f"cluster {after.name!r} appears twice among the candidates")
        tiers, regions, countries = Codes(), Codes(), Codes()
        archs, runtime_lists, tees = Codes(), Codes(), Codes()
        nodes: list[NodeCandidate] = []
        cluster_of: list[int] = []
        first_row: list[int] = []
        for index, cluster in enumerate(clusters):
            first_row.append(len(nodes))
            for node in sorted(cluster.nodes, key=_name):
                nodes.append(node)
                cluster_of.append(index)
        first_row.append(len(nodes))

        def floats(values: list[float]) -> Floats:
            return np.array(values, dtype=np.float64)

        cpu, memory = floats([n.cpu for n in nodes]), floats([n.memory_mib for n in nodes])
        allocated_cpu = floats([n.allocated_cpu for n in nodes])
        allocated_memory = floats([n.allocated_memory_mib for n in nodes])
        return cls(
            clusters=clusters,
            cluster_names=np.array([c.name for c in clusters], dtype=object),
            cluster_ready=np.array([c.ready for c in clusters], dtype=bool),
            cluster_cordoned=np.array([c.cordoned for c in clusters], dtype=bool),
            cluster_excluded=np.array([c.excluded_reason is not None for c in clusters], dtype=bool),
            cluster_has_nodes=np.array([bool(c.nodes) for c in clusters], dtype=bool),
            cluster_tier=np.array([tiers.code(str(c.tier)) for c in clusters], dtype=np.int64),
            cluster_region=np.array([regions.code(c.region) for c in clusters], dtype=np.int64),
            cluster_country=np.array([countries.code(c.country) for c in clusters], dtype=np.int64),
            cluster_cpu_price=floats([c.prices.cpu_hour_eur for c in clusters]),
            cluster_gib_price=floats([c.prices.gib_hour_eur for c in clusters]),
            cluster_intensity=floats([c.carbon_intensity for c in clusters]),
            first_row=np.array(first_row, dtype=np.int64),
            nodes=tuple(nodes),
            node_names=np.array(
                [f"{clusters[c].name}/{n.name}" for c, n in zip(cluster_of, nodes, strict=True)]
            ).astype(object)
            if nodes
            else np.array([], dtype=object),
            cluster_of=np.array(cluster_of, dtype=np.int64),
            cpu=cpu,
            memory_mib=memory,
            allocated_cpu=allocated_cpu,
            allocated_memory_mib=allocated_memory,
            ready=np.array([n.ready for n in nodes], dtype=bool),
            hosted=np.array([n.hosted_replicas_of_workload for n in nodes], dtype=np.int64),
            idle_watts=floats([n.power.idle_watts for n in nodes]),
            max_watts=floats([n.power.max_watts for n in nodes]),
            dynamic_watts=floats([n.power.max_watts for n in nodes]) - floats([n.power.idle_watts for n in nodes]),
            power_tabled=np.array([bool(n.power.table) for n in nodes], dtype=bool),
            architecture=np.array([archs.code(n.architecture) for n in nodes], dtype=np.int64),
            runtimes=np.array([runtime_lists.code(tuple(n.runtimes)) for n in nodes], dtype=np.int64),
            tee=np.array([tees.code(n.tee) for n in nodes], dtype=np.int64),
            tiers=tiers,
            regions=regions,
            countries=countries,
            architectures=archs,
            runtime_lists=runtime_lists,
            tees=tees,
        )

    def __len__(self) -> int:
        return len(self.nodes)

    def with_hosted(self, hosted: Mapping[tuple[str, str], int]) -> NodeTable:
        """The same inventory for another workload: ``hosted`` counts its replicas per (cluster, node); a node the
        table does not have is left out, as a candidate list would leave it out."""
        column = np.zeros(len(self.nodes), dtype=np.int64)
        for (cluster, node), count in hosted.items():
            try:
                column[self.row(cluster, node)] = count
            except KeyError:
                continue
        return self._evolve(hosted=column)

    def with_allocated(self, nodes: Iterable[tuple[str, str]], cpu: float, memory_mib: float) -> NodeTable:
        """The inventory after one replica of ``cpu`` and ``memory_mib`` more was allocated on each of ``nodes``
        ((cluster, node), in order; a node named twice took two): a decision's placements, in one step."""
        rows = [self.row(cluster, node) for cluster, node in nodes]
        if not rows:
            return self
        allocated_cpu, allocated_memory = self.allocated_cpu.copy(), self.allocated_memory_mib.copy()
        for row in rows:  # one replica after the other: the same floats as a step per replica
            allocated_cpu[row] += cpu
            allocated_memory[row] += memory_mib
        changed = tuple(sorted(set(rows)))
        steps = self._steps if self._steps_to is self.allocated_cpu else ()
        self.record_patch(allocated_cpu, self.allocated_cpu, changed)
        self.record_patch(allocated_memory, self.allocated_memory_mib, changed)
        return self._evolve(
            allocated_cpu=allocated_cpu,
            allocated_memory_mib=allocated_memory,
            _steps=(*steps, (self.allocated_cpu, self.allocated_memory_mib, changed))[-_STEPS:],
            _steps_to=allocated_cpu,
        )

    @property
    def free_cpu(self) -> Floats:
        """cpu - allocated_cpu, the capacity filter's operands: computed when asked, once per allocation (read-only;
        the filters' verdicts are mostly kept, and a placement changes few rows)."""
        return self.derived(("free-cpu",), (self.allocated_cpu,), lambda: _read_only(self.cpu - self.allocated_cpu))

    @property
    def free_memory_mib(self) -> Floats:
        """memory_mib - allocated_memory_mib, as ``free_cpu``."""
        allocated = self.allocated_memory_mib
        return self.derived(("free-memory",), (allocated,), lambda: _read_only(self.memory_mib - allocated))

    def _evolve(self, **changes: Any) -> NodeTable:
        """``dataclasses.replace`` (the memo shared) without running ``__init__`` over the forty fields again: the
        scheduler derives a table for every decision that places replicas, and the constructor checks nothing."""
        table = object.__new__(type(self))
        table.__dict__.update(self.__dict__)
        table.__dict__.update(changes)
        return table

    def row(self, cluster: str, node: str) -> int:
        """The row of a node; KeyError if the table has no such node."""
        rows = self._memo.get("rows")
        if rows is None:
            rows = self._memo["rows"] = {name: index for index, name in enumerate(self.node_names.tolist())}
        try:
            return int(rows[f"{cluster}/{node}"])
        except KeyError:
            raise KeyError(f"no node {cluster}/{node} in the table") from None

    def node(self, row: int) -> NodeCandidate:
        """The candidate of a row, with the table's allocation and hosted replicas (which may be newer)."""
        node = self.nodes[row]
        cpu, memory, hosted = float(self.allocated_cpu[row]), int(self.allocated_memory_mib[row]), int(self.hosted[row])
        if (node.allocated_cpu, node.allocated_memory_mib, node.hosted_replicas_of_workload) == (cpu, memory, hosted):
            return node
        # The constructor with every field in order: half of ``dataclasses.replace``'s cost, paid by every replica a
        # decision places on a node the table allocated to since.
        return _new_node(*_static_fields(node), cpu, memory, hosted)

    def cluster(self, row: int) -> ClusterCandidate:
        """The cluster of a row."""
        return self.clusters[int(self.cluster_of[row])]

    def memo(self, key: Any, make: Any) -> Any:
        """A value derived from the table's static columns, computed once (e.g. the runtime each node would use)."""
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = make()
        return found

    def sized(self, key: Any, make: Callable[[], _V]) -> _V:
        """A value derived from the static columns for one request size (``key`` names both), computed once.

        Kept for at most ``_SIZES`` keys, then the memo starts over: workloads come in a few sizes, but a table
        serves any number of them.
        """
        kept: dict[Any, Any] = self.memo("sized", dict)
        found = kept.get(key)
        if found is None:
            if len(kept) >= _SIZES:
                kept.clear()
            found = kept[key] = make()
        return cast(_V, found)

    def by_allocation(
        self, key: Any, rows: Ints, make: Callable[[], Floats], update: Callable[[Floats, list[int]], None]
    ) -> Floats:
        """A column at ``rows`` (read-only, aligned with them) derived from the table's allocation (and static
        columns), computed once per allocation and rows (kept with the allocation arrays and ``rows``, compared by
        identity, for up to ``_ROW_SETS`` sets of rows per key). ``key`` names the column and every plain input (the
        request size).

        A column kept for the same ``rows`` and an allocation this table was derived from by a few ``with_allocated``
        is copied and brought up to date by ``update(column, positions)``, which recomputes it at the positions of
        ``rows`` whose allocation changed (one by one, with the same float operations as ``make``): the scheduler
        places replicas between two decisions. Computed at the rows a decision reads, not at every row and then
        gathered: one array per column and allocation instead of two.
        """
        # Kept apart from ``derived``, per key and set of rows (the id names them; the rows themselves are compared):
        # decisions of workloads with other requirements in between each bring their own up to date.
        by_key: dict[Any, dict[int, Any]] = self.memo("by-allocation", dict)
        kept = by_key.get(key)
        if kept is None:
            if len(by_key) >= _SIZES:
                by_key.clear()
            kept = by_key[key] = {}
        found = kept.get(id(rows))
        inputs = (self.allocated_cpu, self.allocated_memory_mib, rows)
        if found is not None:
            (was_cpu, was_memory, was_rows), column = found
            if was_rows is rows:
                if was_cpu is self.allocated_cpu and was_memory is self.allocated_memory_mib:
                    return cast(Floats, column)
                changed = self.changed_since(was_cpu, was_memory)
                positions = None if changed is None else self._positions(rows, changed)
                if positions is not None:
                    updated = column
                    if positions:
                        updated = column.copy()
                        update(updated, positions)
                        updated.setflags(write=False)
                        self.record_patch(updated, column, positions)
                    kept[id(rows)] = (inputs, updated)
                    return cast(Floats, updated)
        elif len(kept) >= _ROW_SETS:
            kept.clear()
        made = make()
        kept[id(rows)] = (inputs, made)
        return made

    def _positions(self, rows: Ints, changed: Sequence[int]) -> list[int] | None:
        """The positions in ``rows`` of those of the table rows ``changed`` (in order) that ``rows`` has, in order;
        None if ``rows`` are not in increasing order (they cannot be searched)."""
        # Asked for by every column a decision brings up to date, for the same rows and changes: the last answer
        # per set of rows is kept (callers only read it).
        kept: dict[int, tuple[Ints, Sequence[int], list[int] | None]] | None = self._memo.get("positions")
        if kept is None:
            kept = self._memo["positions"] = {}
        found = kept.get(id(rows))
        if found is not None and found[0] is rows and found[1] == changed:
            return found[2]
        listed = self._ascending(rows)
        positions = None
        if listed is not None:
            # A few rows: bisecting a list costs less than a numpy search and its wrapper.
            size = len(listed)
            at = [bisect.bisect_left(listed, row) for row in changed]
            positions = [i for i, row in zip(at, changed, strict=True) if i < size and listed[i] == row]
        if found is None and len(kept) >= _ROW_SETS:
            kept.clear()
        kept[id(rows)] = (rows, changed, positions)
        return positions

    def changed_since(self, allocated_cpu: Floats, allocated_memory: Floats) -> list[int] | None:
        """The rows (in order) whose allocation changed since it was ``allocated_cpu`` and ``allocated_memory``, if
        this table was derived from that allocation by the ``with_allocated`` steps it remembers and they changed
        at most ``_PATCHED`` rows; else None."""
        if self._steps_to is not self.allocated_cpu:
            return None
        # Asked for by each column kept with the same earlier allocation: the last answer is kept.
        last = self._memo.get("changed-since")
        if (
            last is not None
            and last[0] is self.allocated_cpu
            and last[1] is allocated_cpu
            and last[2] is allocated_memory
        ):
            return cast("list[int] | None", last[3])
        changed = self._changed_since(allocated_cpu, allocated_memory)
        self._memo["changed-since"] = (self.allocated_cpu, allocated_cpu, allocated_memory, changed)
        return changed

    def _changed_since(self, allocated_cpu: Floats, allocated_memory: Floats) -> list[int] | None:
        rows: set[int] = set()
        for was_cpu, was_memory, changed in reversed(self._steps):
            rows.update(changed)
            if len(rows) > _PATCHED:
                return None
            if was_cpu is allocated_cpu and was_memory is allocated_memory:
                return sorted(rows)
        return None

    def gathered(self, key: Any, column: npt.NDArray[_S], rows: Ints) -> npt.NDArray[_S]:
        """``column[rows]``, kept for the next decision that gathers the same array at the same rows (``derived``;
        read-only). ``key`` names the column (and the request size it was computed for)."""

        def gather() -> npt.NDArray[_S]:
            result = np.take(column, rows)
            result.setflags(write=False)
            return result

        def patch(was: tuple[object, ...], kept: npt.NDArray[_S], changed: list[int]) -> Patch[npt.NDArray[_S]] | None:
            """The kept values again, at the few of ``rows`` among the table rows where ``column`` changed."""
            at = self._positions(rows, changed) if was[1] is rows else None
            if at is None:
                return None
            if not at:
                return kept, []
            result = kept.copy()
            for i in at:  # a few: one by one costs less than building index arrays
                result[i] = column[rows[i]]
            result.setflags(write=False)
            return result, at

        return self.derived(("gathered", key), (column, rows), gather, patch=patch)

    def _ascending(self, rows: Ints) -> list[int] | None:
        """``rows`` as a list if they are in increasing order (as a decision's feasible rows are), so that they can
        be bisected; else None. Kept for up to ``_ROW_SETS`` sets of rows, then started over (a table's verdicts keep
        their rows for many decisions), apart from ``derived``: asked for by every column a decision patches."""
        kept: dict[int, tuple[Ints, list[int] | None]] = self.memo("ascending", dict)
        found = kept.get(id(rows))
        if found is None or found[0] is not rows:
            if len(kept) >= _ROW_SETS:
                kept.clear()
            found = kept[id(rows)] = (rows, rows.tolist() if bool(np.all(rows[1:] > rows[:-1])) else None)
        return found[1]

    def record_patch(self, made: npt.NDArray[Any], source: npt.NDArray[Any], positions: Sequence[int]) -> None:
        """Remember that ``made`` is a copy of ``source`` brought up to date at ``positions`` (in increasing order),
        so that values derived from ``source`` can be brought up to date there too (``derived``'s ``patch``).

        Weak references: a patch is of use only while both arrays are (kept values hold their inputs).
        """
        patches = self._patches()
        if len(patches) >= _DERIVED:
            patches.clear()
        patches[id(made)] = (weakref.ref(made), weakref.ref(source), positions)

    def patched(self, made: object, source: object) -> Sequence[int] | None:
        """The positions at which ``made`` may differ from ``source``, if it was made from it by a patch
        (``record_patch``); else None."""
        found = self._patches().get(id(made))
        if found is None or found[0]() is not made or found[1]() is not source:
            return None
        return found[2]

    def _patches(self) -> _Patches:
        """The patches recorded (``record_patch``), by the id of the array made; read twenty times a decision, so
        without ``memo``'s call."""
        patches = self._memo.get("patches")
        if patches is None:
            patches = self._memo["patches"] = {}
        return cast(_Patches, patches)

    def derived(
        self,
        key: Any,
        inputs: tuple[object, ...],
        make: Callable[[], _V],
        still: Callable[[tuple[object, ...], _V], bool] | None = None,
        patch: Callable[[tuple[object, ...], _V, list[int]], Patch[_V] | None] | None = None,
    ) -> _V:
        """A value computed from ``inputs`` (arrays, the table's or values kept by it), kept under ``key`` for the
        next decision on this table or a table derived from it.

        The inputs are kept with the value and compared by identity, so a value is never served for other objects
        (a decision after ``with_allocated`` has other inputs: the value is computed again and replaces the kept
        one). ``key`` names the value and every plain input (request size, weights). One value per key, at most
        ``_DERIVED`` keys. What is returned is shared: callers must not change it. ``still(inputs it was made from,
        value)`` may say that a kept value holds for the new inputs too (the filters' verdicts after a replica was
        placed on a node that still fits another): it is then kept with them.

        ``patch(inputs it was made from, value, positions)`` may bring a kept value up to date when every input is
        the same object or a patch of it (``record_patch``: a column after ``with_allocated``, and what is derived
        from one), ``positions`` being where they may differ (the union; in the inputs' own indexing): it returns
        the value and the positions where that differs from the kept one (recorded in turn, so what derives from
        it can be patched too), or None to have it made again. A value must be made of the same float operations
        either way, so a patched value is the one ``make`` would give.
        """
        kept: dict[Any, Any] | None = self._memo.get("derived")
        if kept is None:
            kept = self._memo["derived"] = {}
        found = kept.get(key)
        if found is not None:
            if len(found[0]) == len(inputs) and all(map(operator.is_, found[0], inputs)):
                return cast(_V, found[1])
            if still is not None and still(found[0], found[1]):
                kept[key] = (inputs, found[1])
                return cast(_V, found[1])
            if patch is not None:
                positions = self._patched_inputs(found[0], inputs)
                made = None if positions is None else patch(found[0], found[1], positions)
                if made is not None:
                    value, where = made
                    if value is not found[1] and isinstance(value, np.ndarray):
                        self.record_patch(value, found[1], where)
                    kept[key] = (inputs, value)
                    return value
        if found is None and len(kept) >= _DERIVED:
            kept.clear()
        value = make()
        kept[key] = (inputs, value)
        return value

    def _patched_inputs(self, was: tuple[object, ...], now: tuple[object, ...]) -> list[int] | None:
        """Where inputs ``now`` may differ from ``was`` (the union of their patches; each the same object or a patch
        of it), at most ``_PATCHED`` positions; else None."""
        if len(was) != len(now):
            return None
        first: Sequence[int] = ()
        union: set[int] | None = None  # only when two inputs changed: one input's positions are already in order
        for before, after in zip(was, now, strict=True):
            if before is after:
                continue
            changed = self.patched(after, before)
            if changed is None:
                return None
            if not first:
                first = changed
            else:
                union = set(first) if union is None else union
                union.update(changed)
        positions = list(first) if union is None else sorted(union)
        return positions if len(positions) <= _PATCHED else None


def _read_only(values: Floats) -> Floats:
    values.setflags(write=False)
    return values
