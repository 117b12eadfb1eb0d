"""Prometheus rules for an SLA's ratio SLOs, with Sloth's names, so that a team running Prometheus gets the same
error-budget recording rules and multiwindow multi-burn-rate alerts that PPEF evaluates.

For each SLO of a ratio kind (error rate, availability, latency against a threshold):

* recording rules ``slo:sli_error:ratio_rate<window>`` for every alert window and the period, and Sloth's
  metadata series ``slo:objective:ratio``, ``slo:error_budget:ratio``, ``slo:time_period:days``,
  ``slo:current_burn_rate:ratio``, ``slo:period_burn_rate:ratio``, ``slo:period_error_budget_remaining:ratio``;
* two alerts, page (burn 14.4 over 5m and 1h, or 6 over 30m and 6h) and ticket (3 over 2h and 1d, or 1 over 6h
  and 3d), as in Google's SRE workbook. The windows are Sloth's for a 30-day period, scaled to the SLA's period
  (a 7-day SLA pages on 70s and 14m); the burn factors stay, since both sides of each pair scale alike.

The SLIs are written against the series of :mod:`nemo_kernel.metrics.names` with the target labels ``namespace``
and ``workload`` (a namespace-wide SLA: ``namespace`` only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from nemo_kernel.domain.sla import SlaSpec, SloKind, SloSpec, duration_seconds
from nemo_kernel.metrics import names

SLOTH_PERIOD_SECONDS = 30 * 86400
"""The period Sloth's windows are written for."""

MIN_WINDOW_SECONDS = 60
"""No window is shorter than this, however short the period: a rate needs a few scrapes."""

RATIO_KINDS = (SloKind.ERROR_RATE, SloKind.AVAILABILITY, SloKind.LATENCY)
"""The kinds whose SLI is a ratio of bad events (what error-budget burn rates are defined for)."""


@dataclass(frozen=True)
class BurnAlert:
    """One window pair of a multiwindow multi-burn-rate alert (Sloth's 30-day windows)."""

    severity: str  # page | ticket
    factor: float
    short_seconds: int
    long_seconds: int


SLOTH_ALERTS = (
    BurnAlert("page", 14.4, 5 * 60, 3600),
    BurnAlert("page", 6, 30 * 60, 6 * 3600),
    BurnAlert("ticket", 3, 2 * 3600, 86400),
    BurnAlert("ticket", 1, 6 * 3600, 3 * 86400),
)


def prom_duration(seconds: float) -> str:
    """A whole number of seconds as Prometheus writes it with the largest exact unit (``3600`` -> ``1h``)."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def scaled_alerts(period: str) -> list[BurnAlert]:
    """Sloth's four window pairs scaled to ``period`` (never shorter than :data:`MIN_WINDOW_SECONDS`)."""
    scale = duration_seconds(period) / SLOTH_PERIOD_SECONDS
    return [
        BurnAlert(
            a.severity,
            a.factor,
            max(MIN_WINDOW_SECONDS, round(a.short_seconds * scale)),
            max(MIN_WINDOW_SECONDS, round(a.long_seconds * scale)),
        )
        for a in SLOTH_ALERTS
    ]


def _selector(sla: SlaSpec) -> str:
    labels = {"namespace": sla.namespace}
    if sla.workload is not None:
        labels["workload"] = sla.workload
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def _le(threshold: float) -> str:
    # Prometheus writes bucket bounds as Go's strconv does: 0.3, 1, 2.5
    return repr(threshold) if threshold != int(threshold) else str(int(threshold))


def sli_error_ratio(sla: SlaSpec, slo: SloSpec, window: str) -> str:
    """PromQL for the share of bad events of ``slo`` over ``window`` (0..1)."""
    sel = _selector(sla)
    if slo.kind is SloKind.ERROR_RATE:
        return (
            f"sum(rate({names.WORKLOAD_ERRORS.name}{{{sel}}}[{window}]))\n"
            f"/\nsum(rate({names.WORKLOAD_REQUESTS.name}{{{sel}}}[{window}]))"
        )
    if slo.kind is SloKind.AVAILABILITY:
        return f"1 - avg(avg_over_time({names.REPLICA_UP.name}{{{sel}}}[{window}]))"
    if slo.kind is SloKind.LATENCY and slo.threshold is not None:
        base = names.WORKLOAD_LATENCY.name
        return (
            f'1 - (\n  sum(rate({base}_bucket{{{sel},le="{_le(slo.threshold)}"}}[{window}]))\n'
            f"  /\n  sum(rate({base}_count{{{sel}}}[{window}]))\n)"
        )
    raise ValueError(f"SLO {slo.name!r} of kind {slo.kind.value} has no ratio SLI")


def has_ratio_sli(slo: SloSpec) -> bool:
    """Whether ``slo`` gets burn-rate rules (a latency SLO needs a threshold: the bucket bound)."""
    return slo.kind in RATIO_KINDS and (slo.kind is not SloKind.LATENCY or slo.threshold is not None)


def _labels(sla: SlaSpec, slo: SloSpec) -> dict[str, str]:
    return {
        "sloth_id": f"{sla.namespace}-{sla.name}-{slo.name}",
        "sloth_service": sla.workload or sla.namespace,
        "sloth_slo": slo.name,
        "nemo_sla": f"{sla.namespace}/{sla.name}",
    }


def _slo_groups(sla: SlaSpec, slo: SloSpec) -> list[dict[str, Any]]:
    labels = _labels(sla, slo)
    match = ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "nemo_sla")
    alerts = scaled_alerts(sla.period)
    windows = sorted({w for a in alerts for w in (a.short_seconds, a.long_seconds)})
    period = prom_duration(duration_seconds(sla.period))
    shortest = prom_duration(windows[0])
    budget = float(f"{1 - slo.target:.12g}")  # 0.001, not 0.0010000000000000009
    recording: list[dict[str, Any]] = [
        {
            "record": f"slo:sli_error:ratio_rate{prom_duration(w)}",
            "expr": sli_error_ratio(sla, slo, prom_duration(w)),
            "labels": {**labels, "sloth_window": prom_duration(w)},
        }
        for w in windows
    ]
    recording.append(
        {
            "record": f"slo:sli_error:ratio_rate{period}",
            "expr": (
                f"sum_over_time(slo:sli_error:ratio_rate{shortest}{{{match}}}[{period}])\n"
                f"/ ignoring (sloth_window)\n"
                f"count_over_time(slo:sli_error:ratio_rate{shortest}{{{match}}}[{period}])"
            ),
            "labels": {**labels, "sloth_window": period},
        }
    )
    meta: list[dict[str, Any]] = [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.target!r})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector(1 - {slo.target!r})", "labels": labels},
        {
            "record": "slo:time_period:days",
            "expr": f"vector({duration_seconds(sla.period) / 86400!r})",
            "labels": labels,
        },
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": (
                f"slo:sli_error:ratio_rate{shortest}{{{match}}}\n/ on (sloth_id, sloth_slo, sloth_service) group_left\n"
                f"slo:error_budget:ratio{{{match}}}"
            ),
            "labels": labels,
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": (
                f"slo:sli_error:ratio_rate{period}{{{match}}}\n/ on (sloth_id, sloth_slo, sloth_service) group_left\n"
                f"slo:error_budget:ratio{{{match}}}"
            ),
            "labels": labels,
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - slo:period_burn_rate:ratio{{{match}}}",
            "labels": labels,
        },
    ]
    alert_rules = [_alert(sla, slo, severity, alerts, match, budget) for severity in ("page", "ticket")]
    return [
        {"name": f"nemo-slo-sli-recordings-{labels['sloth_id']}", "rules": recording},
        {"name": f"nemo-slo-meta-recordings-{labels['sloth_id']}", "rules": meta},
        {"name": f"nemo-slo-alerts-{labels['sloth_id']}", "rules": alert_rules},
    ]


def _alert(
    sla: SlaSpec, slo: SloSpec, severity: str, alerts: list[BurnAlert], match: str, budget: float
) -> dict[str, Any]:
    def over(window: int, factor: float) -> str:
        w = prom_duration(window)
        return f"max(slo:sli_error:ratio_rate{w}{{{match}}} > ({factor!r} * {budget!r})) without (sloth_window)"

    pairs = [a for a in alerts if a.severity == severity]
    expr = "\nor\n".join(
        f"(\n  {over(a.short_seconds, a.factor)}\n  and\n  {over(a.long_seconds, a.factor)}\n)" for a in pairs
    )
    title = "".join(part.capitalize() for part in f"{sla.name}-{slo.name}".split("-"))
    return {
        "alert": f"{title}HighErrorBudgetBurn{severity.capitalize()}",
        "expr": expr,
        "labels": {"severity": severity, "sloth_severity": severity, **_labels(sla, slo)},
        "annotations": {
            "summary": f"SLA {sla.namespace}/{sla.name}: SLO {slo.name} is burning its error budget too fast",
            "title": f"(page) {sla.name}/{slo.name} error budget burn rate is too high"
            if severity == "page"
            else f"(ticket) {sla.name}/{slo.name} error budget burn rate is too high",
        },
    }


def rule_groups(sla: SlaSpec) -> list[dict[str, Any]]:
    """The rule groups of every ratio SLO of ``sla`` (none for an SLA without one)."""
    return [group for slo in sla.slos if has_ratio_sli(slo) for group in _slo_groups(sla, slo)]


class _RulesDumper(yaml.SafeDumper):
    """Writes multi-line PromQL as literal blocks, as people write rule files."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_RulesDumper.add_representer(str, _text)


def rules_yaml(sla: SlaSpec) -> str:
    """A Prometheus rule file for ``sla`` (``promtool check rules`` accepts it); SLOs without a ratio SLI are named
    in a comment at the top, since a burn rate means nothing for them."""
    skipped = [slo.name for slo in sla.slos if not has_ratio_sli(slo)]
    head = f"# Prometheus rules for SLA {sla.namespace}/{sla.name}, written by NEMO (Sloth's names).\n"
    if skipped:
        head += f"# No burn-rate rules for SLOs without a ratio SLI: {', '.join(skipped)}.\n"
    body = yaml.dump({"groups": rule_groups(sla)}, Dumper=_RulesDumper, sort_keys=False, width=120)
    return head + body


def window_for_factor(period: str, factor: float) -> str | None:
    """The long window of the alert pair with burn ``factor`` at ``period`` (e.g. 14.4 -> ``1h`` at 30d)."""
    for alert in scaled_alerts(period):
        if math.isclose(alert.factor, factor):
            return prom_duration(alert.long_seconds)
    return None
