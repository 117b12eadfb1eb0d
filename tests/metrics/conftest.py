"""Fixtures of the analytics engine's tests that are expensive: started once per module that uses them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.metrics.monitored_stack import MonitoredStack, monitored_stack


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredStack]:
    """`nemo up` with the demo workload, a Prometheus per cluster and a federating one (see monitored_stack).

    Module scope, not session: one module uses it, and its four Prometheus servers scrape every second; held to the
    end of a test process, they took CPU from every module that ran after it there."""
    with monitored_stack(tmp_path_factory.mktemp("monitored")) as m:
        yield m
