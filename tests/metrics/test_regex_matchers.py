"""Regular-expression matchers from a caller run in linear time, with Prometheus' (RE2) syntax.

A selector's regex comes from any viewer (``/metrics/query``, ``/federate``'s ``match[]``) and is matched against
every candidate series on the control plane's event loop: a backtracking engine lets one request with nested
quantifiers stall the whole API for ever.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_kernel.metrics.matching import matches
from nemo_kernel.metrics.model import Matcher, MatchOp
from nemo_kernel.metrics.promql import parse_selector

BOMB = "((((((((((.*)*)*)*)*)*)*)*)*)*)*x"
"""Nested stars: a backtracking engine tries exponentially many splits of a value that does not end in x."""


def test_a_nested_quantifier_bomb_does_not_stall_matching() -> None:
    # In a child process: a backtracking match holds the GIL and cannot be interrupted, so a deadline on it in
    # this process would hang the test run rather than fail it.
    code = (
        "from nemo_kernel.metrics.matching import matches\n"
        "from nemo_kernel.metrics.model import Matcher, MatchOp\n"
        f"print(matches(Matcher('replica', MatchOp.RE, {BOMB!r}), 'demo-v1-1-742037' * 4))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"matching {BOMB!r} against a 64-character value did not finish in 20 s")
    assert done.stdout.strip() == "False"


def test_prometheus_syntax_matches_in_full() -> None:
    assert matches(Matcher("workload", MatchOp.RE, "de.o|web"), "demo")
    assert not matches(Matcher("workload", MatchOp.RE, "de"), "demo")  # anchored, as in PromQL
    assert matches(Matcher("workload", MatchOp.NRE, "(?i)DEMO"), "web")


@pytest.mark.parametrize("regex", [r"(a)\\1", "(?=a)b", "a{1000000}"])
def test_what_prometheus_refuses_is_refused_naming_the_label(regex: str) -> None:
    with pytest.raises(ValueError, match="workload"):
        parse_selector(f'nemo_replica_up{{workload=~"{regex}"}}')
