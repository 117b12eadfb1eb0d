"""Fixtures for the local driver: real agents and replica processes, always cleaned up, even on failure."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from local_support import LocalHarness, kill_everything

from nemo_kernel.clusters.local import LocalAgentLauncher


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalHarness]:
    """A :class:`LocalHarness`; every agent and replica it started is killed at teardown."""
    harness = LocalHarness(
        launcher=LocalAgentLauncher(tmp_path / "clusters", request_timeout=2.0), run_id=uuid.uuid4().hex
    )
    try:
        yield harness
    finally:
        for driver in harness.drivers:
            await driver.close()
        kill_everything(harness.launcher.state_root, harness.run_id)


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test stops or continues by hand; each gets SIGCONT at teardown so cleanup can kill it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
