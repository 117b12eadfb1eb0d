"""The analytics engine answered by a real Prometheus (``NEMO_PROMETHEUS_URL``), through its HTTP API.

Same questions, same meaning as the embedded store: a :class:`MetricsQuery` is sent as the PromQL
:func:`~nemo_kernel.metrics.promql.to_promql` gives, as an instant query (``/api/v1/query``) or a range query
(``/api/v1/query_range``). Prometheus down, slow or answering garbage is :class:`MetricsUnavailable` with the reason
(the API answers 503); a query Prometheus itself refuses is a ``ValueError`` with Prometheus' message (422).

Replica energy and power come from real meters when Prometheus has them (``metrics.meters``): the query is
rewritten to the Kepler or Scaphandre series and falls back to NEMO's power model where none exist.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

from nemo_kernel.metrics.meters import METERS, metered_promql
from nemo_kernel.metrics.model import MetricsQuery, MetricsUnavailable, QueryResult, Series
from nemo_kernel.metrics.promql import to_promql

__all__ = ["MAX_RESPONSE_BYTES", "PrometheusReader"]

MAX_RESPONSE_BYTES = 64 << 20
"""Largest answer read from Prometheus (a runaway query must not exhaust the control plane's memory)."""

SOURCE = "prometheus"


class PrometheusReader:
    """A :class:`~nemo_kernel.metrics.model.MetricsReader` over Prometheus' HTTP API at ``url``.

    ``timeout`` bounds each request (connect, read, and Prometheus' own evaluation, which is told the same limit).
    Close it with :meth:`aclose`.
    """

    def __init__(self, url: str, timeout: float = 10.0, *, meters: bool = True) -> None:
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._meters = meters
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def query(self, query: MetricsQuery) -> QueryResult:
        """The series answering ``query``, from Prometheus."""
        if self._meters:
            for meter in METERS:
                expr = metered_promql(query, meter)
                if expr is None:
                    continue
                series, warnings = await self._evaluate(expr, query)
                if series:
                    note = f"{query.selector.metric} measured by {meter.exporter} ({meter.metric})"
                    return QueryResult(series, SOURCE, (*warnings, note))
        series, warnings = await self._evaluate(to_promql(query), query)
        return QueryResult(series, SOURCE, warnings)

    async def _evaluate(self, expr: str, query: MetricsQuery) -> tuple[list[Series], tuple[str, ...]]:
        at = time.time() if query.at is None else query.at
        params: dict[str, str] = {"query": expr, "timeout": f"{self.timeout:g}s"}
        if query.step is None:
            path = "/api/v1/query"
            params["time"] = f"{at:.3f}"
        else:
            path = "/api/v1/query_range"
            params.update(start=f"{at - query.window:.3f}", end=f"{at:.3f}", step=repr(float(query.step)))
        body = await self._get(path, params)
        data = body.get("data")
        if not isinstance(data, dict):
            raise MetricsUnavailable(f"Prometheus at {self.url} answered without data")
        warnings = tuple(str(w) for w in body.get("warnings") or ())
        return _series(data, self.url), warnings

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            async with self._client.stream("GET", path, params=params) as response:
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise MetricsUnavailable(
                            f"Prometheus at {self.url} answered more than {MAX_RESPONSE_BYTES >> 20} MiB"
                        )
                status = response.status_code
        except httpx.TimeoutException:
            raise MetricsUnavailable(f"Prometheus at {self.url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"Prometheus at {self.url} is unreachable: {_reason(exc)}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MetricsUnavailable(f"Prometheus at {self.url} answered HTTP {status} that is not its API's JSON")
        if body.get("status") == "success" and status == 200:
            return body
        kind, error = str(body.get("errorType", "")), str(body.get("error", "unknown error"))
        # bad_data is the query's fault (a parse error, too many points); the rest is Prometheus' trouble.
        if kind == "bad_data" or (status in (400, 422) and kind not in ("timeout", "canceled", "execution")):
            raise ValueError(f"Prometheus refused the query: {error}")
        raise MetricsUnavailable(f"Prometheus at {self.url} failed the query ({kind or status}): {error}")


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _series(data: Mapping[str, Any], url: str) -> list[Series]:
    kind, result = data.get("resultType"), data.get("result")
    if not isinstance(result, list):
        raise MetricsUnavailable(f"Prometheus at {url} answered a result that is not a list")
    try:
        if kind == "vector":
            return [Series(_labels(item["metric"]), [_point(item["value"])]) for item in result]
        if kind == "matrix":
            return [Series(_labels(item["metric"]), [_point(p) for p in item["values"]]) for item in result]
        if kind == "scalar":
            return [Series({}, [_point(result)])]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MetricsUnavailable(f"Prometheus at {url} answered a malformed {kind}: {exc!r}") from None
    raise MetricsUnavailable(f"Prometheus at {url} answered an unexpected result type {kind!r}")


def _labels(metric: Any) -> dict[str, str]:
    if not isinstance(metric, dict):
        raise TypeError("metric is not an object")
    return {str(k): str(v) for k, v in metric.items() if k != "__name__"}


def _point(pair: Any) -> tuple[float, float]:
    ts, value = pair
    return float(ts), float(value)  # Prometheus sends values as strings, "NaN" and "+Inf" included
