"""Real energy meters in Prometheus (Kepler, Scaphandre) standing in for NEMO's power model.

With Prometheus configured, a query on a replica's energy or power is first asked of the meters' series, mapped to
NEMO's names and labels; the Prometheus reader falls back to NEMO's model (``nemo_replica_*``) when no meter series
answers. The mapping:

============================================  ==================================  ================================
NEMO series and aggregation                   meter series                        PromQL per series
============================================  ==================================  ================================
``nemo_replica_energy_joules_total``, any     ``kepler_container_cpu_joules_total``  same function (joules counters)
  (histogram quantile excepted)               then ``kepler_container_joules_total``
``nemo_replica_energy_joules_total``, rate    ``scaph_process_power_consumption_     ``avg_over_time(m[w]) / 1e6``
                                              microwatts``                         (J/s is W)
``nemo_replica_power_watts``, avg             Kepler counters above                ``rate(m[w])`` (W is J/s)
``nemo_replica_power_watts``, avg max min     Scaphandre                           ``f(m[w]) / 1e6``
  last sum quantile
============================================  ==================================  ================================

Labels: a replica is the pod the Kubernetes driver runs (``pod_name`` for Kepler, ``kubernetes_pod_name`` for
Scaphandre in its ``--containers`` mode), its namespace ``container_namespace`` / ``kubernetes_pod_namespace``.
``replica``, ``namespace`` and ``workload`` (the replica name without NEMO's ``-v<version>-<index>-<hex>`` suffix)
are added with ``label_replace``; matchers on them are rewritten to the meter's labels; other labels (``cluster``,
``node``, ``tier``, ``region``) are matched as they are, so the scrape job of the meter should add them as target
labels (``nemo monitoring prometheus-config`` does for ``cluster``). Scaphandre's per-process series are summed per
container (``sum without (pid, exe, cmdline)``) before anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nemo_kernel.metrics import names
from nemo_kernel.metrics.model import Aggregation, Matcher, MatchOp, MetricsQuery, Selector
from nemo_kernel.metrics.promql import across, format_selector, grouping, over_window, quote, range_duration

__all__ = ["METERS", "REPLICA_SUFFIX", "Meter", "metered_promql"]

REPLICA_SUFFIX = "-v[0-9]+-[0-9]+-[0-9a-f]{6}"
"""What NEMO appends to a workload's name to name a replica (``store.workloads.new_replica_id``)."""


@dataclass(frozen=True, slots=True)
class Meter:
    """An exporter's per-container energy series and how its labels name NEMO's replicas."""

    exporter: str
    metric: str
    replica_label: str
    namespace_label: str
    microwatts: bool  # a power gauge in µW (Scaphandre), else a joules counter (Kepler)


KEPLER_CPU = Meter("Kepler", "kepler_container_cpu_joules_total", "pod_name", "container_namespace", microwatts=False)
KEPLER = Meter("Kepler", "kepler_container_joules_total", "pod_name", "container_namespace", microwatts=False)
SCAPHANDRE = Meter(
    "Scaphandre",
    "scaph_process_power_consumption_microwatts",
    "kubernetes_pod_name",
    "kubernetes_pod_namespace",
    microwatts=True,
)
METERS: tuple[Meter, ...] = (KEPLER_CPU, KEPLER, SCAPHANDRE)
"""Tried in this order: the newer Kepler name first."""

_SCAPH_PER_PROCESS = ("pid", "exe", "cmdline")


def metered_promql(query: MetricsQuery, meter: Meter) -> str | None:
    """The PromQL answering ``query`` from ``meter``'s series, or None when the meter cannot answer it."""
    metric, agg = query.selector.metric, query.aggregation
    rng = range_duration(query.window if query.step is None else query.step)
    across_as: Aggregation
    sel = format_selector(Selector(meter.metric, tuple(_mapped(m, meter) for m in query.selector.matchers)))
    if metric == names.REPLICA_ENERGY.name and not meter.microwatts and agg is not Aggregation.HISTOGRAM_QUANTILE:
        inner = over_window(agg, sel, rng, query.quantile)
        across_as = agg
    elif metric == names.REPLICA_ENERGY.name and meter.microwatts and agg is Aggregation.RATE:
        inner = f"{_per_container(f'avg_over_time({sel}[{rng}])')} / 1e6"
        across_as = Aggregation.RATE
    elif metric == names.REPLICA_POWER.name and not meter.microwatts and agg is Aggregation.AVG:
        inner = f"rate({sel}[{rng}])"
        across_as = Aggregation.AVG
    elif metric == names.REPLICA_POWER.name and meter.microwatts and agg in _GAUGE_FUNCTIONS:
        inner = f"{_per_container(over_window(agg, sel, rng, query.quantile))} / 1e6"
        across_as = agg
    else:
        return None
    labelled = _with_nemo_labels(inner, meter)
    if query.by is None:
        return labelled
    return f"{across(across_as)} by ({grouping(query.by)}) ({labelled})"


_GAUGE_FUNCTIONS = frozenset(
    {Aggregation.AVG, Aggregation.MAX, Aggregation.MIN, Aggregation.LAST, Aggregation.SUM, Aggregation.QUANTILE}
)


def _per_container(expr: str) -> str:
    return f"sum without ({', '.join(_SCAPH_PER_PROCESS)}) ({expr})"


def _with_nemo_labels(expr: str, meter: Meter) -> str:
    expr = f'label_replace({expr}, "replica", "$1", {quote(meter.replica_label)}, "(.+)")'
    expr = f'label_replace({expr}, "namespace", "$1", {quote(meter.namespace_label)}, "(.+)")'
    return f'label_replace({expr}, "workload", "$1", {quote(meter.replica_label)}, {quote("(.+)" + REPLICA_SUFFIX)})'


def _mapped(matcher: Matcher, meter: Meter) -> Matcher:
    if matcher.label == "replica":
        return Matcher(meter.replica_label, matcher.op, matcher.value)
    if matcher.label == "namespace":
        return Matcher(meter.namespace_label, matcher.op, matcher.value)
    if matcher.label == "workload":
        regex = f"(?:{matcher.value})" if matcher.op in (MatchOp.RE, MatchOp.NRE) else re.escape(matcher.value)
        positive = matcher.op in (MatchOp.EQ, MatchOp.RE)
        return Matcher(meter.replica_label, MatchOp.RE if positive else MatchOp.NRE, regex + REPLICA_SUFFIX)
    return matcher
