"""Samples as the Prometheus text exposition format 0.0.4, as ``/federate`` serves them (timestamps in ms).

Series of a family NEMO names (``metrics.names``) get its ``# HELP`` and ``# TYPE`` lines (a histogram's
``_bucket``, ``_sum`` and ``_count`` series are grouped under its name); other series are ``untyped``, as
Prometheus' own ``/federate`` writes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from nemo_kernel.metrics.embedded import EmbeddedMetrics
from nemo_kernel.metrics.model import Sample, Selector
from nemo_kernel.metrics.names import ALL, SeriesName

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The HTTP content type of :func:`render`'s text."""

_KNOWN: dict[str, SeriesName] = {s.name: s for s in ALL}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


NEMO_SERIES: tuple[Selector, ...] = tuple(
    Selector(s.name + suffix) for s in ALL for suffix in (_HISTOGRAM_SUFFIXES if s.type == "histogram" else ("",))
)
"""Every series NEMO produces itself (``metrics.names``): as many as the inventory has replicas, nodes, clusters,
links and workloads' routes, whatever the workloads' own series number."""


def federate(store: EmbeddedMetrics, selectors: Sequence[Selector], limit: int, at: float | None = None) -> str:
    """The newest sample (within the 5-minute lookback) of every series ``selectors`` select, as exposition text.

    Raises ValueError for a selector whose regular expression does not compile, and
    :class:`~nemo_kernel.metrics.embedded.TooManySeries` when more than ``limit`` series are selected.
    """
    return render(store.latest(selectors, at, limit=limit))


def render(samples: Iterable[Sample]) -> str:
    """``samples`` (one per series) as exposition text, grouped by family, families in name order."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(_family(sample.name), []).append(sample)
    lines: list[str] = []
    for family in sorted(families):
        known = _KNOWN.get(family)
        if known is not None:
            lines.append(f"# HELP {family} {_escape_help(known.help)}")
            lines.append(f"# TYPE {family} {known.type}")
        else:
            lines.append(f"# TYPE {family} untyped")
        for s in sorted(families[family], key=_order):
            lines.append(f"{s.name}{_labels(s.labels)} {_value(s.value)} {round(s.timestamp * 1000)}")
    return "\n".join(lines) + "\n" if lines else ""


def _order(s: Sample) -> tuple[str, list[tuple[str, str]], float]:
    # A histogram's buckets in increasing ``le``, as a client library writes them.
    le = s.labels.get("le")
    try:
        bound = float(le) if le is not None else 0.0
    except ValueError:
        bound = 0.0
    return s.name, sorted((k, v) for k, v in s.labels.items() if k != "le"), bound


def _family(name: str) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in _KNOWN and _KNOWN[base].type == "histogram":
            return base
    return name


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
