"""What the embedded store admits: the bounds of a series' name and labels, and why a sample is dropped.

A refused sample is dropped and counted by its :class:`DropReason` (``nemo_samples_dropped_total{reason}``),
never raised, so that one bad sample does not lose its batch.
"""

from __future__ import annotations

import math

from nemo_kernel.metrics.model import LABEL_NAME, METRIC_NAME, Sample

FUTURE_SLACK = 600.0
"""Seconds a sample's timestamp may be ahead of the store's clock (clock skew between hosts)."""
MAX_LABELS = 64
"""Most labels one series may carry."""
MAX_NAME_CHARS = 256
"""Longest metric or label name."""
MAX_VALUE_CHARS = 4096
"""Longest label value."""


class DropReason:
    """Why a sample was refused (the ``reason`` label of ``nemo_samples_dropped_total``)."""

    BAD_NAME = "bad_name"  # metric name not a Prometheus name
    BAD_LABEL = "bad_label"  # label name invalid or reserved, value not a valid bounded string, too many labels
    BAD_TIMESTAMP = "bad_timestamp"  # not a finite number
    BAD_VALUE = "bad_value"  # not a number
    OUT_OF_ORDER = "out_of_order"  # not newer than the series' newest sample
    TOO_OLD = "too_old"  # older than the raw retention allows
    TOO_NEW = "too_new"  # more than FUTURE_SLACK ahead of the clock (it would block the series' real samples)
    SERIES_LIMIT = "series_limit"  # a new series beyond max_series


def series_refusal(s: Sample) -> str | None:
    """Why a new series' name or labels are refused (a :class:`DropReason`), if they are."""
    if not isinstance(s.name, str) or len(s.name) > MAX_NAME_CHARS or not METRIC_NAME.fullmatch(s.name):
        return DropReason.BAD_NAME
    if len(s.labels) > MAX_LABELS:
        return DropReason.BAD_LABEL
    for name, value in s.labels.items():
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not LABEL_NAME.fullmatch(name):
            return DropReason.BAD_LABEL
        if name.startswith("__") or not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
            return DropReason.BAD_LABEL
        if not _valid_unicode(value):
            return DropReason.BAD_LABEL
    return None


def time_refusal(t: float, oldest: float) -> str:
    """Why a timestamp outside ``[oldest, newest]`` is refused: not finite, too old or too new."""
    if not math.isfinite(t):
        return DropReason.BAD_TIMESTAMP
    return DropReason.TOO_OLD if t < oldest else DropReason.TOO_NEW


def _valid_unicode(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # lone surrogates cannot be exposed or stored
    except UnicodeEncodeError:
        return False
    return True
