"""How criteria become a node's ``total``: normalised scores in [0, 1], higher is better, in a weighted mean.

- A :class:`~criteria.Criterion`'s raw values are min-max normalised over the decision's feasible nodes, once, at
  the start of the decision (best 1.0, worst 0.0), so a node's scores do not change when a different node fills up
  mid-decision.
- A :class:`~criteria.LoadCriterion` (balance) scores in [0, 1] itself and is re-scored as the node takes replicas.
- ``spread``: 1 / (1 + replicas of the workload already on the node). Reported for explanation but not part of
  ``total``: spreading is applied as the first ranking key instead (see ``decide``).

Weights: one per criterion, 0 to 1000 (``domain.MAX_WEIGHT``), at least one above 0; ``total`` is the weighted mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from nemo_kernel.domain import (
    DEFAULT_WEIGHT,
    DEFAULT_WEIGHTS,
    MAX_WEIGHT,
    OPTIMIZE_PRESETS,
    DeploymentSpec,
    DivisionMode,
    SpreadBy,
)
from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements


def checked_weights(weights: Mapping[str, float], criteria: Iterable[str]) -> dict[str, float]:
    """``weights`` with every criterion present (missing ones are 0), after checking they make a mean.

    Raises ValueError on an unknown criterion (a typo would otherwise silently weigh nothing), a negative,
    non-finite or too large weight, or weights that are all zero.
    """
    names = list(criteria)
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"unknown score criteria {unknown}; known: {names}")
    full = {name: float(weights.get(name, 0.0)) for name in names}
    for name, value in full.items():
        if not 0.0 <= value <= MAX_WEIGHT:
            raise ValueError(f"weight {name}={value} must be a finite number >= 0 and <= {MAX_WEIGHT:g}")
    if sum(full.values()) <= 0.0:
        raise ValueError("at least one weight must be above 0")
    return full


def default_weights(criteria: Iterable[str]) -> dict[str, float]:
    """Each criterion's weight when nobody set one: ``DEFAULT_WEIGHTS``, else ``DEFAULT_WEIGHT`` (a plugin's)."""
    return {name: DEFAULT_WEIGHTS.get(name, DEFAULT_WEIGHT) for name in criteria}


def workload_weights(engine: Mapping[str, float], spec: DeploymentSpec) -> dict[str, float]:
    """The weights of one workload's decision: the engine's, then its ``optimize`` preset, then its own ``weights``.

    A preset sets only the criteria it names (a plugin's criterion keeps the engine's weight). Raises ValueError on
    a weight for a criterion the engine does not have (the domain checked the range).
    """
    where = spec.placement
    weights = dict(engine)
    if where.optimize is not None:
        weights.update((k, v) for k, v in OPTIMIZE_PRESETS[where.optimize].items() if k in weights)
    override: Mapping[str, float] = where.weights  # type: ignore[assignment]
    unknown = sorted(set(override) - set(weights))
    if unknown:
        raise ValueError(f"unknown score criteria {unknown}; known: {list(weights)}")
    weights.update(override)
    return weights


def normalised(values: Sequence[float], *, lower_is_better: bool) -> list[float]:
    """Min-max normalise so the best value scores 1.0 and the worst 0.0; all equal -> all 1.0."""
    if not values:
        return []
    low = min(values)
    spread = max(values) - low
    # Relative tolerance: identical prices computed through different float paths must still tie.
    if spread <= 1e-12 * max(abs(low), 1.0):
        return [1.0] * len(values)
    if lower_is_better:
        return [1.0 - (value - low) / spread for value in values]
    return [(value - low) / spread for value in values]


def spread(hosted_replicas: int) -> float:
    """1.0 on a node without replicas of the workload, halving, thirding... as replicas accumulate."""
    return 1.0 / (1 + hosted_replicas)


def spread_group(cluster: ClusterCandidate, by: SpreadBy) -> str:
    """The group a spread constraint counts a replica on ``cluster`` in: its tier, region or name."""
    if by is SpreadBy.TIER:
        return str(cluster.tier)
    return cluster.region if by is SpreadBy.REGION else cluster.name


def apportion(total: int, weights: Sequence[tuple[str, float]]) -> dict[str, int]:
    """``total`` divided in proportion to ``weights`` (name, weight > 0): floors, then one more to the largest
    remainders, ties by name. Empty when there is nothing to divide among."""
    whole = sum(w for _, w in weights)
    if not weights or whole <= 0.0:
        return {}
    quotas = [(name, total * w / whole) for name, w in weights]
    shares = {name: int(quota) for name, quota in quotas}
    left = total - sum(shares.values())
    for name, _ in sorted(quotas, key=lambda q: (-(q[1] - int(q[1])), q[0]))[:left]:
        shares[name] += 1
    return shares


def division_targets(req: Requirements, rooms: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Each cluster's share of the workload's replicas under ``placement.division``.

    ``rooms`` lists the clusters with a feasible node, in name order, with the replicas their feasible nodes have
    room for now (the weights of a dynamic division); a static division weighs the clusters it names.
    """
    division = req.division
    if division is None:
        return {}
    if division.mode is DivisionMode.STATIC:
        weights = [(name, division.weights[name]) for name, _ in rooms if name in division.weights]
    else:
        weights = [(name, float(room)) for name, room in rooms if room > 0]
    return apportion(req.replicas, weights)
