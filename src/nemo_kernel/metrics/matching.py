"""Which series a :class:`~nemo_kernel.metrics.model.Selector` selects, with PromQL's matcher semantics.

A label the series lacks matches as the empty string (``{region=""}`` selects series without ``region``); regular
expressions match the whole value (PromQL anchors them). The metric name is the ``__name__`` label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from nemo_kernel.metrics.model import Matcher, MatchOp, Selector

MAX_REGEX_CHARS = 1024
"""Longest regular expression a matcher may hold."""


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"a regular expression matcher may be at most {MAX_REGEX_CHARS} characters")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def check(selector: Selector) -> None:
    """Raise ValueError naming a matcher whose regular expression does not compile."""
    for m in selector.matchers:
        if m.op in (MatchOp.RE, MatchOp.NRE):
            _compiled(m.value)


def matches(matcher: Matcher, value: str) -> bool:
    """Whether one label's value (``""`` when absent) satisfies ``matcher``."""
    if matcher.op is MatchOp.EQ:
        return value == matcher.value
    if matcher.op is MatchOp.NE:
        return value != matcher.value
    found = _compiled(matcher.value).fullmatch(value) is not None
    return found if matcher.op is MatchOp.RE else not found


def selects(selector: Selector, name: str, labels: Mapping[str, str]) -> bool:
    """Whether the series ``name{labels}`` is selected (its name is checked by the caller's index)."""
    for m in selector.matchers:
        value = name if m.label == "__name__" else labels.get(m.label, "")
        if not matches(m, value):
            return False
    return True
