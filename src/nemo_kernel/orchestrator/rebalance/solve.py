"""The rebalancer's integer program, solved by HiGHS: where the running replicas should be, and the moves to get there.

Variables, per workload ``w`` that may move: ``y[w, n]``, an integer, its replicas on node ``n`` (at most one, or
as many as ``n`` holds today: ``_caps``, a plan never leaves a workload on fewer distinct nodes than today), for the
nodes the decision engine's filters accept for it (``masks.cluster_masks``/``node_masks``, every filter but
capacity, which is a constraint here; SLA residency is in the spec the caller gives) plus the nodes it runs on now
(staying is not a placement: a cordoned cluster keeps what it runs); ``m[w, n]`` >= current - y, the replicas leaving
a node it runs on.

- ``sum_n y[w, n] = replicas``; capacity: per node, cpu and memory of the replicas that may move <= what the others
  leave free (at least what they use now, so staying put is always feasible and the model is never infeasible by
  construction); ``placement.spread`` max and min per group, never tighter than today's counts; ``sum m <=
  max_moves``. A stateful workload is offered only nodes of the architecture it runs on.
- Objective: per replica, ``w_cost * EUR/h / mean EUR/h + w_carbon * gCO2/h / mean gCO2/h`` (the cost and carbon
  criteria's own figures, ``raw_many``, at the node's idle utilisation so they are linear; weights from
  ``scoring.workload_weights``, i.e. the workload's ``optimize`` and ``weights``, scaled to sum to 2) plus
  ``move_cost`` per moved replica. The means are over the running replicas, so one unit is an average replica-hour.
- ``cost_neutral`` (default): the moved replicas together may not cost more per hour than before.
- Columns by pricing: at 10,000 workloads over 10,000 nodes the full model has 10^8 columns, so the LP starts from
  each workload's ``candidates_per_workload`` best nodes by that objective, as many best ones with room for a
  replica, and the nodes it runs on; then every feasible node whose reduced cost under the LP's duals is negative
  gets a column (``_price``) and the LP runs again, until none does: the LP is then optimal over every node, and its
  objective is ``Plan.bound`` (before that, each round's duals give a Lagrangian bound, ``_lagrangian``). The best
  nodes alone are the ones greedy placement filled first, which left the plan only reshuffling them (9 % less CO2
  on ``benchmarks/bench_rebalance.py``, 20 % with pricing).
- Solve, within the time limit counted from the plan's start: the first LP (up to ``_SOLVING_SHARE`` of it), pricing
  rounds (up to ``_PRICING_SHARE``); workloads the last optimal LP places in whole replicas are fixed there when that
  fits with the rest staying put (``_fix_whole``), then the MIP decides the few left until ``_SOLVING_SHARE``,
  starting from that plan (feasible by construction). A MIP or a pricing cut short by the limit gives its best plan,
  at worst that one, as ``time_limited``; ``infeasible``/``failed`` (no plan: nothing changes) would mean a bug in
  the model.
- HiGHS writes nothing to stdout (``_quiet_highs``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import highspy
import numpy as np

from nemo_kernel.domain import LatencyMatrix, SpreadBy
from nemo_kernel.orchestrator.decision import NodeTable, Requirements
from nemo_kernel.orchestrator.decision.criteria.carbon import CarbonPerHour
from nemo_kernel.orchestrator.decision.criteria.cost import CostPerHour
from nemo_kernel.orchestrator.decision.masks import cluster_masks, node_masks
from nemo_kernel.orchestrator.decision.scoring import workload_weights
from nemo_kernel.orchestrator.decision.table import Floats, Ints
from nemo_kernel.orchestrator.rebalance.problem import (
    Move,
    Plan,
    PlanStatus,
    RebalanceLimits,
    Totals,
    WorkloadPlacement,
)

_TOLERANCE = 1e-9  # filters.CPU_TOLERANCE: a node filled exactly to capacity still holds its last replica
_CAPACITY_FILTER = "capacity"  # a constraint of the model, not a per-replica filter
_GAP = 1e-3  # relative MIP gap: a plan within 0.1 % of the best bound is good enough
_EUR_SLACK = 1e-9  # float sums of the same prices in another order must not make staying put exceed the budget
_REDUCED_COST = 1e-7  # a column prices in when its reduced cost is below minus this (HiGHS' dual tolerance)
_PRICED_PER_ROUND = 4  # new columns per workload and pricing round: enough to move, few enough to keep the LP small
_MAX_ROUNDS = 1000  # a safety net: the time limit ends pricing first
_PRICING_SHARE = 0.75  # of the time limit, for the pricing rounds after the first LP; the rest is the MIP's ...
_SOLVING_SHARE = 0.9  # ... up to this share: reading the plan out of the solution (0.5-1.5 s at 17,500 replicas)


@dataclass(slots=True)
class _Workload:
    """One workload in the model: its candidate rows, per-replica figures there, and its columns."""

    w: WorkloadPlacement
    req: Requirements
    rows: Ints  # candidate rows (current ones included), ascending
    eur: Floats  # EUR/h of one replica per candidate row
    gco2: Floats
    w_cost: float
    w_carbon: float
    current: Counter[int]  # replicas per row now
    cols: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # column of y per entry of rows
    first_m: int = 0  # column of m for the first current row (sorted)
    key: tuple[object, ...] = ()  # its pool in ``_candidates``' memo: workloads with the same key price alike
    assign_row: int = 0
    spread_rows: dict[tuple[int, int], int] = field(default_factory=dict)  # (constraint, group) -> model row
    excess_cols: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per entry of rows (``_caps``)
    excess_row: int = -1


@dataclass(frozen=True, slots=True)
class _Pool:
    """Every row the filters accept for workloads of one ``_Workload.key``, and one replica's figures there."""

    rows: Ints
    eur: Floats
    gco2: Floats
    value: Floats  # ``_objective``
    best: Ints  # the first candidates


@dataclass(frozen=True, slots=True)
class _Index:
    """Where the rows the workloads share are in the model, and their upper bounds: per node cpu and memory
    capacity, the cost budget (-1: none) and the moves."""

    first_cpu: int
    first_memory: int
    budget: int
    moves: int
    free_cpu: Floats
    free_memory: Floats
    spent: float
    max_moves: float


def feasible_rows(table: NodeTable, req: Requirements) -> Ints:
    """Rows every filter of the decision engine but capacity accepts for one replica of ``req``."""
    rejected = np.zeros(len(table.clusters), dtype=bool)
    for _, mask in cluster_masks(table, req):
        if mask is not None:
            rejected |= mask
    admitted = np.flatnonzero(~rejected[table.cluster_of]) if len(table) else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(admitted), dtype=bool)
    for name, mask in node_masks(table, req, admitted):
        if name != _CAPACITY_FILTER:
            keep &= ~mask
    result: Ints = admitted[keep]
    return result


def plan_rebalance(
    table: NodeTable,
    workloads: Sequence[WorkloadPlacement],
    limits: RebalanceLimits,
    *,
    weights: Mapping[str, float],
    latency: LatencyMatrix | None = None,
) -> Plan:
    """The plan for ``workloads`` over ``table`` (whose allocations include every running replica); pure.

    ``weights`` are the engine's (``DecisionEngine.weights``), which each workload's ``optimize``/``weights`` adjust.
    Never raises for a workload the filters reject everywhere (it stays); raises ValueError only for a replica on a
    node the table does not have.
    """
    started = time.perf_counter()
    idle = replace(  # figures at idle utilisation: linear in the replicas, as the model needs
        table,
        allocated_cpu=np.zeros(len(table)),
        allocated_memory_mib=np.zeros(len(table)),
        _memo=table._memo,
    )
    pinned = {w.workload: w.pinned for w in workloads if w.pinned is not None}
    everyone = [_current(table, idle, w, weights, latency) for w in workloads if w.replicas]
    # Units: one average replica's EUR/h and gCO2/h where it runs now, so cost and carbon weigh alike.
    count = sum(sum(m.current.values()) for m in everyone) or 1
    eur_unit = max(sum(float(np.dot(m.eur, _counts(m))) for m in everyone) / count, 1e-12)
    gco2_unit = max(sum(float(np.dot(m.gco2, _counts(m))) for m in everyone) / count, 1e-12)
    movable: list[_Workload] = []
    memo: dict[tuple[object, ...], Ints] = {}  # what workloads with the same constraints share (``_candidates``)
    pools: dict[tuple[object, ...], _Pool] = {}
    for m in everyone:
        if m.w.pinned is not None:
            continue
        if m.w_cost <= 0 and m.w_carbon <= 0:
            pinned[m.w.workload] = "weighs neither cost nor carbon"
            continue
        if m.w.spec.stateful and len({int(table.architecture[r]) for r in m.current}) > 1:
            pinned[m.w.workload] = "stateful, on more than one CPU architecture"
            continue
        _candidates(table, idle, m, memo, pools, limits.candidates_per_workload, eur_unit, gco2_unit)
        movable.append(m)
    before = _totals(everyone, {id(m): dict(m.current) for m in everyone}, eur_unit, gco2_unit)
    if not movable or limits.max_moves == 0:
        plan = _unchanged(PlanStatus.NOTHING_TO_DO, before, started, "no workload may move", pinned)
        return replace(plan, bound=before.objective)  # staying put is the only plan
    status, counts, bound = _solve(table, movable, pools, limits, eur_unit, gco2_unit, started)
    if counts is None:
        return _unchanged(status, before, started, f"solver ended {status.value}: nothing changes", pinned)
    placement = {id(m): dict(m.current) for m in everyone}
    for m in movable:
        placement[id(m)] = counts[id(m)]
    after = _totals(everyone, placement, eur_unit, gco2_unit)
    moves = tuple(mv for m in movable for mv in _moves(table, m, counts[id(m)], eur_unit, gco2_unit))
    after = replace(after, objective=after.objective + limits.move_cost * len(moves))
    worth, message = _worth(before, after, moves, limits)
    if status is PlanStatus.TIME_LIMITED:
        found = message if moves else "no better placement than today's found"
        message = f"the solver stopped at its time limit ({limits.time_limit_s:g} s) with its best plan: {found}"
    if bound is not None:  # the pinned workloads' share of the objective, which the model did not see
        bound += before.objective - sum(_totals([m], {id(m): dict(m.current)}, eur_unit, gco2_unit).objective
                                        for m in movable)  # fmt: skip
    return Plan(status, moves, before, after, time.perf_counter() - started, worth, message, pinned, bound)


def _current(
    table: NodeTable,
    idle: NodeTable,
    w: WorkloadPlacement,
    weights: Mapping[str, float],
    latency: LatencyMatrix | None,
) -> _Workload:
    """A workload with only the rows it runs on (``_candidates`` adds the others if it may move)."""
    req = Requirements.of(w.spec, latency)
    current: Counter[int] = Counter(table.row(r.cluster, r.node) for r in w.replicas)
    rows = np.array(sorted(current), dtype=np.int64)
    chosen = workload_weights(weights, w.spec)
    return _Workload(
        w=w,
        req=req,
        rows=rows,
        eur=CostPerHour().raw_many(idle, rows, req),
        gco2=CarbonPerHour().raw_many(idle, rows, req),
        w_cost=float(chosen.get("cost", 0.0)),
        w_carbon=float(chosen.get("carbon", 0.0)),
        current=current,
    )


def _objective(m: _Workload, eur_unit: float, gco2_unit: float) -> Floats:
    """Per candidate row, one replica's weighted cost and carbon in average-replica units."""
    total = m.w_cost + m.w_carbon
    scale = 2.0 / total if total > 0 else 0.0
    result: Floats = scale * (m.w_cost * m.eur / eur_unit + m.w_carbon * m.gco2 / gco2_unit)
    return result


def _counts(m: _Workload) -> Floats:
    return np.array([float(m.current.get(r, 0)) for r in m.rows.tolist()])


def _filter_key(req: Requirements) -> tuple[object, ...]:
    """What the filters but capacity read of ``req``: equal keys, equal feasible rows."""
    return (req.runtimes, req.needs_tee, req.tees, req.tiers, req.regions, req.countries, req.clusters,
            req.architectures, req.node_labels, req.users, req.max_latency_ms)  # fmt: skip


def _candidates(
    table: NodeTable,
    idle: NodeTable,
    m: _Workload,
    memo: dict[tuple[object, ...], Ints],
    pools: dict[tuple[object, ...], _Pool],
    keep: int,
    eur_unit: float,
    gco2_unit: float,
) -> None:
    """Give ``m`` its first candidate rows: the ``keep`` best feasible ones by its objective (ties by row, i.e. by
    name) plus those it runs on; pricing (``_price``) adds the others that can lower the objective. A stateful
    workload keeps to the architecture it runs on. ``memo`` holds the feasible rows of workloads with the same
    constraints, ``pools`` those of workloads with the same constraints, size and weights, with their figures."""
    key = _filter_key(m.req)
    arch = int(table.architecture[next(iter(m.current))]) if m.w.spec.stateful else None
    m.key = (key, arch, m.req.cpu, m.req.memory_mib, m.w_cost, m.w_carbon)
    pool = pools.get(m.key)
    if pool is None:
        rows = memo.get(key)
        if rows is None:
            rows = memo[key] = feasible_rows(table, m.req)
        if arch is not None:
            # The state is handed over as the application wrote it: only within the architecture it runs on.
            rows = rows[table.architecture[rows] == arch]
        probe = replace(m, rows=rows, eur=CostPerHour().raw_many(idle, rows, m.req),
                        gco2=CarbonPerHour().raw_many(idle, rows, m.req))  # fmt: skip
        value = _objective(probe, eur_unit, gco2_unit)
        # The best nodes are those greedy placement filled first: the best with room for a replica too, so the
        # first LP already has somewhere to move to (pricing finds the rest).
        room = (table.free_cpu[rows] + _TOLERANCE >= m.req.cpu) & (table.free_memory_mib[rows] >= m.req.memory_mib)
        best = np.union1d(_best(rows, value, keep), _best(rows[room], value[room], keep))
        pool = pools[m.key] = _Pool(rows, probe.eur, probe.gco2, value, best)
    chosen = np.union1d(pool.best, m.rows).astype(np.int64)
    m.rows = chosen
    m.eur = CostPerHour().raw_many(idle, chosen, m.req)
    m.gco2 = CarbonPerHour().raw_many(idle, chosen, m.req)


def _best(rows: Ints, value: Floats, keep: int) -> Ints:
    """The ``keep`` rows of least ``value``: every row strictly below the keep-th value, then the first rows (by
    name) equal to it."""
    if len(rows) <= keep:
        return rows
    cut = np.partition(value, keep - 1)[keep - 1]
    better, equal = rows[value < cut], rows[value == cut]
    result: Ints = np.concatenate((better, equal[: keep - len(better)]))
    return result


def _solve(
    table: NodeTable,
    movable: Sequence[_Workload],
    pools: Mapping[tuple[object, ...], _Pool],
    limits: RebalanceLimits,
    eur_unit: float,
    gco2_unit: float,
    started: float,
) -> tuple[PlanStatus, dict[int, dict[int, int]] | None, float | None]:
    """Build and run the model; the replicas per row of each movable workload (None when no plan came out), and the
    LP relaxation's objective over every feasible row when pricing finished (a bound no plan goes below).
    ``started`` is when the plan started (``perf_counter``): the time limit counts from there."""
    h = _quiet_highs()
    h.setOptionValue("threads", int(limits.threads))
    h.setOptionValue("mip_rel_gap", _GAP)
    columns = 0
    costs: list[Floats] = []
    upper: list[Floats] = []
    for m in movable:
        m.cols = np.arange(columns, columns + len(m.rows), dtype=np.int64)
        costs.append(_objective(m, eur_unit, gco2_unit))
        upper.append(_caps(m, m.rows))
        columns += len(m.rows)
        m.first_m = columns
        costs.append(np.full(len(m.current), limits.move_cost))
        upper.append(np.array([float(m.current[r]) for r in sorted(m.current)]))
        columns += len(m.current)
        if _excess(m):
            m.excess_cols = np.arange(columns, columns + len(m.rows), dtype=np.int64)
            costs.append(np.zeros(len(m.rows)))
            upper.append(np.full(len(m.rows), float(_excess(m))))
            columns += len(m.rows)
    h.addVars(columns, np.zeros(columns), np.concatenate(upper))
    h.changeColsCost(columns, np.arange(columns, dtype=np.int32), np.concatenate(costs))

    rows = _Rows()
    for m in movable:
        replicas = float(sum(m.current.values()))
        m.assign_row = rows.add(m.cols, np.ones(len(m.cols)), replicas, replicas)
        for k, r in enumerate(sorted(m.current)):  # m + y >= current
            at = int(m.rows.searchsorted(r))
            rows.add(np.array([m.first_m + k, m.cols[at]]), np.ones(2), float(m.current[r]), highspy.kHighsInf)
        _spread_rows(table, m, rows)
        if _excess(m):
            for y, e in zip(m.cols.tolist(), m.excess_cols.tolist(), strict=True):
                rows.add(np.array([y, e]), np.array([1.0, -1.0]), -highspy.kHighsInf, 1.0)
            m.excess_row = rows.add(m.excess_cols, np.ones(len(m.rows)), 0.0, float(_excess(m)))
    moves = np.concatenate([np.arange(m.first_m, m.first_m + len(m.current)) for m in movable])
    moves_row = rows.add(moves, np.ones(len(moves)), 0.0, float(limits.max_moves))
    first_cpu, first_memory, free_cpu, free_memory = _capacity_rows(table, movable, rows)
    budget = -1
    spent = sum(float(m.eur[m.rows.searchsorted(r)]) * n for m in movable for r, n in m.current.items()) + _EUR_SLACK
    if limits.cost_neutral:  # the plan may not raise the bill of the replicas it moves
        y_all = np.concatenate([m.cols for m in movable])
        budget = rows.add(y_all, np.concatenate([m.eur for m in movable]), -highspy.kHighsInf, spent)
    rows.pass_to(h)
    index = _Index(first_cpu, first_memory, budget, moves_row, free_cpu, free_memory, spent, float(limits.max_moves))
    # Phase 1, the LP relaxation over the first candidates, then pricing: every feasible row whose reduced cost under
    # the LP's duals is negative (a node with room, or one whose takers would gain less elsewhere) gets a column and
    # the LP runs again from its last basis, until no row prices in. The first candidates alone are the nodes greedy
    # placement already filled: without pricing the plan only reshuffles them.
    integral = np.concatenate([m.cols for m in movable]).astype(np.int32)
    h.changeColsIntegrality(len(integral), integral, np.zeros(len(integral), dtype=np.uint8))
    priced_out = False
    relaxed: Floats | None = None  # the last optimal LP's columns
    bound: float | None = None
    for _ in range(_MAX_ROUNDS):
        # The first LP may take all the solving time (on a loaded machine it can: without it there is no plan but
        # staying put); pricing rounds after it leave the MIP its share.
        share = _SOLVING_SHARE if relaxed is None else _PRICING_SHARE
        left = limits.time_limit_s * share - (time.perf_counter() - started)
        if left <= 0:
            break
        h.setOptionValue("time_limit", left)
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
            return PlanStatus.INFEASIBLE, None, None
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break
        relaxed = np.asarray(h.getSolution().col_value)
        more, lagrangian = _price(h, table, movable, pools, index, eur_unit, gco2_unit)
        bound = lagrangian if bound is None else max(bound, lagrangian)
        if not more:
            priced_out = True
            bound = max(bound, float(h.getInfo().objective_function_value))
            break
    columns = h.getNumCol()
    start = _staying(movable, columns)
    if relaxed is not None:  # an LP cut short by the time limit: the last optimal one, columns priced since at 0
        relaxed = np.concatenate((relaxed, np.zeros(columns - len(relaxed))))
        _fix_whole(h, table, movable, relaxed, start, cost_neutral=limits.cost_neutral)
    for m in movable:  # the excess the start's replicas have, so HiGHS takes it as feasible
        if len(m.excess_cols):
            start[m.excess_cols] = np.maximum(start[m.cols] - 1.0, 0.0)
    # Phase 2, the MIP over what is left, within the rest of the time limit. It starts from a plan known to be
    # feasible (the fixed workloads where the LP put them, the others staying), so a solve cut short by the time
    # limit still has a plan to return: that one, or a better one HiGHS found.
    integral = np.concatenate([m.cols for m in movable]).astype(np.int32)
    h.changeColsIntegrality(len(integral), integral, np.ones(len(integral), dtype=np.uint8))
    left = max(limits.time_limit_s * _SOLVING_SHARE - (time.perf_counter() - started), 0.0)
    h.setOptionValue("time_limit", left)
    h.setSolution(len(start), np.arange(len(start), dtype=np.int32), start)
    h.run()
    model_status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if model_status == highspy.HighsModelStatus.kOptimal and priced_out:
        status = PlanStatus.OPTIMAL
    elif model_status in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit) and has_solution:
        status = PlanStatus.TIME_LIMITED  # the MIP or the pricing before it stopped at the time limit
    elif model_status == highspy.HighsModelStatus.kInfeasible:
        return PlanStatus.INFEASIBLE, None, None
    else:
        return PlanStatus.FAILED, None, None
    values = np.rint(np.asarray(h.getSolution().col_value)).astype(np.int64)
    out: dict[int, dict[int, int]] = {}
    for m in movable:
        counts = values[m.cols]
        out[id(m)] = {int(r): int(c) for r, c in zip(m.rows.tolist(), counts.tolist(), strict=True) if c > 0}
    return status, out, bound


def _excess(m: _Workload) -> int:
    """Replicas of ``m`` beyond one per node today: replicas minus the distinct nodes they run on."""
    return sum(m.current.values()) - len(m.current)


def _caps(m: _Workload, rows: Ints) -> Floats:
    """Most replicas of ``m`` a node may hold in the plan: the most any node holds today (one, unless some share).

    The decision engine puts replicas of a workload on distinct nodes first (it stacks only when too few nodes
    accept them); a plan keeps that: no node holds more of them than the most one does today, and the workload
    never runs on fewer distinct nodes than today. With every replica on its own node that is this bound alone;
    otherwise the excess over one per node, summed over the nodes, also stays within today's (``e[w, n] >= y[w, n]
    - 1``, ``sum e <= _excess``): two replicas sharing a node may move together to another, but 2+2+1 never becomes
    2+2+0+... on fewer nodes, nor 2+3+5 become 1+1+8. Saving a gram of CO2 is no reason to lose resilience."""
    return np.full(len(rows), float(max(m.current.values())))


def _price(
    h: highspy.Highs,
    table: NodeTable,
    movable: Sequence[_Workload],
    pools: Mapping[tuple[object, ...], _Pool],
    index: _Index,
    eur_unit: float,
    gco2_unit: float,
) -> tuple[bool, float]:
    """Add the columns whose reduced cost under the LP's duals is negative, at most ``_PRICED_PER_ROUND`` per
    workload (the most negative); whether there were any (none: the LP is optimal over every feasible row), and a
    lower bound on the objective over every feasible row, whatever the columns so far (``_lagrangian``).

    HiGHS' duals: a column's reduced cost is its cost minus the duals of its rows times its entries there. Workloads
    of one pool share all of it but the dual of their own ``sum y = replicas`` row (and of their spread rows), so
    without spread constraints their best new rows are the pool's best ones they do not have yet.
    """
    dual = np.asarray(h.getSolution().row_dual)
    n = len(table)
    # The rows the workloads share are all "<=" rows: their duals are <= 0 (HiGHS' sign for a minimum), clipped so
    # the bound stays valid past the solver's tolerances.
    cpu_dual = np.minimum(dual[index.first_cpu : index.first_cpu + n], 0.0)
    memory_dual = np.minimum(dual[index.first_memory : index.first_memory + n], 0.0)
    budget_dual = min(float(dual[index.budget]), 0.0) if index.budget >= 0 else 0.0
    moves_dual = min(float(dual[index.moves]), 0.0)
    bound = float(np.dot(cpu_dual, index.free_cpu) + np.dot(memory_dual, index.free_memory))
    bound += budget_dual * index.spent + moves_dual * index.max_moves
    base: dict[tuple[object, ...], tuple[Floats, Ints]] = {}  # per pool: reduced costs, positions best first
    longest: Counter[tuple[object, ...]] = Counter()
    for m in movable:
        longest[m.key] = max(longest[m.key], len(m.rows))
    groups: dict[SpreadBy, Ints] = {}
    added: list[tuple[_Workload, Ints]] = []  # workload, its new columns' positions in its pool
    for m in movable:
        pool = pools[m.key]
        if not len(pool.rows):
            bound += _lagrangian(m, pool, pool.value, pool.rows, cpu_dual, memory_dual, budget_dual, eur_unit,
                                 gco2_unit)  # fmt: skip
            continue
        shared = base.get(m.key)
        if shared is None:
            size = m.req.cpu * cpu_dual[pool.rows] + float(m.req.memory_mib) * memory_dual[pool.rows]
            reduced = pool.value - size - budget_dual * pool.eur
            # enough of the best to skip the rows any workload of the pool has (at most its candidates)
            top = min(len(reduced), _PRICED_PER_ROUND + longest[m.key])
            best = np.argpartition(reduced, top - 1)[:top]
            shared = base[m.key] = (reduced, best[np.argsort(reduced[best], kind="stable")])
        reduced, order = shared
        bound += _lagrangian(m, pool, reduced, order, cpu_dual, memory_dual, budget_dual, eur_unit, gco2_unit)
        threshold = dual[m.assign_row] - _REDUCED_COST
        if reduced[order[0]] >= threshold:
            continue
        if m.spread_rows:
            own = reduced - dual[m.assign_row]
            for (c, g), row in m.spread_rows.items():
                by = m.req.spread[c][0]
                codes = groups.get(by)
                if codes is None:
                    codes = groups[by] = _group_codes(table, by)
                own[codes[pool.rows] == g] -= dual[row]
            at = np.minimum(pool.rows.searchsorted(m.rows), len(pool.rows) - 1)
            own[at[pool.rows[at] == m.rows]] = np.inf  # it has these columns already
            count = min(_PRICED_PER_ROUND, len(own))
            picked = np.argpartition(own, count - 1)[:count]
            picked = picked[own[picked] < -_REDUCED_COST]
        else:
            has = set(m.rows.tolist())
            chosen = [int(k) for k in order.tolist() if reduced[k] < threshold and int(pool.rows[k]) not in has]
            picked = np.array(chosen[:_PRICED_PER_ROUND], dtype=np.int64)
        if len(picked):
            added.append((m, np.sort(picked)))
    if not added:
        return False, bound
    _add_columns(h, table, pools, index, added)
    return True, bound


def _lagrangian(
    m: _Workload,
    pool: _Pool,
    reduced: Floats,
    order: Ints,
    cpu_dual: Floats,
    memory_dual: Floats,
    budget_dual: float,
    eur_unit: float,
    gco2_unit: float,
) -> float:
    """``m``'s least cost with the shared rows priced by their duals: its replicas on its cheapest nodes by
    ``reduced`` (the pool's, ``order`` the pool's best positions first) and the nodes it runs on outside the pool,
    at most ``_caps`` each. Its spread, excess and move rows are left out: a lower value, still a bound. Summed over
    the workloads, plus each shared row's dual times its bound, it is a lower bound on the objective over every
    feasible row (Lagrangian duality), true before pricing ends, and equal to the LP's objective when it has."""
    replicas = sum(m.current.values())
    cap = int(max(m.current.values()))
    need = -(-replicas // cap)
    values = reduced[order[:need]] if len(order) >= need else np.sort(reduced)[:need]
    at = np.minimum(pool.rows.searchsorted(m.rows), max(len(pool.rows) - 1, 0))
    outside = ~(pool.rows[at] == m.rows) if len(pool.rows) else np.ones(len(m.rows), dtype=bool)
    if outside.any():  # nodes it runs on that the filters now refuse (a cordoned cluster)
        rows = m.rows[outside]
        own = (_objective(m, eur_unit, gco2_unit)[outside] - m.req.cpu * cpu_dual[rows]
               - float(m.req.memory_mib) * memory_dual[rows] - budget_dual * m.eur[outside])  # fmt: skip
        values = np.concatenate((values, own))
    values = np.sort(values)[:need]
    full = replicas // cap
    return float(cap * values[:full].sum() + (replicas - cap * full) * (values[full] if full < len(values) else 0.0))


def _add_columns(
    h: highspy.Highs,
    table: NodeTable,
    pools: Mapping[tuple[object, ...], _Pool],
    index: _Index,
    added: Sequence[tuple[_Workload, Ints]],
) -> None:
    """Give each workload a column per new row (bounded by ``_caps``), with its entries in the assignment, capacity,
    budget and spread rows; a group of a spread max it had no column in gets its row, and a workload stacked today
    gets the new rows' excess columns and rows."""
    first = column = h.getNumCol()
    costs: list[Floats] = []
    upper: list[Floats] = []
    starts: list[Ints] = []
    entries: list[Ints] = []
    values: list[Floats] = []
    nnz = 0
    new_rows = _Rows()  # in one call after the columns: HiGHS refactors its basis per call
    new_spread: dict[tuple[int, int, int], list[int]] = {}  # (workload, constraint, group) -> new columns
    by_id = {}
    for m, positions in added:
        pool = pools[m.key]
        new = pool.rows[positions]
        k = len(new)
        costs.append(pool.value[positions])
        upper.append(_caps(m, new))
        fixed = [np.full(k, m.assign_row), index.first_cpu + new, index.first_memory + new]
        fixed_values = [np.ones(k), np.full(k, m.req.cpu), np.full(k, float(m.req.memory_mib))]
        if index.budget >= 0:
            fixed.append(np.full(k, index.budget))
            fixed_values.append(pool.eur[positions])
        if not m.req.spread:  # the same entries for every column: one block
            starts.append(nnz + len(fixed) * np.arange(k))
            entries.append(np.column_stack(fixed).ravel())
            values.append(np.column_stack(fixed_values).ravel())
            nnz += len(fixed) * k
        else:
            by_id[id(m)] = m
            for j, r in enumerate(new.tolist()):
                at_rows = [int(f[j]) for f in fixed]
                at_values = [float(f[j]) for f in fixed_values]
                for c, (by, _, high) in enumerate(m.req.spread):
                    g = int(_group_codes(table, by)[r])
                    group_row = m.spread_rows.get((c, g))
                    if group_row is not None:
                        at_rows.append(group_row)
                        at_values.append(1.0)
                    elif high is not None and high < sum(m.current.values()):
                        # a group it has no replica in (else it would have a row): at most ``high`` there
                        new_spread.setdefault((id(m), c, g), []).append(column + j)
                starts.append(np.array([nnz]))
                entries.append(np.array(at_rows, dtype=np.int64))
                values.append(np.array(at_values))
                nnz += len(at_rows)
        column += k
    cost = np.concatenate(costs)
    h.addCols(len(cost), cost, np.zeros(len(cost)), np.concatenate(upper), nnz,
              np.concatenate(starts).astype(np.int32), np.concatenate(entries).astype(np.int32),
              np.concatenate(values))  # fmt: skip
    first_row = h.getNumRow()
    for (w, c, g), cols in new_spread.items():
        m = by_id[w]
        most = m.req.spread[c][2]
        assert most is not None  # only groups with a max get a row here
        row = new_rows.add(np.array(cols), np.ones(len(cols)), -highspy.kHighsInf, float(most))
        m.spread_rows[(c, g)] = first_row + row
    column = first
    excess = h.getNumCol()
    for m, positions in added:
        pool = pools[m.key]
        y = np.arange(column, column + len(positions), dtype=np.int64)
        column += len(positions)
        e = np.zeros(0, dtype=np.int64)
        if _excess(m):  # e >= y - 1 on each new row, within the workload's excess row
            e = np.arange(excess, excess + len(y), dtype=np.int64)
            excess += len(y)
            for j in range(len(y)):
                h.addCol(0.0, 0.0, float(_excess(m)), 1, np.array([m.excess_row], dtype=np.int32), np.ones(1))
                new_rows.add(np.array([y[j], e[j]]), np.array([1.0, -1.0]), -highspy.kHighsInf, 1.0)
        rows = np.concatenate((m.rows, pool.rows[positions]))
        order = np.argsort(rows, kind="stable")
        m.rows = rows[order]
        m.cols = np.concatenate((m.cols, y))[order]
        if len(e):
            m.excess_cols = np.concatenate((m.excess_cols, e))[order]
        m.eur = np.concatenate((m.eur, pool.eur[positions]))[order]
        m.gco2 = np.concatenate((m.gco2, pool.gco2[positions]))[order]
    if new_rows.lower:
        new_rows.pass_to(h)


def _quiet_highs() -> highspy.Highs:
    """A HiGHS instance that writes nothing to stdout.

    ``highspy.Highs()`` enables its Python callbacks in its constructor, a call that prints the banner before any
    option can be set; the solver class underneath does not, so its options silence it from the first call (the
    callbacks are not used here).
    """
    # private in highspy (1.16 here): where a release lacks it, the public class works and prints its banner
    solver_class = getattr(highspy, "_Highs", highspy.Highs)
    h: highspy.Highs = solver_class()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("log_to_console", False)
    return h


def _staying(movable: Sequence[_Workload], columns: int) -> Floats:
    """The columns' values when every replica stays where it runs: feasible by construction of the model."""
    values = np.zeros(columns)
    for m in movable:
        values[m.cols] = [float(m.current.get(r, 0)) for r in m.rows.tolist()]
    return values


def _fix_whole(
    h: highspy.Highs,
    table: NodeTable,
    movable: Sequence[_Workload],
    relaxed: Floats,
    start: Floats,
    *,
    cost_neutral: bool,
) -> None:
    """Fix each workload the LP placed in whole replicas there, if that still fits with every workload not fixed
    staying where it runs (biggest gain first), within the cost budget: the MIP left over is then feasible by
    construction (the others staying put), and small. ``start`` (every replica staying) becomes that feasible
    plan: the fixed workloads' replicas where the LP put them, and the replicas they move."""
    extra_eur = 0.0
    used_cpu, used_memory = table.allocated_cpu.copy(), table.allocated_memory_mib.copy()
    whole: list[tuple[float, _Workload, Floats]] = []
    for m in movable:
        y = relaxed[m.cols]
        if np.all(np.abs(y - np.rint(y)) <= 1e-6):
            counts = np.rint(y)
            stay = np.array([float(m.current.get(r, 0)) for r in m.rows.tolist()])
            gain = float(np.dot(stay - counts, m.eur + m.gco2))
            whole.append((gain, m, counts - stay))
    whole.sort(key=lambda item: -item[0])
    for _, m, delta in whole:
        cpu, memory = used_cpu[m.rows] + delta * m.req.cpu, used_memory[m.rows] + delta * m.req.memory_mib
        grows = delta > 0
        eur = float(np.dot(delta, m.eur))
        if cost_neutral and extra_eur + eur > 0:
            continue
        if np.all(cpu[grows] <= table.cpu[m.rows][grows] + _TOLERANCE) and np.all(
            memory[grows] <= table.memory_mib[m.rows][grows]
        ):
            used_cpu[m.rows], used_memory[m.rows] = cpu, memory
            extra_eur += eur
            stay = np.array([float(m.current.get(r, 0)) for r in m.rows.tolist()])
            columns = m.cols.astype(np.int32)
            h.changeColsBounds(len(columns), columns, stay + delta, stay + delta)
            start[m.cols] = stay + delta
            after = stay + delta
            for k, r in enumerate(sorted(m.current)):  # the replicas leaving each node it runs on
                start[m.first_m + k] = max(float(m.current[r]) - float(after[int(m.rows.searchsorted(r))]), 0.0)


class _Rows:
    """Constraint rows gathered as CSR arrays, passed to HiGHS in one call."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.starts: list[int] = []
        self.index: list[Ints] = []
        self.value: list[Floats] = []
        self.nnz = 0

    def add(self, columns: Ints, values: Floats, lower: float, upper: float) -> int:
        """Add one row; its index in the model."""
        self.starts.append(self.nnz)
        self.index.append(np.asarray(columns, dtype=np.int64))
        self.value.append(np.asarray(values, dtype=np.float64))
        self.lower.append(lower)
        self.upper.append(upper)
        self.nnz += len(columns)
        return len(self.lower) - 1

    def pass_to(self, h: highspy.Highs) -> None:
        h.addRows(
            len(self.lower),
            np.array(self.lower),
            np.array(self.upper),
            self.nnz,
            np.array(self.starts, dtype=np.int32),
            np.concatenate(self.index).astype(np.int32),
            np.concatenate(self.value),
        )


def _spread_rows(table: NodeTable, m: _Workload, rows: _Rows) -> None:
    """``placement.spread``: per group, min <= replicas <= max, relaxed only as far as today's count needs."""
    for c, (by, low, high) in enumerate(m.req.spread):
        groups = _group_codes(table, by)
        now: Counter[int] = Counter()
        for r, n in m.current.items():
            now[int(groups[r])] += n
        of_rows = groups[m.rows]
        for g in np.unique(of_rows).tolist():
            members = np.flatnonzero(of_rows == g)
            lo = float(min(low, now[g])) if low is not None else 0.0
            hi = float(max(high, now[g])) if high is not None else highspy.kHighsInf
            if lo > 0 or hi < sum(m.current.values()):
                m.spread_rows[(c, int(g))] = rows.add(m.cols[members], np.ones(len(members)), lo, hi)


def _group_codes(table: NodeTable, by: SpreadBy) -> Ints:
    if by is SpreadBy.TIER:
        return table.cluster_tier[table.cluster_of]
    if by is SpreadBy.REGION:
        return table.cluster_region[table.cluster_of]
    return table.cluster_of


def _capacity_rows(table: NodeTable, movable: Sequence[_Workload], rows: _Rows) -> tuple[int, int, Floats, Floats]:
    """Per node, what movable replicas use <= what the rest leave free (never less than they use now); the pinned
    workloads' replicas are in ``table.allocated_*``. Every node has its two rows, cpu ones first, then memory ones,
    so pricing can read any node's duals; the index of the first of each, and their upper bounds."""
    moving_cpu = np.zeros(len(table))
    moving_memory = np.zeros(len(table))
    for m in movable:
        cpu, memory = m.req.cpu, float(m.req.memory_mib)
        for r, n in m.current.items():
            moving_cpu[r] += cpu * n
            moving_memory[r] += memory * n
    free_cpu = np.maximum(table.cpu - (table.allocated_cpu - moving_cpu), moving_cpu) + _TOLERANCE
    free_memory = np.maximum(table.memory_mib - (table.allocated_memory_mib - moving_memory), moving_memory)
    columns: list[list[int]] = [[] for _ in range(len(table))]
    cpus: list[list[float]] = [[] for _ in range(len(table))]
    memories: list[list[float]] = [[] for _ in range(len(table))]
    for m in movable:
        for at, r in enumerate(m.rows.tolist()):
            columns[r].append(int(m.cols[at]))
            cpus[r].append(m.req.cpu)
            memories[r].append(float(m.req.memory_mib))
    first_cpu = len(rows.lower)
    for r in range(len(table)):
        rows.add(np.array(columns[r], dtype=np.int64), np.array(cpus[r]), -highspy.kHighsInf, float(free_cpu[r]))
    first_memory = len(rows.lower)
    for r in range(len(table)):
        rows.add(np.array(columns[r], dtype=np.int64), np.array(memories[r]), -highspy.kHighsInf,
                 float(free_memory[r]))  # fmt: skip
    return first_cpu, first_memory, free_cpu, free_memory


def _moves(table: NodeTable, m: _Workload, after: Mapping[int, int], eur_unit: float, gco2_unit: float) -> list[Move]:
    """The replicas leaving each node (highest index first, so low indexes stay put) and where each goes."""
    leaving: list[tuple[int, int]] = []  # (row, replica position)
    by_row: dict[int, list[int]] = {}
    for position, r in enumerate(m.w.replicas):
        by_row.setdefault(table.row(r.cluster, r.node), []).append(position)
    for row, positions in sorted(by_row.items()):
        extra = len(positions) - after.get(row, 0)
        if extra > 0:
            for position in sorted(positions, key=lambda p: -m.w.replicas[p].index)[:extra]:
                leaving.append((row, position))
    arriving = [row for row, n in sorted(after.items()) for _ in range(n - m.current.get(row, 0)) if n > 0]
    out = []
    for (src, position), dst in zip(leaving, arriving, strict=True):
        r = m.w.replicas[position]
        at_src, at_dst = int(m.rows.searchsorted(src)), int(m.rows.searchsorted(dst))
        eur = float(m.eur[at_src] - m.eur[at_dst])
        gco2 = float(m.gco2[at_src] - m.gco2[at_dst])
        by_cost, by_carbon = m.w_cost * eur / eur_unit, m.w_carbon * gco2 / gco2_unit
        out.append(
            Move(
                workload=m.w.workload,
                replica=r.replica,
                index=r.index,
                from_cluster=r.cluster,
                from_node=r.node,
                to_cluster=str(table.cluster_names[table.cluster_of[dst]]),
                to_node=table.nodes[dst].name,
                saving_eur_h=eur,
                saving_gco2_h=gco2,
                criterion="cost" if by_cost >= by_carbon else "carbon",
                stateful=m.w.spec.stateful,
            )
        )
    return out


def _totals(everyone: Sequence[_Workload], placement: Mapping[int, Mapping[int, int]], eur_unit: float,
            gco2_unit: float) -> Totals:  # fmt: skip
    eur = gco2 = objective = 0.0
    for m in everyone:
        weight = _objective(m, eur_unit, gco2_unit)
        for r, n in placement[id(m)].items():
            at = int(m.rows.searchsorted(r))
            eur += float(m.eur[at]) * n
            gco2 += float(m.gco2[at]) * n
            objective += float(weight[at]) * n
    return Totals(eur_h=eur, gco2_h=gco2, objective=objective)


def _worth(before: Totals, after: Totals, moves: Sequence[Move], limits: RebalanceLimits) -> tuple[bool, str]:
    """Hysteresis: a plan applies only if it saves enough, relatively and absolutely."""
    if not moves:
        return False, "every replica is already where it is best"
    saved = before.objective - after.objective
    eur, gco2 = before.eur_h - after.eur_h, before.gco2_h - after.gco2_h
    # rounded, then + 0.0: a saving of -1e-12 reads "0.0000", not "-0.0000"
    figures = f"saves {round(eur, 4) + 0.0:.4f} EUR/h and {round(gco2, 1) + 0.0:.1f} gCO2/h with {len(moves)} moves"
    if saved < limits.min_saving_relative * before.objective:
        return False, f"{figures}: below the relative threshold {limits.min_saving_relative:g}"
    if eur < limits.min_saving_eur_h and gco2 < limits.min_saving_gco2_h:
        return False, (f"{figures}: below both absolute thresholds ({limits.min_saving_eur_h:g} EUR/h, "
                       f"{limits.min_saving_gco2_h:g} gCO2/h)")  # fmt: skip
    return True, figures


def _unchanged(status: PlanStatus, before: Totals, started: float, message: str, pinned: Mapping[str, str]) -> Plan:
    return Plan(status, (), before, before, time.perf_counter() - started, False, message, dict(pinned))
