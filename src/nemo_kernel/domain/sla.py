"""Service level agreements (PPEF, seed section 3.3): the template of section 3.3.1 and the SLO kinds of 3.3.2.

An SLA binds one workload (or every workload of a namespace) to objectives. What a user writes is an
:class:`SlaSpec`; PPEF stores it versioned like a workload, evaluates each :class:`SloSpec` against its SLI, and
keeps the SLA's :class:`SlaState`. Every number is finite and bounded, every duration is written the way
Prometheus writes it (``30s``, ``5m``, ``1h``, ``30d``, ``4w``) and bounded by :data:`MAX_PERIOD_SECONDS`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict, ValidationInfo, field_validator, model_validator

from nemo_kernel.domain.common import Lax, Model, Name, Spec
from nemo_kernel.domain.countries import COUNTRY_CODES, CountryCode

MAX_PERIOD_SECONDS = 366 * 24 * 3600
"""The longest duration an SLA may name (a yearly reporting period)."""

_DURATION = re.compile(r"([1-9][0-9]{0,6})(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> float:
    """Seconds of a Prometheus-style duration (``5m`` -> 300.0); raises ValueError on anything else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h, 30d or 4w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")  # [0-9]: \d would take other scripts' digits too


def seconds_or_duration(text: str) -> float:
    """Seconds of a number of seconds (``300``, ``0.5``) or of a Prometheus-style duration (``5m``); raises
    ValueError on anything else. What an option or a query parameter that takes a duration reads."""
    return float(text) if _SECONDS.fullmatch(text) else duration_seconds(text)


def _check_duration(text: str) -> str:
    if duration_seconds(text) > MAX_PERIOD_SECONDS:
        raise ValueError(f"{text!r} is longer than a year")
    return text


Duration = Annotated[str, Strict(), AfterValidator(_check_duration)]
"""A duration as Prometheus writes it, at most a year."""

MAX_MEASURED_SECONDS = 31 * 24 * 3600
"""The longest SLO window or budget period: the longest window the analytics engine answers
(``metrics.model.MAX_WINDOW_SECONDS``, kept equal by a test). A longer one would be accepted and never measured."""


MIN_MEASURED_SECONDS = 1.0
"""The shortest SLO window, budget period and timeslice: NEMO's series have no finer resolution (a window of
``1ms`` was accepted and measured nothing)."""


def _check_measured(text: str) -> str:
    seconds = duration_seconds(text)
    if seconds > MAX_MEASURED_SECONDS:
        raise ValueError(f"{text!r} is longer than 31d, the longest window NEMO measures")
    if seconds < MIN_MEASURED_SECONDS:
        raise ValueError(f"{text!r} is shorter than 1s, the shortest window NEMO measures")
    return text


MeasuredDuration = Annotated[str, Strict(), AfterValidator(_check_measured)]
"""A duration NEMO measures over (an SLO's window, an SLA's budget period): at most 31 days."""


class SloKind(StrEnum):
    """The 15 performance targets of seed section 3.3.2; each has one SLI definition in ``nemo_kernel.ppef``."""

    LATENCY = "latency"  # percentile of request latency through the gateway, seconds
    ERROR_RATE = "error_rate"  # share of requests that fail (5xx, refused)
    THROUGHPUT = "throughput"  # requests per second served
    CAPACITY = "capacity"  # CPU or memory utilisation of the workload's replicas, 0..1
    SCALABILITY = "scalability"  # seconds from a scale-out being decided to the new replicas running
    AVAILABILITY = "availability"  # share of good minutes (replicas up and requests succeeding)
    BACKUP_DR = "backup_dr"  # recovery point and recovery time, seconds
    SECURITY = "security"  # open runtime security events against the workload
    INCIDENT_RESPONSE = "incident_response"  # mean time to detect / to resolve, seconds
    PRESS_COMPLIANCE = "press_compliance"  # share of replicas inside the SLA's PRESS clauses, 0..1
    ENERGY = "energy"  # Wh per request, or Wh per hour
    COST = "cost"  # EUR per hour
    PACKET_LOSS = "packet_loss"  # share of packets lost on the workload's links, 0..1
    BANDWIDTH = "bandwidth"  # Mbit/s available on the workload's links
    JITTER = "jitter"  # seconds of variation of the link round trip


class Comparison(StrEnum):
    """Which side of the threshold is good."""

    AT_MOST = "<="
    AT_LEAST = ">="


HIGHER_IS_BETTER = frozenset({"throughput", "bandwidth", "availability", "press_compliance"})
"""The kinds whose SLI is good at or above its threshold; every other kind is good at or below it."""


def default_comparison(kind: SloKind) -> Comparison:
    """Which side of the threshold is good for ``kind`` when an SLO does not say (``comparison`` None)."""
    return Comparison.AT_LEAST if kind.value in HIGHER_IS_BETTER else Comparison.AT_MOST


class BudgetingMethod(StrEnum):
    """How an SLO's error budget is counted (OpenSLO v1's names)."""

    OCCURRENCES = "Occurrences"  # good events / all events over the period
    TIMESLICES = "Timeslices"  # good timeslices / all timeslices; a slice is good when its SLI meets the threshold


class SloSpec(Spec):
    """One objective: an SLI of ``kind`` compared with ``threshold`` over ``window``, and a target share of good
    events or timeslices over the SLA's period (the error budget is ``1 - target`` of it)."""

    name: Name
    kind: Annotated[SloKind, Lax]
    description: str = Field(default="", max_length=1000)
    threshold: float | None = Field(
        default=None, ge=0, le=1e12, description="in the kind's unit; kinds that are ratios of events need none"
    )
    comparison: Annotated[Comparison, Lax] | None = Field(
        default=None, description="default per kind: <= for latency, errors, cost...; >= for throughput, bandwidth"
    )
    percentile: float | None = Field(default=None, gt=0, lt=100, description="latency only, e.g. 99")
    target: float = Field(default=0.99, gt=0, le=1, description="share of good events or timeslices, e.g. 0.995")
    window: MeasuredDuration = Field(default="5m", description="over which the SLI is measured (at most 31d)")
    budgeting: Annotated[BudgetingMethod, Lax] = BudgetingMethod.OCCURRENCES
    timeslice: Duration | None = Field(
        default=None, description="Timeslices budgeting: the slice, from 1s to the window, e.g. 1m"
    )
    min_events: int = Field(
        default=10, ge=0, le=10**9, description="fewer events in a window than this: a burn rate cannot page"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SloSpec:
        if self.percentile is not None and self.kind is not SloKind.LATENCY:
            raise ValueError("percentile applies to latency only")
        if self.budgeting is BudgetingMethod.TIMESLICES and self.timeslice is None:
            raise ValueError("Timeslices budgeting needs a timeslice")
        return self

    @field_validator("timeslice")
    @classmethod
    def _timeslice_within_window(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A slice is judged by the SLI over the window, and the budget counts (1 - target) * period / slice of them:
        # below a second it would be finer than any evaluation, longer than the window it would judge unmeasured time.
        if value is None:
            return value
        seconds = duration_seconds(value)
        if seconds < MIN_MEASURED_SECONDS:
            raise ValueError(f"{value!r} is shorter than {MIN_MEASURED_SECONDS:g}s")
        window = info.data.get("window")
        if window is not None and seconds > duration_seconds(window):
            raise ValueError(f"{value!r} is longer than the SLO's window ({window})")
        return value


class Criticality(StrEnum):
    """How much a failure of the service matters (section 3.3.1, item 1)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ServiceDescription(Spec):
    """Section 3.3.1 item 1: the service and its criticality for security, performance and availability."""

    description: str = Field(default="", max_length=4000)
    security: Annotated[Criticality, Lax] = Criticality.MEDIUM
    performance: Annotated[Criticality, Lax] = Criticality.MEDIUM
    availability: Annotated[Criticality, Lax] = Criticality.MEDIUM


class BackupPolicy(Spec):
    """Backup and disaster recovery: how much data may be lost (RPO) and how long recovery may take (RTO)."""

    rpo: Duration
    rto: Duration


class PressClauses(Spec):
    """Section 3.3.1 item 2 (privacy, data protection, ethics, security and societal aspects).

    ``data_residency`` becomes a placement constraint the decision engine enforces, and is checked continuously
    by the ``press_compliance`` SLO kind.
    """

    data_residency: list[CountryCode] = Field(
        default_factory=list, max_length=len(COUNTRY_CODES), description="countries (ISO 3166-1 alpha-2, or EU)"
    )
    encryption_in_transit: bool = False
    encryption_at_rest: bool = False
    data_retention: Duration | None = None
    backup: BackupPolicy | None = None


class Reporting(Spec):
    """Section 3.3.1 item 5: who gets the reports, how often."""

    period: Duration = "30d"
    recipients: list[Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^\s@]+@[^\s@]+$")]] = Field(
        default_factory=list, max_length=100
    )


class Penalty(Spec):
    """A service credit owed when an SLO ends its period below ``below`` (a share, like the SLO's target)."""

    slo: Name
    below: float = Field(gt=0, le=1)
    credit_percent: float = Field(gt=0, le=100)


class PolicyAction(StrEnum):
    """What PPEF does about a predicted or actual breach."""

    NOTIFY = "notify"  # bus event and the SLA's webhook
    NOTIFY_ONLY = "notify_only"  # record only (audit), no outside call
    SCALE_OUT = "scale_out"  # replicas + step, up to max_replicas
    MOVE = "move"  # re-place on a better cluster for the SLO (migration when available)


class PolicyTrigger(StrEnum):
    """When a policy acts."""

    PREDICTED = "predicted"  # sla.breach_predicted
    VIOLATED = "violated"  # sla.violated


_BARE_ON = "(a bare on: key)"
"""What a YAML 1.1 ``on:`` key that was read as ``true`` becomes, so that the error names ``on``."""


class Policy(Spec):
    """One reaction of the closed loop, with a cooldown so that nothing thrashes.

    Its triggers are written ``triggers:`` (or ``"on":``, quoted: YAML 1.1 reads a bare ``on`` key as ``true``, and
    such a key is refused by name rather than taken as the default)."""

    action: Annotated[PolicyAction, Lax]
    on: list[Annotated[PolicyTrigger, Lax]] = Field(
        default_factory=lambda: [PolicyTrigger.PREDICTED, PolicyTrigger.VIOLATED],
        min_length=1,
        max_length=2,
        description='when it acts; written triggers or "on" (quoted)',
    )
    slos: list[Name] = Field(default_factory=list, description="the SLOs it reacts to; empty: all", max_length=64)
    step: int = Field(default=1, ge=1, le=100, description="scale_out: replicas added each time")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="scale_out: never beyond")
    cooldown: Duration = "5m"
    webhook: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\s]+$")

    @model_validator(mode="before")
    @classmethod
    def _triggers_key(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if True in data:  # YAML 1.1 read a bare on: key as the boolean true
            data = {k: v for k, v in data.items() if k is not True}
            data["on"] = _BARE_ON
        if "triggers" in data:
            if "on" in data:
                data = {k: v for k, v in data.items() if k != "triggers"}
                data["on"] = "(both triggers and on)"
            else:
                data = {("on" if k == "triggers" else k): v for k, v in data.items()}
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _not_bare_on(cls, value: Any) -> Any:
        if value == _BARE_ON:
            raise ValueError('a bare on: key is read as true by YAML 1.1: write triggers: or "on": (quoted)')
        if value == "(both triggers and on)":
            raise ValueError("give the triggers once: triggers or on, not both")
        return value


class SlaSpec(Spec):
    """An SLA as a user writes it (YAML or JSON), following the template of seed section 3.3.1."""

    name: Name
    namespace: Name = "default"
    workload: Name | None = Field(default=None, description="the workload it binds; None: every workload of namespace")
    service: ServiceDescription = Field(default_factory=ServiceDescription)
    press: PressClauses = Field(default_factory=PressClauses)
    period: MeasuredDuration = Field(
        default="30d", description="the SLO period the error budgets are counted over (at most 31d)"
    )
    slos: list[SloSpec] = Field(min_length=1, max_length=64)
    reporting: Reporting = Field(default_factory=Reporting)
    penalties: list[Penalty] = Field(default_factory=list, max_length=64)
    policies: list[Policy] = Field(default_factory=list, max_length=16)

    @field_validator("slos")
    @classmethod
    def _slos_fit(cls, slos: list[SloSpec], info: ValidationInfo) -> list[SloSpec]:
        names = [slo.name for slo in slos]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"duplicate SLO name {duplicate!r}")
        period = info.data.get("period")
        if period is not None:  # None: the period itself was refused, and said so
            for slo in slos:
                if duration_seconds(slo.window) > duration_seconds(period):
                    raise ValueError(f"SLO {slo.name!r}: window {slo.window} is longer than the period {period}")
        return slos

    @field_validator("penalties")
    @classmethod
    def _penalties_name_slos(cls, penalties: list[Penalty], info: ValidationInfo) -> list[Penalty]:
        if "slos" not in info.data:
            return penalties  # the SLOs were refused, and said so: blaming what names them would be noise
        names = {slo.name for slo in info.data["slos"]}
        for penalty in penalties:
            if penalty.slo not in names:
                raise ValueError(f"names unknown SLO {penalty.slo!r}")
        return penalties

    @field_validator("policies")
    @classmethod
    def _policies_name_slos(cls, policies: list[Policy], info: ValidationInfo) -> list[Policy]:
        if "slos" not in info.data:
            return policies  # as for penalties
        names = {slo.name for slo in info.data["slos"]}
        for policy in policies:
            unknown = [n for n in policy.slos if n not in names]
            if unknown:
                raise ValueError(f"policy {policy.action.value} names unknown SLO {unknown[0]!r}")
        return policies


class SlaState(StrEnum):
    """Lifecycle of an SLA: ``Draft -> Active -> (Violated <-> Active) -> Terminated``; every transition an event."""

    DRAFT = "Draft"
    ACTIVE = "Active"
    VIOLATED = "Violated"
    TERMINATED = "Terminated"


class SloState(StrEnum):
    """Where one SLO stands; missing data is ``NoData``, never ``Met``."""

    MET = "Met"
    AT_RISK = "AtRisk"
    VIOLATED = "Violated"
    NO_DATA = "NoData"


class SlaStatus(Model):
    """A stored SLA: its latest spec and version, and where its lifecycle stands."""

    name: str
    namespace: str
    workload: str | None
    version: int
    state: SlaState
    message: str = ""
    spec: SlaSpec | None = Field(
        description="None when the stored spec no longer passes this version's checks (it was stored by an older "
        "NEMO): ``message`` says which field; apply it again, corrected, or delete the SLA"
    )
    created_at: datetime
    updated_at: datetime


class SloStatus(Model):
    """Where one SLO of an SLA stands after its last evaluation (part B writes it; the API reads it)."""

    slo: str
    kind: SloKind
    state: SloState = SloState.NO_DATA
    value: float | None = Field(default=None, description="the SLI's last value, in the kind's unit")
    target: float = Field(description="the SLO's target share of good events or timeslices")
    budget_remaining: float | None = Field(default=None, description="share of the error budget left, <= 1")
    burn_rates: dict[str, float] = Field(default_factory=dict, description="burn rate per window, e.g. {'5m': 2.1}")
    predicted_breach_at: datetime | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    message: str = ""
    evaluated_at: datetime | None = Field(default=None, description="None: never evaluated (state NoData)")


class Violation(Model):
    """A stretch of time an SLO spent outside its objective; ``ended_at`` None while it lasts."""

    id: int
    namespace: str
    sla: str
    slo: str
    started_at: datetime
    ended_at: datetime | None = None
    worst_value: float | None = None
    breach_level: str = Field(description="how bad: e.g. 'page' or 'ticket' (burn rate), or 'violated'")


class SlaAction(Model):
    """One act of the closed loop on an SLA, with what triggered it and what happened after (audit)."""

    id: int
    namespace: str
    sla: str
    slo: str | None = None
    trigger: str = Field(description="'predicted' or 'violated' (PolicyTrigger)")
    predicted: dict[str, Any] = Field(default_factory=dict, description="what was predicted or observed")
    action: str = Field(description="the policy action (PolicyAction) taken")
    outcome: str = Field(description="e.g. 'done', 'skipped: cooldown', 'failed: ...'")
    at: datetime
    followup: dict[str, Any] | None = Field(default=None, description="what happened after (e.g. SLO state later)")
    followup_at: datetime | None = None
    pending: bool = Field(default=False, description="decided, not carried out yet (a webhook, a migration)")
