"""The rebalancer's integer program, solved by HiGHS: where the running replicas should be, and the moves to get there.

Variables, per workload ``w`` that may move: ``y[w, n]``, an integer, its replicas on node ``n`` (at most the most
any node holds today: a plan never stacks replicas more than they are), for the nodes the
decision engine's filters accept for it (``masks.cluster_masks``/``node_masks``, every filter but capacity, which is
a constraint here; SLA residency is in the spec the caller gives) plus the nodes it runs on now (staying is not a
placement: a cordoned cluster keeps what it runs); ``m[w, n]`` >= current - y, the replicas leaving a node it runs on.

- ``sum_n y[w, n] = replicas``; capacity: per node, cpu and memory of the replicas that may move <= what the others
  leave free (at least what they use now, so staying put is always feasible and the model is never infeasible by
  construction); ``placement.spread`` max and min per group, never tighter than today's counts; ``sum m <=
  max_moves``. A stateful workload is offered only nodes of the architecture it runs on.
- Objective: per replica, ``w_cost * EUR/h / mean EUR/h + w_carbon * gCO2/h / mean gCO2/h`` (the cost and carbon
  criteria's own figures, ``raw_many``, at the node's idle utilisation so they are linear; weights from
  ``scoring.workload_weights``, i.e. the workload's ``optimize`` and ``weights``, scaled to sum to 2) plus
  ``move_cost`` per moved replica. The means are over the running replicas, so one unit is an average replica-hour.
- ``cost_neutral`` (default): the moved replicas together may not cost more per hour than before.
- Candidate pruning: per workload only its ``candidates_per_workload`` best nodes by that objective (plus the nodes
  it runs on) get a variable; at 10,000 workloads over 10,000 nodes the full model has 10^8 columns.
- Solve: the LP relaxation first; workloads it places in whole replicas are fixed there when that fits with the
  rest staying put (``_fix_whole``), then the MIP decides the few left within the rest of the time limit, starting
  from that plan (feasible by construction). Past the limit HiGHS' best plan, at worst that one, is returned as
  ``time_limited``; ``infeasible``/``failed`` (no plan: nothing changes) would mean a bug in the model.
- HiGHS writes nothing to stdout (``_quiet_highs``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

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
    first_y: int = 0  # column of y for rows[0]
    first_m: int = 0  # column of m for the first current row (sorted)


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
        free_cpu=table.cpu.copy(),
        free_memory_mib=table.memory_mib.copy(),
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
    for m in everyone:
        if m.w.pinned is not None:
            continue
        if m.w_cost <= 0 and m.w_carbon <= 0:
            pinned[m.w.workload] = "weighs neither cost nor carbon"
            continue
        if m.w.spec.stateful and len({int(table.architecture[r]) for r in m.current}) > 1:
            pinned[m.w.workload] = "stateful, on more than one CPU architecture"
            continue
        _candidates(table, idle, m, memo, limits.candidates_per_workload, eur_unit, gco2_unit)
        movable.append(m)
    before = _totals(everyone, {id(m): dict(m.current) for m in everyone}, eur_unit, gco2_unit)
    if not movable or limits.max_moves == 0:
        return _unchanged(PlanStatus.NOTHING_TO_DO, before, started, "no workload may move", pinned)
    status, counts = _solve(table, everyone, movable, limits, eur_unit, gco2_unit)
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
    return Plan(status, moves, before, after, time.perf_counter() - started, worth, message, pinned)


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
    keep: int,
    eur_unit: float,
    gco2_unit: float,
) -> None:
    """Give ``m`` its candidate rows: the ``keep`` best feasible ones by its objective (ties by row, i.e. by name)
    plus those it runs on. A stateful workload keeps to the architecture it runs on. ``memo`` holds what workloads
    with the same constraints share: their feasible rows, and their best rows for the same size and weights."""
    key = _filter_key(m.req)
    arch = int(table.architecture[next(iter(m.current))]) if m.w.spec.stateful else None
    best_key = (key, arch, m.req.cpu, m.req.memory_mib, m.w_cost, m.w_carbon)
    rows = memo.get(best_key)
    if rows is None:
        rows = memo.get(key)
        if rows is None:
            rows = memo[key] = feasible_rows(table, m.req)
        if arch is not None:
            # The state is handed over as the application wrote it: only within the architecture it runs on.
            rows = rows[table.architecture[rows] == arch]
        if len(rows) > keep:
            probe = replace(m, rows=rows, eur=CostPerHour().raw_many(idle, rows, m.req),
                            gco2=CarbonPerHour().raw_many(idle, rows, m.req))  # fmt: skip
            value = _objective(probe, eur_unit, gco2_unit)
            # The keep-th best value, then every row strictly better and the first rows (by name) equal to it.
            cut = np.partition(value, keep - 1)[keep - 1]
            better, equal = rows[value < cut], rows[value == cut]
            rows = np.concatenate((better, equal[: keep - len(better)]))
        memo[best_key] = rows
    chosen = np.union1d(rows, m.rows).astype(np.int64)
    m.rows = chosen
    m.eur = CostPerHour().raw_many(idle, chosen, m.req)
    m.gco2 = CarbonPerHour().raw_many(idle, chosen, m.req)


def _solve(
    table: NodeTable,
    everyone: Sequence[_Workload],
    movable: Sequence[_Workload],
    limits: RebalanceLimits,
    eur_unit: float,
    gco2_unit: float,
) -> tuple[PlanStatus, dict[int, dict[int, int]] | None]:
    """Build and run the model; the replicas per row of each movable workload, or None when no plan came out."""
    h = _quiet_highs()
    h.setOptionValue("time_limit", float(limits.time_limit_s))
    h.setOptionValue("threads", int(limits.threads))
    h.setOptionValue("mip_rel_gap", _GAP)
    columns = 0
    costs: list[Floats] = []
    upper: list[Floats] = []
    integral: list[Ints] = []
    for m in movable:
        m.first_y = columns
        costs.append(_objective(m, eur_unit, gco2_unit))
        # Replicas stay as spread as they are: no node takes more of the workload's replicas than the most any node
        # holds today (staying put is feasible). Saving a gram of CO2 is no reason to put two replicas on one node.
        upper.append(np.full(len(m.rows), float(max(m.current.values()))))
        integral.append(np.arange(columns, columns + len(m.rows), dtype=np.int64))
        columns += len(m.rows)
        m.first_m = columns
        costs.append(np.full(len(m.current), limits.move_cost))
        upper.append(np.array([float(m.current[r]) for r in sorted(m.current)]))
        columns += len(m.current)
    cost = np.concatenate(costs)
    h.addVars(columns, np.zeros(columns), np.concatenate(upper))
    h.changeColsCost(columns, np.arange(columns, dtype=np.int32), cost)
    ints = np.concatenate(integral).astype(np.int32)
    h.changeColsIntegrality(len(ints), ints, np.ones(len(ints), dtype=np.uint8))

    rows = _Rows()
    for m in movable:
        y = np.arange(m.first_y, m.first_y + len(m.rows))
        rows.add(y, np.ones(len(y)), float(sum(m.current.values())), float(sum(m.current.values())))
        for k, r in enumerate(sorted(m.current)):  # m + y >= current
            at = int(m.rows.searchsorted(r))
            rows.add(np.array([m.first_m + k, m.first_y + at]), np.ones(2), float(m.current[r]), highspy.kHighsInf)
        _spread_rows(table, m, rows)
    moves = np.concatenate([np.arange(m.first_m, m.first_m + len(m.current)) for m in movable])
    rows.add(moves, np.ones(len(moves)), 0.0, float(limits.max_moves))
    _capacity_rows(table, movable, rows)
    if limits.cost_neutral:  # the plan may not raise the bill of the replicas it moves
        budget = sum(float(m.eur[m.rows.searchsorted(r)]) * n for m in movable for r, n in m.current.items())
        y_all = np.concatenate([np.arange(m.first_y, m.first_y + len(m.rows)) for m in movable])
        rows.add(y_all, np.concatenate([m.eur for m in movable]), -highspy.kHighsInf, budget + _EUR_SLACK)
    rows.pass_to(h)
    started = time.perf_counter()
    # Phase 1, the LP relaxation: an assignment under capacities is integral almost everywhere, so workloads the LP
    # places in whole replicas are fixed there (``_fix_whole``) and the MIP decides only the rest (HiGHS' own root
    # heuristics took over 30 s to close a 1 % gap at 1,000 workloads on this machine).
    h.changeColsIntegrality(len(ints), ints, np.zeros(len(ints), dtype=np.uint8))
    h.run()
    if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
        return PlanStatus.INFEASIBLE, None
    start = _staying(movable, columns)
    if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        relaxed = np.asarray(h.getSolution().col_value)
        _fix_whole(h, table, movable, relaxed, start, cost_neutral=limits.cost_neutral)
    # Phase 2, the MIP over what is left, within the rest of the time limit. It starts from a plan known to be
    # feasible (the fixed workloads where the LP put them, the others staying), so a solve cut short by the time
    # limit still has a plan to return: that one, or a better one HiGHS found.
    h.changeColsIntegrality(len(ints), ints, np.ones(len(ints), dtype=np.uint8))
    left = max(limits.time_limit_s - (time.perf_counter() - started), 0.0)
    h.setOptionValue("time_limit", left)
    h.setSolution(len(start), np.arange(len(start), dtype=np.int32), start)
    h.run()
    model_status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if model_status == highspy.HighsModelStatus.kOptimal:
        status = PlanStatus.OPTIMAL
    elif model_status == highspy.HighsModelStatus.kTimeLimit and has_solution:
        status = PlanStatus.TIME_LIMITED
    elif model_status == highspy.HighsModelStatus.kInfeasible:
        return PlanStatus.INFEASIBLE, None
    else:
        return PlanStatus.FAILED, None
    values = np.rint(np.asarray(h.getSolution().col_value)).astype(np.int64)
    out: dict[int, dict[int, int]] = {}
    for m in movable:
        counts = values[m.first_y : m.first_y + len(m.rows)]
        out[id(m)] = {int(r): int(c) for r, c in zip(m.rows.tolist(), counts.tolist(), strict=True) if c > 0}
    return status, out


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
        values[m.first_y : m.first_y + len(m.rows)] = [float(m.current.get(r, 0)) for r in m.rows.tolist()]
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
        y = relaxed[m.first_y : m.first_y + len(m.rows)]
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
            columns = np.arange(m.first_y, m.first_y + len(m.rows), dtype=np.int32)
            h.changeColsBounds(len(columns), columns, stay + delta, stay + delta)
            start[m.first_y : m.first_y + len(m.rows)] = stay + delta
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

    def add(self, columns: Ints, values: Floats, lower: float, upper: float) -> None:
        self.starts.append(self.nnz)
        self.index.append(np.asarray(columns, dtype=np.int64))
        self.value.append(np.asarray(values, dtype=np.float64))
        self.lower.append(lower)
        self.upper.append(upper)
        self.nnz += len(columns)

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
    for by, low, high in m.req.spread:
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
                rows.add(m.first_y + members, np.ones(len(members)), lo, hi)


def _group_codes(table: NodeTable, by: SpreadBy) -> Ints:
    if by is SpreadBy.TIER:
        return table.cluster_tier[table.cluster_of]
    if by is SpreadBy.REGION:
        return table.cluster_region[table.cluster_of]
    return table.cluster_of


def _capacity_rows(table: NodeTable, movable: Sequence[_Workload], rows: _Rows) -> None:
    """Per node, what movable replicas use <= what the rest leave free (never less than they use now); the pinned
    workloads' replicas are in ``table.allocated_*``."""
    moving_cpu = np.zeros(len(table))
    moving_memory = np.zeros(len(table))
    demand_cpu = np.zeros(len(table))
    demand_memory = np.zeros(len(table))
    for m in movable:
        cpu, memory, replicas = m.req.cpu, float(m.req.memory_mib), sum(m.current.values())
        for r, n in m.current.items():
            moving_cpu[r] += cpu * n
            moving_memory[r] += memory * n
        demand_cpu[m.rows] += cpu * replicas
        demand_memory[m.rows] += memory * replicas
    free_cpu = np.maximum(table.cpu - (table.allocated_cpu - moving_cpu), moving_cpu) + _TOLERANCE
    free_memory = np.maximum(table.memory_mib - (table.allocated_memory_mib - moving_memory), moving_memory)
    # A node whose every possible taker together still fits needs no row.
    tight = np.flatnonzero((demand_cpu > free_cpu) | (demand_memory > free_memory))
    if not len(tight):
        return
    position = {int(r): k for k, r in enumerate(tight.tolist())}
    columns: list[list[int]] = [[] for _ in tight]
    cpus: list[list[float]] = [[] for _ in tight]
    memories: list[list[float]] = [[] for _ in tight]
    for m in movable:
        for at, r in enumerate(m.rows.tolist()):
            k = position.get(r)
            if k is not None:
                columns[k].append(m.first_y + at)
                cpus[k].append(m.req.cpu)
                memories[k].append(float(m.req.memory_mib))
    for k, r in enumerate(tight.tolist()):
        rows.add(np.array(columns[k]), np.array(cpus[k]), -highspy.kHighsInf, float(free_cpu[r]))
        rows.add(np.array(columns[k]), np.array(memories[k]), -highspy.kHighsInf, float(free_memory[r]))


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
