"""The decision engine: filter every cluster and node, score the survivors, place replicas greedily, explain.

The rules are those of the reference engine (``reference.ReferenceEngine``, which states them one object at a
time); this engine applies them to a :class:`~table.NodeTable` with numpy, and a test checks on seeded random
inventories that both make the same decision. In short:

- Filters, in the order of ``CLUSTER_FILTERS`` then ``NODE_FILTERS``; a cluster rejected as a whole is reported
  under its first rejecting filter, a node under every filter rejecting it (``masks``; ``verdicts`` keeps all but
  capacity's per table and set of requirements).
- Criteria: each ``Criterion``'s raw values min-max normalised over the feasible nodes, each ``LoadCriterion``'s
  score as the node stands, weighted into ``total`` (``scoring``).
- Replicas placed one at a time on the node with the smallest key (below a spread min ? 0 : 1, replicas of the
  workload on the node, -total, cluster name, node name); a node at a ``placement.spread`` max is skipped. Only
  the node that took a replica changes, so only it is re-scored.

Kept values: a :class:`~table.NodeTable` kept between decisions keeps the filters' verdicts, the criteria's
columns and the scores with the arrays they came from (``NodeTable.derived``, compared by identity), and brings
them up to date at the rows ``with_allocated`` changed; a decision on other arrays computes them again.

Explanations: ``Detail.COMPACT`` keeps every cluster's verdict grouped by filter (``verdicts``) and the chosen and
best other nodes with their scores (``candidates``); ``Detail.NODES`` keeps one verdict per cluster and node, as the
reference engine does (rejected nodes' reasons are then worded one by one, which costs most of such a decision).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

import numpy as np

from nemo_kernel.domain import DeploymentSpec, Detail, LatencyMatrix, PlacementDecision, SpreadBy, utcnow
from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate
from nemo_kernel.orchestrator.decision.criteria import (
    DEFAULT_CRITERIA,
    AnyCriterion,
    Criterion,
    LoadColumns,
    LoadCriterion,
    NodeLoad,
    VectorCriterion,
    VectorLoadCriterion,
)
from nemo_kernel.orchestrator.decision.explain import summarise
from nemo_kernel.orchestrator.decision.filters import (
    CLUSTER_FILTERS,
    NODE_FILTERS,
    Requirements,
    all_rejections,
    choose_runtime,
    first_rejection,
)
from nemo_kernel.orchestrator.decision.scoring import (
    checked_weights,
    default_weights,
    division_targets,
    spread,
    workload_weights,
)
from nemo_kernel.orchestrator.decision.table import Bools, Floats, Ints, NodeTable, Patch
from nemo_kernel.orchestrator.decision.verdicts import Verdicts, explanation_groups, rejected_names, run_filters

TOP_CANDIDATES = 5
"""Feasible nodes a compact explanation shows besides the chosen ones: the best by the first replica's ranking."""
_DEEP = 64
"""Best nodes a table keeps at least (``_first_best``): those a decision placed on drop out as they fill, so the
next decisions bring the list up to date instead of searching every node again, until fewer are left than asked."""
_FEW = 16  # below this many picks, _best takes repeated maxima rather than partitioning every node


@dataclass(slots=True)
class _Ranking:
    """Scores of the feasible nodes (aligned with ``Verdicts.feasible``) and their state during ``_assign``."""

    rows: Ints  # the feasible rows
    weights: Mapping[str, float]
    total_weight: float
    columns: dict[str, Floats | _Unweighted]  # shown scores per criterion, as for the first replica
    fixed: Floats  # weighted sum of the Criterion scores
    load_weights: list[float]
    loads: LoadColumns  # the table's, at the feasible rows (read-only, kept by the table)
    took: dict[int, NodeLoad]  # the nodes that took replicas in ``_assign``, by feasible index, with their loads
    totals: Floats  # current total of each node
    first_totals: Floats  # total for the first replica, as explained
    first_hosted: Ints
    first_best: list[int]  # the best nodes for the first replica, best first (``_first_best``)


@dataclass(frozen=True, slots=True)
class _Unweighted:
    """The scores of a criterion the decision weighs 0: shown, never summed, so normalised only where read."""

    raw: Floats
    low: float
    width: float | None  # None: every node scores 1.0
    lower_is_better: bool

    def __getitem__(self, index: int) -> float:
        if self.width is None:
            return 1.0
        # Python floats are IEEE doubles as numpy's are: the same operations as _normalised, the same result.
        share = (float(self.raw[index]) - self.low) / self.width
        return 1.0 - share if self.lower_is_better else share


class DecisionEngine:
    """Decides where the replicas of a workload run, and records why.

    Pure: no I/O, no state shared between calls; the caller supplies the inventory (a list of candidates, or a
    :class:`NodeTable` it keeps between decisions: :meth:`table`, which then keeps what the next decision can
    reuse, see ``NodeTable.derived``) and stores the result. ``criteria`` are the
    plugins nodes are scored on (:data:`DEFAULT_CRITERIA`); ``weights`` maps their names to weights from 0 to 1000
    (a missing one weighs 0; ``None``: each its default, ``domain.DEFAULT_WEIGHTS``); a workload's
    ``placement.optimize`` preset and then its ``placement.weights`` override them for its decisions. ``latency``
    is the matrix of round-trip times between regions for the latency criterion and filter. ``clock`` stamps
    ``decided_at``, so tests can pin time.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        criteria: Sequence[AnyCriterion] = DEFAULT_CRITERIA,
        latency: LatencyMatrix | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"criteria must have different names, got {names}")
        for criterion in criteria:
            if isinstance(criterion, Criterion) == isinstance(criterion, LoadCriterion):
                raise TypeError(f"criterion {criterion.name!r} must implement raw() or score(), and only one")
        self._fixed = tuple(c for c in criteria if isinstance(c, Criterion))
        self._by_load = tuple(c for c in criteria if isinstance(c, LoadCriterion))
        # Checking a runtime protocol costs microseconds each time; a decision would pay it per criterion.
        self._raw_many = {c.name: c.raw_many for c in self._fixed if isinstance(c, VectorCriterion)}
        self._score_many = {c.name: c.score_many for c in self._by_load if isinstance(c, VectorLoadCriterion)}
        self._weights = checked_weights(default_weights(names) if weights is None else weights, names)
        self._latency = latency
        self._clock = clock

    @property
    def weights(self) -> dict[str, float]:
        """The weights in use unless a workload overrides them, every criterion present."""
        return dict(self._weights)

    @property
    def latency(self) -> LatencyMatrix | None:
        """The matrix of round-trip times between regions the latency criterion and filter use."""
        return self._latency

    @staticmethod
    def table(candidates: Sequence[ClusterCandidate]) -> NodeTable:
        """The node table of ``candidates``, to keep between decisions over the same inventory."""
        return NodeTable.build(candidates)

    def decide(
        self,
        namespace: str,
        name: str,
        version: int,
        spec: DeploymentSpec,
        replicas_needed: Sequence[int],
        candidates: Sequence[ClusterCandidate] | NodeTable,
        *,
        detail: Detail = Detail.NODES,
    ) -> PlacementDecision:
        """Place the replicas with the given indexes on the candidate clusters' nodes.

        Every candidate cluster appears in the explanation (see the module docstring for ``detail``). The outcome is
        Placed when every index got a node, Partial when only some did (the rest wait for capacity), Pending when
        nothing fits. The weights used are stored with the decision; a workload that weighs every criterion 0 has
        no preference (every total is 0, spreading and names decide). Raises ValueError if two candidates share a
        cluster name, or if the workload weighs a criterion the engine does not have.
        """
        table = candidates if isinstance(candidates, NodeTable) else NodeTable.build(candidates)
        req = Requirements.of(spec, self._latency)
        weights = workload_weights(self._weights, spec)
        found = run_filters(table, req)
        ranking = self._rank(table, found, req, weights)
        assignments, best_total = self._assign(table, found, ranking, req, replicas_needed)

        needed, placed = len(replicas_needed), len(assignments)
        placed_rows = sorted(ranking.took)
        if detail is Detail.NODES:
            rows, rejected = _node_rows(table, found, ranking, req)
        else:
            rows = _compact_rows(table, found, ranking, placed_rows)
            # The summary names rejections only when some replica is left unplaced.
            rejected = rejected_names(table, found) if placed < needed else {}
        summary = summarise(
            needed=needed,
            placed_on=[
                (table.cluster(int(found.feasible[i])).name, table.nodes[int(found.feasible[i])].name, int(k))
                for i, k in ((i, ranking.took[i].placed) for i in placed_rows)
            ],
            best_score=best_total,
            rejections=rejected,
            feasible_nodes=len(found.feasible),
            clusters=len(table.clusters),
        )
        return PlacementDecision.model_validate(
            {
                "workload": name,
                "namespace": namespace,
                "version": version,
                "outcome": _outcome(needed, placed),
                "assignments": assignments,
                "candidates": rows,
                "weights": dict(ranking.weights),
                "summary": summary,
                "decided_at": self._clock(),
                "detail": detail,
                "verdicts": explanation_groups(table, found, req) if detail is Detail.COMPACT else [],
            }
        )

    def _rank(self, table: NodeTable, found: Verdicts, req: Requirements, weights: Mapping[str, float]) -> _Ranking:
        """Score every feasible node on every criterion, column by column.

        What follows from the same arrays (a criterion's raw values kept by the table, the same feasible rows) is
        kept by the table for the next decision (``NodeTable.derived``, compared by identity): a criterion that
        computes its values afresh (a plugin's scalar ``raw``) is normalised again, as is everything after it.
        """
        rows = found.feasible
        columns: dict[str, Floats | _Unweighted] = {}
        fixed: Floats | None = None
        for c in self._fixed:
            many = self._raw_many.get(c.name)
            raw = (
                many(table, rows, req)
                if many is not None
                else np.array([c.raw(table.cluster(r), table.node(r), req) for r in rows.tolist()], dtype=np.float64)
            )
            if not len(raw):
                columns[c.name] = raw
                continue
            # After with_allocated, each is brought up to date at the rows that changed (``NodeTable.derived``).
            bounds = table.derived(("bounds", c.name), (raw,), partial(_bounds, raw), patch=partial(_bounds_now, raw))
            if weights[c.name] == 0.0:
                # fixed + 0 * scores would be fixed (scores are finite, fixed >= +0.0): normalise only what is shown.
                columns[c.name] = _Unweighted(raw, bounds[0], bounds[2], c.lower_is_better)
                continue
            columns[c.name] = scores = table.derived(
                ("normalised", c.name, c.lower_is_better),
                (raw, bounds),
                partial(_kept_normalised, raw, bounds, c.lower_is_better),
                patch=partial(_normalised_now, raw, bounds, c.lower_is_better),
            )
            weight = weights[c.name]
            fixed = (
                scores
                if fixed is None and weight == 1.0
                else table.derived(
                    ("fixed", c.name, weight),
                    (fixed, scores),
                    partial(_kept_plus, fixed, weight, scores),
                    patch=partial(_plus_now, fixed, weight, scores),
                )
            )
        if fixed is None:
            fixed = table.derived(("no-fixed",), (rows,), partial(_no_fixed, rows))
        # Read-only, kept by the table: ``_assign`` keeps what the decision changes apart (``_Ranking.took``).
        hosted = table.gathered("hosted", table.hosted, rows)
        loads = LoadColumns.of_table(
            table, rows, hosted, table.derived(("none-placed",), (rows,), partial(_none_placed, rows))
        )
        ranking = _Ranking(
            rows=rows,
            weights=weights,
            total_weight=sum(weights.values()),
            columns=columns,
            fixed=fixed,
            load_weights=[weights[c.name] for c in self._by_load],
            loads=loads,
            took={},
            totals=fixed,
            first_totals=fixed,
            first_hosted=hosted,
            first_best=[],
        )
        live = [self._load_scores(by_load, table, rows, loads, req) for by_load in self._by_load]
        columns.update((by_load.name, scores) for by_load, scores in zip(self._by_load, live, strict=True))
        ranking.totals = ranking.first_totals = table.derived(
            ("totals", tuple(ranking.load_weights), ranking.total_weight),
            (fixed, *live),
            lambda: _read_only(_totals(ranking, fixed, live)),
            patch=partial(_totals_now, ranking, fixed, live),
        )
        return ranking

    def _load_scores(
        self, c: LoadCriterion, table: NodeTable, rows: Ints, loads: LoadColumns, req: Requirements
    ) -> Floats:
        many = self._score_many.get(c.name)
        if many is not None:
            return many(table, rows, loads, req)
        values = [
            c.score(
                table.cluster(r),
                table.node(r),
                NodeLoad(float(loads.used_cpu[i]), float(loads.used_memory_mib[i]), int(loads.hosted[i])),
                req,
            )
            for i, r in enumerate(rows.tolist())
        ]
        return np.array(values, dtype=np.float64)

    def _assign(
        self, table: NodeTable, found: Verdicts, ranking: _Ranking, req: Requirements, replicas_needed: Sequence[int]
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Place each replica on the best node, then re-score that node; the assignments and the first pick's total.

        Without spread constraints only the node that took a replica changes, and its key only gets worse (one
        more hosted replica), so the best node for each of r replicas is among the r best at the start or the
        nodes already changed: a heap of those, as the reference engine keeps one of every node.
        """
        if req.spread or req.division:
            return self._assign_scan(table, found, ranking, req, replicas_needed)
        rows, hosted, totals = found.feasible, ranking.loads.hosted, ranking.totals
        top = _first_best(table, ranking, max(len(replicas_needed), TOP_CANDIDATES))[: len(replicas_needed)]
        heap = [(int(hosted[i]), -float(totals[i]), i) for i in top]  # in key order: already a heap
        assignments: list[dict[str, Any]] = []
        best_total: float | None = None
        for replica in replicas_needed:
            if not heap:
                break
            _, negative_total, index = heapq.heappop(heap)
            if best_total is None:
                best_total = -negative_total
            row = int(rows[index])
            assignments.append({"index": replica, "cluster": table.cluster(row).name, "node": table.nodes[row].name})
            total = self._took_one(table, ranking, req, index)
            if total is not None:
                heapq.heappush(heap, (ranking.took[index].hosted, -total, index))
        return assignments, best_total

    def _took_one(self, table: NodeTable, ranking: _Ranking, req: Requirements, index: int) -> float | None:
        """Account one more replica on feasible node ``index``: its new total, or None when it is full.

        One node: each load criterion's scalar ``score`` (the same floats as ``score_many``, a test checks) and the
        sum of ``_totals`` in Python floats (IEEE doubles too) cost less than numpy calls on one-element arrays.
        """
        row = int(ranking.rows[index])
        took = ranking.took.get(index)
        if took is None:  # the table's allocation (what ``loads`` gathers), read at the one row
            took = ranking.took[index] = NodeLoad(
                float(table.allocated_cpu[row]),
                float(table.allocated_memory_mib[row]),
                int(ranking.loads.hosted[index]),
            )
        # Python floats are IEEE doubles: the same sums as adding to the numpy columns.
        took.placed += 1
        took.hosted += 1
        took.used_cpu += req.cpu
        took.used_memory_mib += req.memory_mib
        used_cpu, used_memory = took.used_cpu, took.used_memory_mib
        if not (
            float(table.cpu[row]) - used_cpu + _TOLERANCE >= req.cpu
            and float(table.memory_mib[row]) - used_memory >= req.memory_mib
        ):
            return None
        if ranking.total_weight <= 0.0:
            return 0.0
        cluster, node = table.cluster(row), table.node(row)
        load = NodeLoad(used_cpu, used_memory, took.hosted, took.placed)  # a copy: criteria get their own
        total = float(ranking.fixed[index])
        for c, weight in zip(self._by_load, ranking.load_weights, strict=True):
            if weight != 0.0:  # as in _totals
                score = c.score(cluster, node, load, req)
                total = total + (score if weight == 1.0 else weight * score)
        return total / ranking.total_weight

    def _assign_scan(
        self, table: NodeTable, found: Verdicts, ranking: _Ranking, req: Requirements, replicas_needed: Sequence[int]
    ) -> tuple[list[dict[str, Any]], float | None]:
        """``_assign`` under ``placement.spread``: groups fill as replicas land, which changes other nodes' keys
        (a group reaching its max or min), so every replica scans the live nodes."""
        rows = found.feasible
        alive = np.ones(len(rows), dtype=bool)  # still fits another replica
        hosted_now = ranking.loads.hosted.copy()  # the table's, plus what this decision placed
        totals = ranking.totals.copy()
        groups = _SpreadGroups(table, rows, req)
        assignments: list[dict[str, Any]] = []
        best_total: float | None = None
        for replica in replicas_needed:
            candidates = np.flatnonzero(groups.eligible(alive))
            if not len(candidates):
                break
            candidates = groups.first(candidates)
            hosted = hosted_now[candidates]
            candidates = candidates[hosted == hosted.min()]
            best = totals[candidates]
            # Smallest key: fewest hosted, highest total, then name order, which is row order (argmax takes the first).
            index = int(candidates[int(np.argmax(best))])
            if best_total is None:
                best_total = float(totals[index])
            row = int(rows[index])
            assignments.append({"index": replica, "cluster": table.cluster(row).name, "node": table.nodes[row].name})
            groups.add(index)
            hosted_now[index] += 1
            total = self._took_one(table, ranking, req, index)
            if total is None:
                alive[index] = False
            else:
                totals[index] = total
        return assignments, best_total


_TOLERANCE = 1e-9  # filters.CPU_TOLERANCE, the same float: a node filled exactly to capacity takes the last replica


def _read_only(values: Floats) -> Floats:
    """``values``, made read-only: the table keeps them for the next decision."""
    values.setflags(write=False)
    return values


def _none_placed(rows: Ints) -> Ints:
    """No replica placed yet on any of ``rows`` (read-only: the table keeps it for the next decision)."""
    placed = np.zeros(len(rows), dtype=np.int64)
    placed.setflags(write=False)
    return placed


def _no_fixed(rows: Ints) -> Floats:
    """The weighted sum of the criteria when every one weighs 0 (read-only, kept)."""
    return _read_only(np.zeros(len(rows), dtype=np.float64))


_Bounds = tuple[float, float, float | None]
"""The lowest and highest of a criterion's raw values, and their range (None: all equal, give or take rounding)."""


def _bounds(values: Floats) -> _Bounds:
    """The bounds of ``values`` (not empty)."""
    low, high = float(values.min()), float(values.max())
    return low, high, _width(low, high)


def _width(low: float, high: float) -> float | None:
    width = high - low
    return None if width <= 1e-12 * max(abs(low), 1.0) else width


def _bounds_now(
    values: Floats, was: tuple[object, ...], bounds: _Bounds, positions: list[int]
) -> Patch[_Bounds] | None:
    """``_bounds`` of ``values``, a patch of the values ``bounds`` are of: the same unless a patched position held
    the lowest or the highest (then None: the extreme may have moved anywhere)."""
    before = cast(Floats, was[0])
    low, high, _ = bounds
    new_low, new_high = low, high
    for p in positions:
        if float(before[p]) in (low, high):
            return None
        value = float(values[p])
        new_low, new_high = min(new_low, value), max(new_high, value)
    if (new_low, new_high) == (low, high):
        return bounds, []  # the same object: what is normalised by these bounds can be patched
    return (new_low, new_high, _width(new_low, new_high)), []


def _kept_normalised(values: Floats, bounds: _Bounds, lower_is_better: bool) -> Floats:
    return _read_only(_normalised(values, bounds, lower_is_better=lower_is_better))


def _normalised_now(
    values: Floats, bounds: _Bounds, lower_is_better: bool, was: tuple[object, ...], kept: Floats, positions: list[int]
) -> Patch[Floats]:
    """``_normalised`` at the patched positions of ``values``, in Python floats (IEEE doubles: the same results);
    the bounds are the same object as the kept scores', so every other score holds."""
    low, _, width = bounds
    if width is None:
        return kept, []  # every score 1.0
    scores = kept.copy()
    for p in positions:
        share = (float(values[p]) - low) / width
        scores[p] = 1.0 - share if lower_is_better else share
    return _read_only(scores), positions


def _kept_plus(total: Floats | None, weight: float, scores: Floats) -> Floats:
    return _read_only(_plus(total, weight, scores))


def _plus_now(
    total: Floats | None, weight: float, scores: Floats, was: tuple[object, ...], kept: Floats, positions: list[int]
) -> Patch[Floats]:
    """``_plus`` at the patched positions, in Python floats."""
    result = kept.copy()
    for p in positions:
        term = float(scores[p]) if weight == 1.0 else weight * float(scores[p])
        result[p] = term if total is None else float(total[p]) + term
    return _read_only(result), positions


def _normalised(values: Floats, bounds: _Bounds, *, lower_is_better: bool) -> Floats:
    """``scoring.normalised`` on an array: the same operations, so the same floats."""
    if not len(values):
        return values
    low, _, width = bounds
    if width is None:
        return np.ones(len(values), dtype=np.float64)
    if lower_is_better:
        result: Floats = 1.0 - (values - low) / width
        return result
    result = (values - low) / width
    return result


def _totals(ranking: _Ranking, fixed: Floats, live: Sequence[Floats]) -> Floats:
    """The weighted mean of each node's scores, summed in the reference engine's order."""
    if ranking.total_weight <= 0.0:
        return np.zeros(len(fixed), dtype=np.float64)
    weighted = fixed
    for weight, scores in zip(ranking.load_weights, live, strict=True):
        if weight != 0.0:  # adding 0 * scores changes nothing (see _rank)
            weighted = _plus(weighted, weight, scores)
    result: Floats = weighted / ranking.total_weight
    return result


def _totals_now(
    ranking: _Ranking,
    fixed: Floats,
    live: Sequence[Floats],
    was: tuple[object, ...],
    kept: Floats,
    positions: list[int],
) -> Patch[Floats]:
    """``_totals`` at the patched positions, in Python floats, in the same order."""
    if ranking.total_weight <= 0.0:
        return kept, []
    totals = kept.copy()
    for p in positions:
        weighted = float(fixed[p])
        for weight, scores in zip(ranking.load_weights, live, strict=True):
            if weight != 0.0:
                score = float(scores[p])
                weighted = weighted + (score if weight == 1.0 else weight * score)
        totals[p] = weighted / ranking.total_weight
    return _read_only(totals), positions


def _plus(total: Floats | None, weight: float, scores: Floats) -> Floats:
    """total + weight * scores, None being 0; the same floats with fewer operations (x * 1.0 is x, and 0.0 + x is x
    for the x >= +0.0 that weighted scores are)."""
    term = scores if weight == 1.0 else weight * scores
    return term if total is None else total + term


class _SpreadGroups:
    """The groups of ``placement.spread`` (tier, region or cluster of each feasible node) and replicas in each."""

    def __init__(self, table: NodeTable, rows: Ints, req: Requirements) -> None:
        self._constraints: list[tuple[Ints, Ints, int | None, int | None]] = []
        for by, low, high in req.spread:
            every = _group_codes(table, by)
            counts = np.bincount(every, weights=table.hosted, minlength=int(every.max(initial=-1)) + 1).astype(np.int64)
            self._constraints.append((every[rows], counts, low, high))
        # placement.division: each cluster's share of the replicas, and the replicas it holds.
        self._cluster = table.cluster_of[rows]
        clusters = len(table.clusters)
        self._per_cluster = np.bincount(table.cluster_of, weights=table.hosted, minlength=clusters).astype(np.int64)
        self._share = np.zeros(clusters, dtype=np.int64)
        if req.division is not None and len(rows):
            room = np.floor(
                np.minimum((table.free_cpu[rows] + _TOLERANCE) / req.cpu, table.free_memory_mib[rows] / req.memory_mib)
            ).astype(np.int64)
            per_cluster_room = np.bincount(self._cluster, weights=room, minlength=clusters).astype(np.int64)
            feasible_clusters = np.flatnonzero(np.bincount(self._cluster, minlength=clusters))
            rooms = [(str(table.cluster_names[c]), int(per_cluster_room[c])) for c in feasible_clusters.tolist()]
            index = {str(table.cluster_names[c]): c for c in feasible_clusters.tolist()}
            for name, share in division_targets(req, rooms).items():
                self._share[index[name]] = share

    def eligible(self, alive: Bools) -> Bools:
        """Nodes still fitting whose groups are all below their max."""
        out = alive.copy()
        for group, counts, _, high in self._constraints:
            if high is not None:
                out &= counts[group] < high
        return out

    def first(self, candidates: Ints) -> Ints:
        """The candidates in a group below its min, if any, else all of them; of those, the ones in a cluster below
        its division share, if any."""
        below = np.zeros(len(candidates), dtype=bool)
        for group, counts, low, _ in self._constraints:
            if low is not None:
                below |= counts[group[candidates]] < low
        if below.any():
            candidates = candidates[below]
        clusters = self._cluster[candidates]
        short = self._per_cluster[clusters] < self._share[clusters]
        return candidates[short] if short.any() else candidates

    def add(self, index: int) -> None:
        """Count a replica placed on feasible node ``index``."""
        for group, counts, _, _ in self._constraints:
            counts[group[index]] += 1
        self._per_cluster[self._cluster[index]] += 1


def _group_codes(table: NodeTable, by: SpreadBy) -> Ints:
    if by is SpreadBy.TIER:
        return table.cluster_tier[table.cluster_of]
    if by is SpreadBy.REGION:
        return table.cluster_region[table.cluster_of]
    return table.cluster_of


def _outcome(needed: int, placed: int) -> str:
    if placed == needed:
        return "Placed"
    return "Partial" if placed else "Pending"


def _feasible_row(table: NodeTable, found: Verdicts, ranking: _Ranking, index: int) -> dict[str, Any]:
    """The verdict of feasible node ``index``: its scores for the first replica, and what it took."""
    row = int(found.feasible[index])
    runtime = found.runtime[int(table.runtimes[row])]
    scores = {name: float(column[index]) for name, column in ranking.columns.items()}
    scores["spread"] = spread(int(ranking.first_hosted[index]))
    took = ranking.took.get(index)
    placed = 0 if took is None else took.placed
    verdict: dict[str, Any] = {
        "cluster": table.cluster(row).name,
        "node": table.nodes[row].name,
        "runtime": runtime,
        "scores": scores,
        "total": float(ranking.first_totals[index]),
        "reason": f"feasible, runtime {runtime}; not chosen",
    }
    if placed:
        verdict["replicas"] = placed
        verdict["reason"] = f"{placed} {'replica' if placed == 1 else 'replicas'} placed, runtime {runtime}"
    return verdict


def _compact_rows(table: NodeTable, found: Verdicts, ranking: _Ranking, placed: list[int]) -> list[dict[str, Any]]:
    """The chosen nodes and the best others by the first replica's ranking, in name order."""
    shown = sorted(set(placed) | set(_first_best(table, ranking, TOP_CANDIDATES)))
    return [_feasible_row(table, found, ranking, i) for i in shown]


def _first_best(table: NodeTable, ranking: _Ranking, count: int) -> list[int]:
    """The ``count`` best feasible nodes for the first replica, best first; found once for both ``_assign`` and the
    explanation (the best k are the first k of the best k + 1), and kept by the table (a shared list: sliced, never
    changed), ``_DEEP`` of them at least, brought up to date while the totals are patches of those they were found
    for (``_best_now``)."""
    if len(ranking.first_best) < count:
        hosted, totals = ranking.first_hosted, ranking.first_totals
        depth = max(count, _DEEP)
        ranking.first_best = table.derived(
            ("best", depth),
            (hosted, totals),
            partial(_best, hosted, totals, depth),
            patch=partial(_best_now, hosted, totals, count),
        )
    return ranking.first_best[:count]


def _best_now(
    hosted: Ints, totals: Floats, count: int, was: tuple[object, ...], kept: list[int], positions: list[int]
) -> Patch[list[int]] | None:
    """``_best`` after the totals changed at ``positions``: the other kept nodes keep their order, and a changed
    node goes back where its new key puts it unless that is past the last kept node's key (a node never kept is
    worse than that one, and may be better than it now). None when fewer than ``count`` are left: found again."""
    if was[0] is not hosted or not kept:
        return None
    before = cast(Floats, was[1])

    def key(index: int, values: Floats = totals) -> tuple[int, float, int]:
        return int(hosted[index]), -float(values[index]), index

    changed = set(positions)
    best = [i for i in kept if i not in changed]
    every = len(kept) == len(totals)  # every node is kept: none can come from elsewhere
    last = key(kept[-1], before)
    for index in sorted(changed):
        if every or key(index) <= last:
            bisect.insort(best, index, key=key)
    if len(best) < min(count, len(totals)):
        return None
    return best, []


def _best(hosted: Ints, totals: Floats, count: int) -> list[int]:
    """The ``count`` smallest indexes by (hosted, -total, index), in that order, without sorting every node.

    Level by level of ``hosted`` (fewest first; nearly every node is on the first): the nodes above the count-th
    best total, then those equal to it in index order, so ties at the cut go by name as the ranking's do.
    """
    chosen: list[int] = []
    if not len(hosted) or count <= 0:
        return chosen
    level = hosted.min()
    while True:
        if count - len(chosen) <= _FEW:
            # A few picks: repeated argmax (the first of equal maxima, so ties go by index) beats a partition. Nodes
            # off the level are passed over as they come up (rarely among the best), or all masked if many do.
            values = totals.copy()
            passed = 0
            while len(chosen) < count:
                index = int(np.argmax(values))
                if values[index] == -np.inf:
                    break
                values[index] = -np.inf
                if hosted[index] == level:
                    chosen.append(index)
                    continue
                passed += 1
                if passed == _FEW:
                    values[hosted != level] = -np.inf
            if len(chosen) >= count:
                return chosen
            higher = hosted[hosted > level]
            if not len(higher):
                return chosen
            level = higher.min()
            continue
        members = np.flatnonzero(hosted == level)
        wanted = count - len(chosen)
        values = totals[members]
        if len(members) > wanted:
            cut = np.partition(values, len(values) - wanted)[len(values) - wanted]
            above, at = members[values > cut], members[values == cut]
            members = np.concatenate((above, at[: wanted - len(above)]))
            values = totals[members]
        chosen.extend(i for _, i in sorted(zip((-values).tolist(), members.tolist(), strict=True)))
        if len(chosen) >= count:
            return chosen
        higher = hosted[hosted > level]
        if not len(higher):
            return chosen
        level = higher.min()


def _node_rows(
    table: NodeTable, found: Verdicts, ranking: _Ranking, req: Requirements
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[str]]]:
    """Every cluster's and node's verdict with its reason, as the reference engine words them."""
    feasible_index = {int(r): i for i, r in enumerate(found.feasible.tolist())}
    rows: list[dict[str, Any]] = []
    rejections: dict[tuple[str, str], list[str]] = {}
    for c, cluster in enumerate(table.clusters):
        if found.cluster_rejected_by[c] >= 0:
            rejected = first_rejection(CLUSTER_FILTERS, cluster, req)
            assert rejected is not None, "a cluster mask and its filter disagree"
            rejections.setdefault(("cluster", rejected[0]), []).append(cluster.name)
            rows.append({"cluster": cluster.name, "rejected_by": rejected[0], "reason": rejected[1]})
            continue
        for row in range(int(table.first_row[c]), int(table.first_row[c + 1])):
            index = feasible_index.get(row)
            if index is not None:
                rows.append(_feasible_row(table, found, ranking, index))
                continue
            node = table.node(row)
            reasons = all_rejections(NODE_FILTERS, node, req)
            assert reasons, "a node mask and its filter disagree"
            for filter_name, _ in reasons:
                rejections.setdefault(("node", filter_name), []).append(f"{cluster.name}/{node.name}")
            rows.append(
                {
                    "cluster": cluster.name,
                    "node": node.name,
                    "rejected_by": ", ".join(f for f, _ in reasons),
                    "reason": "; ".join(r for _, r in reasons),
                    "runtime": choose_runtime(node, req),
                }
            )
    return rows, rejections
