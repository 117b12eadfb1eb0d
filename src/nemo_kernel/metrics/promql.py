"""PromQL text for the analytics engine: a :class:`MetricsQuery` as PromQL, and series selectors as text.

:func:`to_promql` is the definition of what a query means (``model.MetricsQuery``): the Prometheus reader sends its
result to Prometheus, and the embedded store computes the same thing. :func:`parse_selector` reads the selector
text users type (``name{label="v",l2=~"re",l3!="x"}``, as in PromQL, including its string escapes) and
:func:`format_selector` writes a :class:`Selector` back, so ``parse_selector(format_selector(s)) == s``.
A selector is only a metric name and label matchers: functions, ranges, offsets and operators are refused with a
:class:`ValueError` that names what is wrong and where.
"""

from __future__ import annotations

import re

from nemo_kernel.metrics import matching
from nemo_kernel.metrics.model import (
    LABEL_NAME,
    METRIC_NAME,
    Aggregation,
    Matcher,
    MatchOp,
    MetricsQuery,
    Selector,
)

__all__ = [
    "MAX_MATCHERS",
    "MAX_SELECTOR_CHARS",
    "across",
    "format_selector",
    "grouping",
    "over_window",
    "parse_selector",
    "quote",
    "range_duration",
    "to_promql",
]

MAX_SELECTOR_CHARS = 4096
"""Longest selector text accepted (Prometheus' own URLs and NEMO's query strings stay far below it)."""

MAX_MATCHERS = 32
"""Most label matchers in one selector."""

# Functions over each window, per aggregation (rate and the histogram quantile are written out below).
_OVER_TIME = {
    Aggregation.AVG: "avg_over_time",
    Aggregation.MAX: "max_over_time",
    Aggregation.MIN: "min_over_time",
    Aggregation.SUM: "sum_over_time",
    Aggregation.LAST: "last_over_time",
    Aggregation.QUANTILE: "quantile_over_time",
}

# How series are combined across when ``by`` is set (MetricsQuery's docstring).
_ACROSS = {
    Aggregation.AVG: "avg",
    Aggregation.MAX: "max",
    Aggregation.MIN: "min",
    Aggregation.SUM: "sum",
    Aggregation.RATE: "sum",
    Aggregation.LAST: "max",
    Aggregation.QUANTILE: "max",
}


def to_promql(query: MetricsQuery) -> str:
    """The PromQL expression of ``query``: evaluated at ``at`` (instant) or every ``step`` (range).

    An instant query ranges over ``window``, a range query over ``step`` at each point. For
    ``histogram_quantile`` the selector names the histogram (``<m>``) and its ``<m>_bucket`` series are read.
    """
    sel = query.selector
    rng = range_duration(query.window if query.step is None else query.step)
    agg = query.aggregation
    if agg is Aggregation.HISTOGRAM_QUANTILE:
        buckets = format_selector(Selector(sel.metric + "_bucket", sel.matchers))
        inner = f"rate({buckets}[{rng}])"
        if query.by is not None:
            inner = f"sum by ({grouping(('le', *query.by))}) ({inner})"
        return f"histogram_quantile({_number(query.quantile)}, {inner})"
    expr = over_window(agg, format_selector(sel), rng, query.quantile)
    if query.by is None:
        return expr
    return f"{across(agg)} by ({grouping(query.by)}) ({expr})"


def over_window(agg: Aggregation, selector: str, rng: str, quantile: float | None = None) -> str:
    """The per-series PromQL function of ``agg`` over ``selector[rng]`` (not for the histogram quantile)."""
    if agg is Aggregation.RATE:
        return f"rate({selector}[{rng}])"
    if agg is Aggregation.QUANTILE:
        return f"quantile_over_time({_number(quantile)}, {selector}[{rng}])"
    return f"{_OVER_TIME[agg]}({selector}[{rng}])"


def grouping(labels: tuple[str, ...]) -> str:
    """The labels of a ``by (...)`` clause, checked to be label names (a ``ValueError`` names one that is not)."""
    for label in labels:
        _check_label(label, "by")
    return ", ".join(labels)


def across(agg: Aggregation) -> str:
    """The PromQL aggregation combining series of ``agg`` across a ``by`` grouping."""
    return _ACROSS[agg]


def format_selector(selector: Selector) -> str:
    """``selector`` as PromQL text: ``metric`` or ``metric{label="value",...}`` with values escaped.

    Names are checked (a ``ValueError`` otherwise), so that a selector built in code can never write PromQL
    that says more than a selector. A selector without a metric name (``/federate``'s) is written ``{...}``.
    """
    if selector.metric and METRIC_NAME.fullmatch(selector.metric) is None:
        raise ValueError(f"selector: {selector.metric!r} is not a metric name")
    for m in selector.matchers:
        _check_label(m.label, "selector")
    if not selector.matchers:
        if not selector.metric:
            raise ValueError("selector: a metric name or a matcher is required")
        return selector.metric
    inner = ",".join(f"{m.label}{m.op.value}{quote(m.value)}" for m in selector.matchers)
    return f"{selector.metric}{{{inner}}}"


def _check_label(label: str, where: str) -> None:
    if LABEL_NAME.fullmatch(label) is None:
        raise ValueError(f"{where}: {label!r} is not a label name")


def quote(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in value) + '"'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def range_duration(seconds: float) -> str:
    """``seconds`` as a PromQL range duration (whole seconds, or milliseconds)."""
    # PromQL durations are integers with a unit (no "1.5s" in 2.x): milliseconds when not whole seconds.
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError("a PromQL range must be at least 1 ms")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _number(value: float | None) -> str:
    if value is None:
        raise ValueError("quantile must be set for a quantile aggregation")
    return repr(float(value))


# --- parsing ---------------------------------------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\r\n]*")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_OPERATOR = re.compile(r"=~|!~|!=|=")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
# Control characters (Unicode Cc) but the three whitespace ones text carries and PromQL names (\t \n \r).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# PromQL's aggregation operators may put their grouping first (``sum by (a) (m)``): still a function to refuse.
_AGGREGATIONS = frozenset(
    [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    ]
)
_GROUPING = re.compile(r"(by|without)[ \t\r\n]*\(")


class _Reader:
    """A cursor over the selector text; errors say what was expected and at which character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str, at: int | None = None) -> ValueError:
        return ValueError(f"selector: {what} at character {self.pos if at is None else at}")

    def skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.pos)
        if match is None or not match.group():
            return None
        self.pos = match.end()
        return match.group()

    def string(self) -> str:
        start = self.pos
        quote_char = self.peek()
        if quote_char not in ('"', "'", "`"):
            raise self.fail("expected a quoted label value")
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string", start)
            c = self.text[self.pos]
            self.pos += 1
            if c == quote_char:
                break
            if quote_char == "`":
                out.append(c)
            elif c == "\n":
                raise self.fail("newline in a quoted string", self.pos - 1)
            elif c == "\\":
                out.append(self.escape())
            else:
                out.append(c)
        value = "".join(out)
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise self.fail("label value is not valid Unicode", start)
        control = _CONTROL.search(value)
        if control is not None:
            # A NUL cuts the value short in C-string consumers (PostgreSQL refuses it), and no text a label holds
            # needs one; a regular expression may still match one by RE2's escape (\\x00).
            raise self.fail(f"control character {control.group()!r} in a label value", start)
        return value

    def escape(self) -> str:
        at = self.pos - 1
        c = self.peek()
        self.pos += 1
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c]
        if c in _HEX_ESCAPES:
            digits = self.text[self.pos : self.pos + _HEX_ESCAPES[c]]
            if len(digits) != _HEX_ESCAPES[c] or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"bad \\{c} escape", at)
            self.pos += len(digits)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self.fail(f"bad \\{c} escape", at)
            return chr(code)
        if c in "01234567":
            digits = self.text[self.pos - 1 : self.pos + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise self.fail("bad octal escape", at)
            self.pos += 2
            return chr(int(digits, 8))
        raise self.fail(f"unknown escape \\{c}" if c else "unterminated escape", at)


def parse_selector(text: str, *, require_metric: bool = True) -> Selector:
    """The :class:`Selector` written as ``text`` (``name``, ``name{l="v",l2=~"re",l3!="x",l4!~"re"}``, or
    ``{__name__="name",...}``); :class:`ValueError` naming the problem (unknown function, bad label, bad regular
    expression, unterminated string, too long, ...) otherwise. The whole text must be the selector.

    With ``require_metric=False`` (``/federate``'s ``match[]``), a selector may go without a metric name, as in
    PromQL: ``{job="x"}`` or ``{__name__=~"nemo_.*"}`` (``metric`` is then ``""`` and a ``__name__`` matcher stays
    among the matchers), provided one matcher does not match the empty string.
    """
    if len(text) > MAX_SELECTOR_CHARS:
        raise ValueError(f"selector: longer than {MAX_SELECTOR_CHARS} characters")
    r = _Reader(text)
    r.skip_space()
    metric: str | None = None
    name_at = r.pos
    if r.peek() != "{":
        metric = r.take(_IDENT)
        if metric is None:
            raise r.fail("expected a metric name or '{'" if r.peek() else "empty selector")
        r.skip_space()
        if r.peek() == "(" or (metric in _AGGREGATIONS and _GROUPING.match(text, r.pos)):
            raise r.fail(f"unknown function {metric!r}: functions are not part of a selector", name_at)
    matchers: list[Matcher] = []
    if r.peek() == "{":
        r.pos += 1
        matchers = _matchers(r)
    r.skip_space()
    if r.pos < len(text):
        rest = {"[": "a range ([...])", "(": "a function call"}.get(r.peek(), repr(text[r.pos : r.pos + 20]))
        raise r.fail(f"unexpected {rest} after the selector (only name{{matchers}} is accepted)")
    names = [m for m in matchers if m.label == "__name__"]
    if metric is not None and names:
        raise ValueError("selector: the metric name is given twice (before '{' and as __name__)")
    if len(names) == 1 and names[0].op is MatchOp.EQ:
        metric = names[0].value
        matchers = [m for m in matchers if m.label != "__name__"]
    if metric is not None:
        if METRIC_NAME.fullmatch(metric) is None:
            raise ValueError(f"selector: {metric!r} is not a metric name")
        return Selector(metric, tuple(matchers))
    if require_metric:
        raise ValueError('selector: a metric name is required (name{...} or {__name__="name"})')
    if all(_matches_empty(m) for m in matchers):
        raise ValueError("selector: needs a metric name or a matcher that does not match the empty string")
    return Selector("", tuple(matchers))


def _matches_empty(m: Matcher) -> bool:
    if m.op is MatchOp.EQ:
        return m.value == ""
    if m.op is MatchOp.NE:
        return m.value != ""
    return matching.matches(m, "")


def _matchers(r: _Reader) -> list[Matcher]:
    matchers: list[Matcher] = []
    while True:
        r.skip_space()
        if r.peek() == "}":
            r.pos += 1
            return matchers
        at = r.pos
        label = r.take(_IDENT)
        if label is None:
            raise r.fail("expected a label name or '}'" if r.peek() else "missing '}'")
        if LABEL_NAME.fullmatch(label) is None or (label.startswith("__") and label != "__name__"):
            raise r.fail(f"{label!r} is not a label name a selector may use", at)
        r.skip_space()
        if r.peek() == "(":
            raise r.fail(f"unknown function {label!r}: functions are not part of a selector", at)
        op_text = r.take(_OPERATOR)
        if op_text is None:
            raise r.fail(f"expected one of = != =~ !~ after label {label!r}")
        r.skip_space()
        value = r.string()
        op = MatchOp(op_text)
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                matching.compiled(value)
            except ValueError as exc:
                raise r.fail(f"bad regular expression for label {label!r}: {exc}", at) from None
        matchers.append(Matcher(label, op, value))
        if len(matchers) > MAX_MATCHERS:
            raise r.fail(f"more than {MAX_MATCHERS} label matchers", at)
        r.skip_space()
        if r.peek() == ",":
            r.pos += 1
        elif r.peek() != "}":
            raise r.fail("expected ',' or '}'" if r.peek() else "missing '}'")
