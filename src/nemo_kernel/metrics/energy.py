"""Energy and CO2 from a node's power model: pure functions, no clock and no I/O.

There are no RAPL counters on the machines NEMO's local clusters run on, so a node's watts come from its
:class:`~nemo_kernel.domain.PowerModel` at its CPU utilisation, its joules from integrating those watts between two
readings, and a replica's share from its part of the node's CPU time over the same interval.
"""

from __future__ import annotations

import bisect

from nemo_kernel.domain import PowerModel

JOULES_PER_KWH = 3_600_000.0


def power_at(model: PowerModel, utilisation: float) -> float:
    """Watts the node draws at ``utilisation`` (0 to 1; clamped): linear, or interpolated in the model's table."""
    u = min(1.0, max(0.0, utilisation)) if utilisation == utilisation else 0.0  # NaN counts as idle
    table = model.table
    if not table:
        return model.idle_watts + (model.max_watts - model.idle_watts) * u
    xs = [p.utilisation for p in table]
    i = bisect.bisect_right(xs, u)
    if i == 0:
        return table[0].watts
    if i == len(table):
        return table[-1].watts
    left, right = table[i - 1], table[i]
    fraction = (u - left.utilisation) / (right.utilisation - left.utilisation)
    return left.watts + (right.watts - left.watts) * fraction


def utilisation(cpu_seconds: float, seconds: float, cores: float) -> float:
    """Share of ``cores`` busy while ``cpu_seconds`` of CPU were used in ``seconds`` of wall time (0 to 1)."""
    if seconds <= 0 or cores <= 0:
        return 0.0
    return min(1.0, max(0.0, cpu_seconds / (seconds * cores)))


def joules_between(model: PowerModel, cpu_seconds: float, seconds: float, cores: float) -> float:
    """Energy the node used between two readings ``seconds`` apart, in which its work used ``cpu_seconds``.

    The watts at the interval's mean utilisation: exact for the linear model, and for a table as exact as the
    readings are frequent (the utilisation within the interval is not known).
    """
    if seconds <= 0:
        return 0.0
    return power_at(model, utilisation(cpu_seconds, seconds, cores)) * seconds


def replica_share(node_value: float, replica_cpu: float, node_cpu: float, replicas_on_node: int) -> float:
    """A replica's part of a node's watts or joules: by its share of the node's CPU time over the interval.

    When nothing used CPU (``node_cpu`` is 0) the node's draw is idle draw, split evenly among its replicas, so that
    the replicas' shares always add up to the node's value.
    """
    if replicas_on_node <= 0:
        return 0.0
    if node_cpu <= 0:
        return node_value / replicas_on_node
    return node_value * max(0.0, replica_cpu) / node_cpu


def grams_co2(joules: float, grams_per_kwh: float) -> float:
    """CO2 emitted by ``joules`` of electricity from a grid at ``grams_per_kwh``."""
    return joules / JOULES_PER_KWH * grams_per_kwh
