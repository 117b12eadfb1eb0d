"""Prometheus' text exposition format in and out, through ``prometheus_client`` (its parser and its renderer).

Used where NEMO speaks the format to itself or to Prometheus: a local agent renders its cluster's series and the
workloads' own, a driver parses the agent's page back into :class:`Sample` batches. :func:`guard_workload_series`
keeps a replica from forging the series NEMO judges it by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from nemo_kernel.metrics import names
from nemo_kernel.metrics.model import TARGET_LABELS, Sample

_TYPES = {series.name: series for series in names.ALL}
_COUNTER_SUFFIX = "_total"


class TextFormatError(ValueError):
    """A page that is not Prometheus' text format, or exceeds the bounds it is read with."""


def families_of(samples: Iterable[Sample]) -> list[Metric]:
    """NEMO's own samples as metric families, typed and described from :mod:`nemo_kernel.metrics.names`."""
    families: dict[str, Metric] = {}
    for sample in samples:
        known = _TYPES.get(sample.name)
        kind = known.type if known is not None else "unknown"
        family_name = sample.name
        if kind == "counter" and family_name.endswith(_COUNTER_SUFFIX):
            family_name = family_name[: -len(_COUNTER_SUFFIX)]  # prometheus_client adds it back when rendering
        family = families.get(family_name)
        if family is None:
            family = families[family_name] = Metric(family_name, known.help if known else "", kind)
        family.add_sample(sample.name, dict(sample.labels), sample.value)
    return list(families.values())


class _Families:
    """The smallest "registry" ``generate_latest`` accepts: something with ``collect()``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(families: Iterable[Metric]) -> bytes:
    """The families as a text exposition page (format 0.0.4)."""
    return generate_latest(_Families(families))


def parse(text: str, max_samples: int) -> list[Metric]:
    """The metric families of a text exposition page; raises :class:`TextFormatError` when it does not parse or
    holds more than ``max_samples`` samples (the parser is lazy, so a huge page is refused without being kept)."""
    families: list[Metric] = []
    count = 0
    try:
        for family in text_string_to_metric_families(text):
            count += len(family.samples)
            if count > max_samples:
                raise TextFormatError(f"more than {max_samples} samples")
            families.append(family)
    except TextFormatError:
        raise
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on garbage: all mean "not the format"
        raise TextFormatError(f"not Prometheus text format: {type(exc).__name__}: {exc}") from None
    return families


def samples_of(families: Iterable[Metric], timestamp: float) -> list[Sample]:
    """Every sample of ``families`` as a :class:`Sample` at ``timestamp`` (or the time the page gave)."""
    out = []
    for family in families:
        for s in family.samples:
            ts = s.timestamp if isinstance(s.timestamp, int | float) and math.isfinite(s.timestamp) else timestamp
            out.append(Sample(s.name, s.labels, float(s.value), float(ts)))
    return out


def guard_workload_series(families: Sequence[Metric], target: Mapping[str, str]) -> tuple[list[Metric], int]:
    """A workload's own families, made safe to publish next to NEMO's: the families kept, and how many were refused.

    A family whose name (or any sample's name) starts with ``nemo_`` is refused whole: a replica must not write the
    series its SLOs, its energy or its placement are judged on. Every sample's target labels (replica, workload,
    node, cluster, ...) are replaced by ``target``: a replica cannot pass its series off as another's.
    """
    kept: list[Metric] = []
    refused = 0
    seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
    for family in families:
        if family.name.startswith(names.RESERVED_PREFIX) or any(
            s.name.startswith(names.RESERVED_PREFIX) for s in family.samples
        ):
            refused += 1
            continue
        clean = Metric(family.name, family.documentation, family.type, family.unit)
        for s in family.samples:
            labels: dict[str, Any] = {k: v for k, v in s.labels.items() if k not in TARGET_LABELS}
            labels.update(target)
            key = (s.name, tuple(sorted(labels.items())))
            if key in seen:
                continue  # two series that differed only in a target label are one now: the first stands
            seen.add(key)
            clean.add_sample(s.name, labels, s.value, s.timestamp)
        kept.append(clean)
    return kept, refused


def merge(families: Iterable[Metric]) -> list[Metric]:
    """Families of the same name (the same series from several replicas) merged into one, as the format requires.

    A family whose type differs from the first of its name is left out (Prometheus would refuse the whole page).
    """
    merged: dict[str, Metric] = {}
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            merged[family.name].samples.extend(family.samples)
        elif first.type == family.type:
            first.samples.extend(family.samples)
    return list(merged.values())
