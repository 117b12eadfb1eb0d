"""Which series a :class:`~nemo_kernel.metrics.model.Selector` selects, with PromQL's matcher semantics.

A label the series lacks matches as the empty string (``{region=""}`` selects series without ``region``); regular
expressions match the whole value (PromQL anchors them). The metric name is the ``__name__`` label.

Regular expressions are RE2's, as in Prometheus: the same syntax (no backreferences or lookarounds), and matching in
time linear in the value, so a caller's nested quantifiers (``((.*)*)*x``) cannot stall the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import re2  # type: ignore[import-untyped]

from nemo_kernel.metrics.model import Matcher, MatchOp, Selector

MAX_REGEX_CHARS = 1024
"""Longest regular expression a matcher may hold."""


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a caller's bad regex is answered as a 422, not written to the server's stderr


@lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """``pattern`` compiled by RE2; ValueError saying why it does not compile."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"a regular expression matcher may be at most {MAX_REGEX_CHARS} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None


def check(selector: Selector) -> None:
    """Raise ValueError naming a matcher whose regular expression does not compile."""
    for m in selector.matchers:
        if m.op in (MatchOp.RE, MatchOp.NRE):
            compiled(m.value)


def matches(matcher: Matcher, value: str) -> bool:
    """Whether one label's value (``""`` when absent) satisfies ``matcher``."""
    if matcher.op is MatchOp.EQ:
        return value == matcher.value
    if matcher.op is MatchOp.NE:
        return value != matcher.value
    found = compiled(matcher.value).fullmatch(value) is not None
    return found if matcher.op is MatchOp.RE else not found


def selects(selector: Selector, name: str, labels: Mapping[str, str]) -> bool:
    """Whether the series ``name{labels}`` is selected (its name is checked by the caller's index)."""
    for m in selector.matchers:
        value = name if m.label == "__name__" else labels.get(m.label, "")
        if not matches(m, value):
            return False
    return True
