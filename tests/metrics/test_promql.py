"""PromQL text: what each MetricsQuery means, and selector text read and written back."""

from __future__ import annotations

import re

import pytest

from nemo_kernel.metrics.model import Aggregation, Matcher, MatchOp, MetricsQuery, Selector
from nemo_kernel.metrics.promql import MAX_MATCHERS, MAX_SELECTOR_CHARS, format_selector, parse_selector, to_promql

CPU = Selector("nemo_replica_cpu_seconds_total", (Matcher("workload", MatchOp.EQ, "demo"),))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (MetricsQuery(CPU, 300), 'avg_over_time(nemo_replica_cpu_seconds_total{workload="demo"}[300s])'),
        (
            MetricsQuery(CPU, 300, Aggregation.RATE, by=("replica",)),
            'sum by (replica) (rate(nemo_replica_cpu_seconds_total{workload="demo"}[300s]))',
        ),
        (
            MetricsQuery(CPU, 3600, Aggregation.MAX, step=60, by=()),
            'max by () (max_over_time(nemo_replica_cpu_seconds_total{workload="demo"}[60s]))',
        ),
        (MetricsQuery(Selector("m"), 0.5, Aggregation.LAST, by=("a", "b")), "max by (a, b) (last_over_time(m[500ms]))"),
        (MetricsQuery(Selector("m"), 60, Aggregation.MIN, by=("a",)), "min by (a) (min_over_time(m[60s]))"),
        (MetricsQuery(Selector("m"), 60, Aggregation.SUM), "sum_over_time(m[60s])"),
        (MetricsQuery(Selector("m"), 60, Aggregation.AVG, by=("a",)), "avg by (a) (avg_over_time(m[60s]))"),
        (
            MetricsQuery(Selector("m"), 60, Aggregation.QUANTILE, quantile=0.99, by=()),
            "max by () (quantile_over_time(0.99, m[60s]))",
        ),
        (
            MetricsQuery(
                Selector("lat", (Matcher("w", MatchOp.RE, "a|b"),)), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=0.5
            ),
            'histogram_quantile(0.5, rate(lat_bucket{w=~"a|b"}[60s]))',
        ),
        (
            MetricsQuery(Selector("lat"), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=1, by=("workload",)),
            "histogram_quantile(1.0, sum by (le, workload) (rate(lat_bucket[60s])))",
        ),
        (
            MetricsQuery(Selector("lat"), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=0.9, by=()),
            "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[60s])))",
        ),
    ],
)
def test_each_query_is_the_promql_its_docstring_defines(query: MetricsQuery, expected: str) -> None:
    assert to_promql(query) == expected


def test_a_range_query_ranges_over_its_step_not_its_window() -> None:
    assert to_promql(MetricsQuery(Selector("m"), 3600, Aggregation.RATE, step=15)) == "rate(m[15s])"
    assert to_promql(MetricsQuery(Selector("m"), 3600, Aggregation.RATE, step=1.25)) == "rate(m[1250ms])"


def test_selector_text_reads_every_matcher_and_escape() -> None:
    text = r"""  up { job = "a\"b\\c\n", path=~'/x/.*' ,code!=`5\d\d`, l4!~"\u00e9\x41\101", } """
    assert parse_selector(text) == Selector(
        "up",
        (
            Matcher("job", MatchOp.EQ, 'a"b\\c\n'),
            Matcher("path", MatchOp.RE, "/x/.*"),
            Matcher("code", MatchOp.NE, r"5\d\d"),
            Matcher("l4", MatchOp.NRE, "éAA"),
        ),
    )
    assert parse_selector('{__name__="up",a="1"}') == Selector("up", (Matcher("a", MatchOp.EQ, "1"),))
    assert parse_selector("nemo:ratio") == Selector("nemo:ratio")
    assert parse_selector("m{}") == Selector("m")


@pytest.mark.parametrize(
    "selector",
    [
        Selector("m"),
        Selector("a:b_c", (Matcher("x", MatchOp.EQ, 'q"\\\n\t\r é €'), Matcher("y", MatchOp.NRE, ".*"))),
        Selector("m", (Matcher("x", MatchOp.NE, ""),)),
    ],
)
def test_a_selector_written_back_reads_the_same(selector: Selector) -> None:
    assert parse_selector(format_selector(selector)) == selector


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("rate(m[5m])", "unknown function 'rate'"),
        ('m{a="1"}[5m]', "a range"),
        ('m{a="1"} offset 5m', "unexpected"),
        ("sum by (a) (m)", "unknown function"),
        ('m{a="1"', "missing '}'"),
        ('m{a="1}', "unterminated string"),
        ('m{a~"1"}', "expected one of = != =~ !~ after label 'a'"),
        ('m{a="x\\q"}', "unknown escape \\q"),
        ('m{a="\\ud800"}', "not valid Unicode"),
        ('m{a="x\x00y"}', "control character '\\x00' in a label value"),
        ('m{a="\\x00"}', "control character '\\x00'"),
        ('m{a=~"\\000.*"}', "control character '\\x00'"),
        ("m{a=`\x1b[31m`}", "control character '\\x1b'"),
        ('m{a="\x7f"}', "control character '\\x7f'"),
        ('m{a\x00="x"}', "expected one of = != =~ !~ after label 'a'"),
        ('m\x00{a="x"}', "unexpected"),
        ('m{a=~"("}', "bad regular expression for label 'a'"),
        ('m{__meta="x"}', "'__meta' is not a label name"),
        ('m{a:b="x"}', "'a:b' is not a label name"),
        ("m{a=1}", "expected a quoted label value"),
        ("", "empty selector"),
        ("9m", "expected a metric name"),
        ('{a="1"}', "a metric name is required"),
        ('m{__name__="n"}', "the metric name is given twice"),
        ('{__name__=~"n.*"}', "a metric name is required"),
        ('{__name__="9x"}', "is not a metric name"),
        ("m\n", None),
    ],
)
def test_bad_selector_text_is_refused_naming_the_problem(text: str, names: str | None) -> None:
    if names is None:  # trailing whitespace is fine: only the whole text counts
        assert parse_selector(text) == Selector("m")
        return
    with pytest.raises(ValueError, match="selector: ") as err:
        parse_selector(text)
    assert names in str(err.value)


def test_a_regular_expression_still_matches_control_characters_by_their_escape() -> None:
    # The pattern text is \x00 (RE2's escape), not the character itself; tab, newline and CR are text.
    assert parse_selector(r'm{a=~"x\\x00",b="\t\n\r"}') == Selector(
        "m", (Matcher("a", MatchOp.RE, "x\\x00"), Matcher("b", MatchOp.EQ, "\t\n\r"))
    )


def test_federation_selectors_may_go_without_a_metric_name() -> None:
    assert parse_selector('{__name__=~"nemo_.+"}', require_metric=False) == Selector(
        "", (Matcher("__name__", MatchOp.RE, "nemo_.+"),)
    )
    assert parse_selector('{job="a",x=""}', require_metric=False) == Selector(
        "", (Matcher("job", MatchOp.EQ, "a"), Matcher("x", MatchOp.EQ, ""))
    )
    assert parse_selector('{__name__="up"}', require_metric=False) == Selector("up")
    for empty in ('{job=~".*"}', '{job=""}', '{job!="x"}', "{}", '{a!~"x"}'):
        with pytest.raises(ValueError, match="a matcher that does not match the empty string"):
            parse_selector(empty, require_metric=False)


def test_selectors_are_bounded() -> None:
    with pytest.raises(ValueError, match=f"longer than {MAX_SELECTOR_CHARS}"):
        parse_selector('m{a="' + "x" * MAX_SELECTOR_CHARS + '"}')
    many = ",".join(f'l{i}="v"' for i in range(MAX_MATCHERS + 1))
    with pytest.raises(ValueError, match=f"more than {MAX_MATCHERS} label matchers"):
        parse_selector(f"m{{{many}}}")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        (
            MetricsQuery(Selector("m"), 60, Aggregation.SUM, by=("a) or vector(1",)),
            "by: 'a) or vector(1' is not a label",
        ),
        (MetricsQuery(Selector("m) or vector(1"), 60), "'m) or vector(1' is not a metric name"),
        (MetricsQuery(Selector("m", (Matcher('a=~".*"} or x{b', MatchOp.EQ, "v"),)), 60), "is not a label name"),
    ],
)
def test_names_built_in_code_never_reach_promql_unchecked(query: MetricsQuery, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        to_promql(query)


def test_a_selector_without_a_name_is_written_as_prometheus_writes_it() -> None:
    assert format_selector(Selector("", (Matcher("__name__", MatchOp.RE, "nemo_.+"),))) == '{__name__=~"nemo_.+"}'
