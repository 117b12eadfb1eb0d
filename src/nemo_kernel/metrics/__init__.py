"""Analytics engine (seed: meta-Orchestrator Analytics Engine): time series in, queries and aggregates out.

In: samples of what the clusters, the gateway and the link probes report (:class:`MetricSink`), kept in the
embedded store on the default install or read from Prometheus in production. Out: :class:`MetricsQuery` answers
(rates, quantiles, aggregates over a window) for the API, the CLI, PPEF's SLOs and the decision engine's criteria,
through one :class:`MetricsReader` interface whichever backend answers. Series names are in ``metrics.names``.

Layer: with ``store`` and ``bus`` at the bottom (DESIGN.md), so it imports only ``domain`` and ``config``; its
callers (``clusters``, ``ppef``, ``orchestrator``) import it, never the other way round.
"""

from typing import TYPE_CHECKING, Any

from nemo_kernel.metrics.model import (
    LABEL_NAME,
    MAX_POINTS,
    MAX_WINDOW_SECONDS,
    METRIC_NAME,
    TARGET_LABELS,
    Aggregation,
    Matcher,
    MatchOp,
    MetricSink,
    MetricsQuery,
    MetricsReader,
    MetricsUnavailable,
    QueryResult,
    Sample,
    Selector,
    Series,
)

if TYPE_CHECKING:
    from nemo_kernel.metrics.embedded import EmbeddedMetrics
    from nemo_kernel.metrics.rollups import HOUR, MINUTE, RollupRow, RollupStore

# The store and its rollups need numpy, which takes a second to import on a busy machine. Every cluster agent imports
# this package for ``Sample``; it must not pay for a store it never runs, so these load on first use (PEP 562).
_LAZY = {
    "EmbeddedMetrics": "nemo_kernel.metrics.embedded",
    "HOUR": "nemo_kernel.metrics.rollups",
    "MINUTE": "nemo_kernel.metrics.rollups",
    "RollupRow": "nemo_kernel.metrics.rollups",
    "RollupStore": "nemo_kernel.metrics.rollups",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "HOUR",
    "LABEL_NAME",
    "MAX_POINTS",
    "MAX_WINDOW_SECONDS",
    "METRIC_NAME",
    "MINUTE",
    "TARGET_LABELS",
    "Aggregation",
    "EmbeddedMetrics",
    "MatchOp",
    "Matcher",
    "MetricSink",
    "MetricsQuery",
    "MetricsReader",
    "MetricsUnavailable",
    "QueryResult",
    "RollupRow",
    "RollupStore",
    "Sample",
    "Selector",
    "Series",
]
