"""The closed loop (tests/ppef/closed_loop.py) with the SLIs read from a real Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.metrics.prometheus_server import free_port, running_prometheus
from tests.ppef.closed_loop import ENV, closed_loop, ready
from tests.stack import running_stack

pytestmark = pytest.mark.e2e


def test_the_same_with_the_slis_read_from_a_real_prometheus(tmp_path: Path) -> None:
    """The stack reads its series from a Prometheus that scrapes its /federate every second (layout single)."""
    port = free_port()  # the stack must know the URL; Prometheus can be configured only once the stack runs
    env = {**ENV, "NEMO_PROMETHEUS_URL": f"http://127.0.0.1:{port}"}
    with running_stack(tmp_path / "data", env) as stack:
        config = yaml.safe_load(
            stack.cli(
                "monitoring", "prometheus-config", "--interval", "1s", "--secrets-dir", str(tmp_path / "secrets")
            ).stdout
        )
        with running_prometheus(tmp_path / "prometheus", config, port=port):
            closed_loop(ready(stack), tmp_path)
