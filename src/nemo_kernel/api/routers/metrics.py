"""``/api/v1/metrics``: the analytics engine's query interface, ``nemo top``'s tables, and a workload's summary.

Parse -> metrics view -> response. The query text is checked here, whole, before the backend is asked, so every
refusal is a 422 naming its parameter: a selector that is not ``name{label op "value", ...}`` (functions, ranges
and operators are not part of a selector), a label name outside Prometheus' rules (``[a-zA-Z_][a-zA-Z0-9_]*``,
``__`` reserved) in ``by``, an aggregation that is not one of :class:`~nemo_kernel.metrics.Aggregation`, a window
longer than ``MAX_WINDOW_SECONDS``, more than ``MAX_POINTS`` points per series.

A label no series has is not refused: it matches nothing, as in PromQL. The same query must mean the same on the
embedded store and on Prometheus, and Prometheus cannot tell a label nobody has yet from a misspelt one (a
workload's own series may carry any label). The answer's ``warnings`` say when the selector matched no series.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import ErrorBody
from nemo_kernel.domain import Model
from nemo_kernel.domain.sla import seconds_or_duration
from nemo_kernel.metrics import LABEL_NAME, MAX_POINTS, MAX_WINDOW_SECONDS, Aggregation, MetricsQuery, QueryResult
from nemo_kernel.metrics.promql import MAX_SELECTOR_CHARS, parse_selector
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.views import ClusterTop, NodeTop, WorkloadMetrics, WorkloadTop

router = APIRouter(
    tags=["metrics"],
    responses={503: {"model": ErrorBody, "description": "The metrics backend (Prometheus) cannot answer now"}},
)
Plane = Annotated[ControlPlane, Depends(control_plane)]
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Namespace = Annotated[str, Query(pattern=_NAME)]
Window = Annotated[str, Query(max_length=64, description="a duration: seconds (300) or one unit (30s, 5m, 1h, 2d)")]

MAX_BY_LABELS = 16
"""Most labels a query may group by (NEMO's own series have seven target labels)."""

MAX_ANSWER_SERIES = 10_000
"""Most series one answer may hold; a query matching more is refused (aggregate it with ``by``)."""

MAX_ANSWER_POINTS = 2_000_000
"""Most points one answer may hold in all series together (about 40 MB of JSON)."""

_LATEST_AT = 4_102_444_800.0  # 2100-01-01: an `at` beyond is a mistake, not a question about the future


class SeriesAnswer(Model):
    """One series: its labels and its points ``[[unix seconds, value], ...]``, oldest first. A value that is not a
    finite number is the string Prometheus' API writes for it (``"NaN"``, ``"+Inf"``, ``"-Inf"``)."""

    labels: dict[str, str]
    points: list[tuple[float, float | str]]


class QueryAnswer(Model):
    """The answer to ``GET /metrics/query``."""

    source: str
    series: list[SeriesAnswer]
    warnings: list[str] = []


def invalid(parameter: str, message: str, **details: Any) -> ApiError:
    """A 422 naming the query parameter at fault, as FastAPI names it (``query.window``), in the API's shape."""
    field = f"query.{parameter}"
    return ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message, **details}])


def window_seconds(text: str, field: str = "window") -> float:
    """A duration parameter in seconds: a number of seconds (``300``) or a duration as Prometheus writes it (``5m``,
    ``1h``, ``250ms``: the rule of SLA durations); refused with its limit when longer than ``MAX_WINDOW_SECONDS``."""
    try:
        seconds = seconds_or_duration(text)
    except ValueError:
        raise invalid(field, f"{text!r} is not a duration: seconds (300) or one unit as in 30s, 5m, 1h, 2d") from None
    if seconds <= 0:
        raise invalid(field, "must be more than zero")
    if seconds > MAX_WINDOW_SECONDS:
        limit = f"{MAX_WINDOW_SECONDS / 86400:g}d"
        raise invalid(field, f"at most {limit} ({MAX_WINDOW_SECONDS:.0f} s)", limit_seconds=MAX_WINDOW_SECONDS)
    return seconds


def _by(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    labels = tuple(label.strip() for label in text.split(",")) if text.strip() else ()
    if len(labels) > MAX_BY_LABELS:
        raise invalid("by", f"at most {MAX_BY_LABELS} labels")
    for label in labels:
        if LABEL_NAME.fullmatch(label) is None or label.startswith("__"):
            raise invalid("by", f"{label!r} is not a label name (letters, digits and '_', not starting with '__')")
    if len(set(labels)) != len(labels):
        raise invalid("by", "a label is named twice")
    return labels


def parse_query(
    selector: str,
    window: str,
    step: str | None,
    aggregation_name: str,
    quantile: float | None,
    by: str | None,
    at: float | None,
) -> MetricsQuery:
    """The :class:`MetricsQuery` the parameters ask; :class:`ApiError` 422 naming the first one at fault."""
    try:
        aggregation = Aggregation(aggregation_name)
    except ValueError:
        known = ", ".join(a.value for a in Aggregation)
        raise invalid("aggregation", f"unknown aggregation {aggregation_name!r}; one of {known}") from None
    try:
        parsed = parse_selector(selector)
    except ValueError as exc:
        raise invalid("selector", str(exc).removeprefix("selector: ")) from None
    seconds = window_seconds(window)
    step_seconds = None if step is None else window_seconds(step, "step")
    if step_seconds is not None and seconds / step_seconds > MAX_POINTS:
        least = math.ceil(seconds / MAX_POINTS * 1000) / 1000
        raise invalid("step", f"window / step is more than {MAX_POINTS} points; at this window, step {least:g} or more")
    needs_quantile = aggregation in (Aggregation.QUANTILE, Aggregation.HISTOGRAM_QUANTILE)
    if needs_quantile and quantile is None:
        raise invalid("quantile", f"required with aggregation={aggregation.value} (a number in [0, 1])")
    if not needs_quantile and quantile is not None:
        raise invalid("quantile", f"only with aggregation=quantile or histogram_quantile, not {aggregation.value}")
    grouping = _by(by)
    if aggregation is Aggregation.HISTOGRAM_QUANTILE and grouping and "le" in grouping:
        raise invalid("by", "histogram_quantile groups by le itself (the buckets' bound); leave it out")
    try:
        return MetricsQuery(parsed, seconds, aggregation, step_seconds, quantile, grouping, at)
    except ValueError as exc:  # every rule is checked above; this keeps a new rule of the model a 422 too
        raise invalid("query", str(exc)) from None


@router.get("/metrics/query", response_model=QueryAnswer)
async def query(
    plane: Plane,
    selector: Annotated[
        str,
        Query(
            max_length=MAX_SELECTOR_CHARS,
            description='series selector, as in PromQL: nemo_replica_cpu_seconds_total{workload="demo"}',
        ),
    ],
    window: Window = "5m",
    step: Annotated[
        str | None, Query(max_length=64, description="a range query: one point per step over the window")
    ] = None,
    aggregation: Annotated[
        str,
        Query(
            max_length=64,
            description="what each point computes over its range: " + ", ".join(a.value for a in Aggregation),
        ),
    ] = Aggregation.AVG.value,
    quantile: Annotated[
        float | None, Query(ge=0, le=1, allow_inf_nan=False, description="for quantile, histogram_quantile")
    ] = None,
    by: Annotated[
        str | None,
        Query(max_length=1024, description="comma-separated labels to group by (empty: everything in one series)"),
    ] = None,
    at: Annotated[
        float | None, Query(ge=0, le=_LATEST_AT, allow_inf_nan=False, description="unix seconds (default: now)")
    ] = None,
) -> JSONResponse:
    """Series matching ``selector``, aggregated over ``window`` (or over each ``step`` of it), from the embedded
    store or Prometheus (``source``). 422 names a bad parameter; 503 when the backend cannot answer."""
    asked = parse_query(selector, window, step, aggregation, quantile, by, at)
    try:
        result = await plane.views.metrics.query(asked)
    except ValueError as exc:  # the backend refused the query (Prometheus' own "bad_data")
        raise invalid("selector", str(exc)) from None
    return JSONResponse(_answer(result))


def _answer(result: QueryResult) -> dict[str, Any]:
    """The JSON body, written directly: an answer may hold millions of points, too many to validate as models."""
    points = sum(len(s.points) for s in result.series)
    if len(result.series) > MAX_ANSWER_SERIES or points > MAX_ANSWER_POINTS:
        raise invalid(
            "selector",
            f"the answer would hold {len(result.series)} series and {points} points, more than the limits of "
            f"{MAX_ANSWER_SERIES} series and {MAX_ANSWER_POINTS} points; narrow the selector, group with `by`, "
            "or use a longer step",
            limit_series=MAX_ANSWER_SERIES,
            limit_points=MAX_ANSWER_POINTS,
        )
    warnings = list(result.warnings)
    if not result.series:
        warnings.append("no series matched the selector in the window")
    series = [
        {"labels": dict(s.labels), "points": [[t, v if math.isfinite(v) else _NON_FINITE[str(v)]] for t, v in s.points]}
        for s in result.series
    ]
    return {"source": result.source, "series": series, "warnings": warnings}


_NON_FINITE = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


@router.get("/metrics/top/workloads", response_model=WorkloadTop)
async def top_workloads(
    plane: Plane, window: Window = "1m", namespace: Annotated[str | None, Query(pattern=_NAME)] = None
) -> WorkloadTop:
    """Per workload: replicas, CPU cores, memory, power, energy and CO2 in the window, requests/s, error ratio,
    p99 latency; busiest CPU first."""
    return await plane.views.metrics.top_workloads(window_seconds(window), namespace)


@router.get("/metrics/top/nodes", response_model=NodeTop)
async def top_nodes(
    plane: Plane, window: Window = "1m", cluster: Annotated[str | None, Query(pattern=_NAME)] = None
) -> NodeTop:
    """Per node: CPU and memory used against capacity, power; busiest CPU first."""
    return await plane.views.metrics.top_nodes(window_seconds(window), cluster)


@router.get("/metrics/top/clusters", response_model=ClusterTop)
async def top_clusters(plane: Plane, window: Window = "1m") -> ClusterTop:
    """Per cluster: its nodes' CPU and memory against capacity, power, heartbeat round trip; busiest CPU first."""
    return await plane.views.metrics.top_clusters(window_seconds(window))


@router.get("/workloads/{name}/metrics", response_model=WorkloadMetrics)
async def workload_metrics(
    name: str, plane: Plane, namespace: Namespace = "default", window: Window = "5m"
) -> WorkloadMetrics:
    """A workload's usage over the window, per replica (CPU cores, memory, power, energy, CO2) and summed, with its
    requests/s, error ratio and p99 latency through the gateway. 404 for an unknown workload."""
    return await plane.views.metrics.workload(namespace, name, window_seconds(window))
