"""Fixtures of the analytics engine's tests that are expensive: shared at session scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.metrics.monitored_stack import MonitoredStack, monitored_stack


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredStack]:
    """`nemo up` with the demo workload, a Prometheus per cluster and a federating one (see monitored_stack)."""
    with monitored_stack(tmp_path_factory.mktemp("monitored")) as m:
        yield m
