"""Helpers for the local driver tests: a harness over a launcher, polling with a deadline, thorough cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

from nemo_kernel.clusters import ReplicaSpec
from nemo_kernel.clusters.local import LocalAgentLauncher, LocalClusterDriver
from nemo_kernel.clusters.local.processes import live_process
from nemo_kernel.clusters.local.sandbox import SAFE_PATH
from nemo_kernel.clusters.local.state import AGENT_FILE, REPLICAS_FILE, load_replica_table, read_agent_endpoint
from nemo_kernel.domain import ClusterSpec, HealthCheck, NodeSpec, PortSpec, Tier

DEMO_SERVICE = Path(__file__).resolve().parents[2] / "examples" / "demo_service.py"
MARKER_ENV = "NEMO_TEST_RUN"
# Replicas of a root agent run as `nobody`, which cannot run an interpreter under /root (pyenv, a venv):
# they use the system's python3, as a descriptor that says `python3` gets it from the replicas' PATH.
PYTHON = shutil.which("python3", path=SAFE_PATH) or sys.executable

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 20.0, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within} s; last value {last!r}")


def cluster_spec(name: str = "edge-a") -> ClusterSpec:
    """A local cluster with two virtual nodes."""
    return ClusterSpec(
        name=name,
        tier=Tier.EDGE,
        region="madrid",
        country="ES",
        nodes=[NodeSpec(name="n1", cpu=2, memory_mib=2048), NodeSpec(name="n2", cpu=2, memory_mib=2048)],
    )


@dataclass
class LocalHarness:
    """A launcher under a temporary root, the specs it was given, and a marker for every replica it runs."""

    launcher: LocalAgentLauncher
    run_id: str
    drivers: list[LocalClusterDriver] = field(default_factory=list)

    async def driver(self, spec: ClusterSpec | None = None) -> LocalClusterDriver:
        """Ensure the agent of ``spec`` runs and return a driver for it (closed at teardown)."""
        driver = await self.launcher.ensure(spec or cluster_spec())
        self.drivers.append(driver)
        return driver

    def replica(
        self,
        replica_id: str,
        node: str = "n1",
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        **overrides: object,
    ) -> ReplicaSpec:
        """A replica of the demo service (or of ``command``), tagged so that teardown finds its process."""
        data: dict[str, object] = {
            "id": replica_id,
            "workload": "default/demo",
            "version": 1,
            "index": 0,
            "node": node,
            "command": command or [PYTHON, "-u", str(DEMO_SERVICE)],
            "env": {MARKER_ENV: self.run_id, **(env or {})},
            "ports": [PortSpec(name="http")],
            "health": HealthCheck(http_path="/healthz"),
        }
        data.update(overrides)
        return ReplicaSpec.model_validate(data)


def kill_everything(root: Path, run_id: str) -> None:
    """SIGKILL every agent under ``root`` first (so none starts anything new), then every replica."""
    state_dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    for state_dir in state_dirs:
        endpoint = read_agent_endpoint(state_dir / AGENT_FILE)
        proc = live_process(endpoint.pid, endpoint.create_time) if endpoint is not None else None
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)  # a test may have stopped it
                proc.kill()
                proc.wait(timeout=10)  # reaps it when it is our child
    for state_dir in state_dirs:
        for record in load_replica_table(state_dir / REPLICAS_FILE).replicas:
            if record.pid is not None and live_process(record.pid, record.create_time) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record.pid, signal.SIGKILL)
    # a replica started just before its agent died may be missing from replicas.json: find it by marker
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER_ENV) == run_id:
                proc.kill()
