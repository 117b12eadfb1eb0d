"""The closed loop (tests/ppef/closed_loop.py) on the embedded metrics store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ppef.closed_loop import ENV, closed_loop, ready
from tests.stack import running_stack

pytestmark = pytest.mark.e2e


def test_a_slow_replica_is_predicted_violated_moved_and_met_again(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", ENV) as stack:
        closed_loop(ready(stack), tmp_path)
