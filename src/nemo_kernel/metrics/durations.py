"""Durations as people write them in queries: PromQL's ``5m``, ``1h30m``, ``500ms``, or a plain number of seconds."""

from __future__ import annotations

import math
import re

__all__ = ["MAX_DURATION_CHARS", "format_duration", "parse_duration"]

MAX_DURATION_CHARS = 64
"""Longest duration text accepted (``1y2w3d4h5m6s7ms`` is 16 characters)."""

_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# PromQL's own duration grammar: units from the largest to the smallest, each at most once (full match).
# [0-9], not \d: \d also matches other scripts' digits, which float() and int() accept.
_PROMQL = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a PromQL duration (``90s``, ``5m``, ``1h30m``, ``2d``, ``250ms``) or a plain number of
    seconds (``300``, ``0.5``). :class:`ValueError` saying what is accepted otherwise, and for zero."""
    if len(text) > MAX_DURATION_CHARS:
        raise ValueError(f"a duration is at most {MAX_DURATION_CHARS} characters")
    if _SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        match = _PROMQL.fullmatch(text)
        if match is None or not text:
            raise ValueError(
                f"{text!r} is not a duration: write seconds (300) or PromQL units (90s, 5m, 1h30m, 2d, 250ms)"
            )
        seconds = sum(int(n) * u for n, u in zip(match.groups(), _UNITS.values(), strict=True) if n is not None)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` the way :func:`parse_duration` reads it back, in days and smaller units (``2678400`` is ``31d``,
    ``90`` is ``1m30s``)."""
    millis = round(seconds * 1000)
    parts = []
    for unit, size in _UNITS.items():
        if unit in ("y", "w"):
            continue  # 31d reads better than 4w3d
        count, millis = divmod(millis, round(size * 1000))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
