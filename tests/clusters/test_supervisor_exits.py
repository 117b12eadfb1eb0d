"""A quiet supervisor sleeps until something is due, and a replica's exit still wakes it at once.

In-process: a :class:`ProcessSupervisor` with no sandbox, running ``sleep`` replicas as real processes. Its
samples and probes are an hour apart, so a quiet supervisor would not look at its replicas for an hour: an exit
seen within seconds was seen because the process's exit woke it (a pidfd), for its own child and for a process it
adopted from a previous supervisor alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from local_support import eventually

from nemo_kernel.clusters import ReplicaReport, ReplicaSpec
from nemo_kernel.clusters.local.sandbox import Sandbox, SandboxMode
from nemo_kernel.clusters.local.supervisor import ProcessSupervisor, SupervisorTimings
from nemo_kernel.domain import ReplicaPhase

HOUR = 3600.0
# samples and probes an hour apart, and a crashed replica restarted an hour later: nothing left running after a test
QUIET = SupervisorTimings(sample_interval=HOUR, probe_interval_running=HOUR, backoff_initial=HOUR)


def _spec(replica_id: str) -> ReplicaSpec:
    return ReplicaSpec.model_validate(
        {
            "id": replica_id,
            "workload": "default/quiet",
            "version": 1,
            "index": 0,
            "node": "n1",
            "command": ["sleep", "100000"],
            "ports": [],
        }
    )


def _supervisor(state_dir: Path) -> ProcessSupervisor:
    state_dir.mkdir(exist_ok=True)
    return ProcessSupervisor("quiet", state_dir, Sandbox(SandboxMode.NONE, state_dir), QUIET)


def _reported(
    supervisor: ProcessSupervisor, rid: str, phase: ReplicaPhase
) -> Callable[[], Awaitable[ReplicaReport | None]]:
    async def probe() -> ReplicaReport | None:
        report = supervisor.report(rid)
        return report if report is not None and report.phase is phase else None

    return probe


async def _kill_and_see_it(supervisor: ProcessSupervisor, rid: str) -> ReplicaReport:
    running = await eventually(_reported(supervisor, rid, ReplicaPhase.RUNNING))
    assert running.pid is not None
    try:
        os.kill(running.pid, signal.SIGKILL)
        return await eventually(_reported(supervisor, rid, ReplicaPhase.CRASHED), within=10.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)  # a failed test leaves no replica behind


async def test_an_exit_wakes_a_quiet_supervisor(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path / "state")
    await supervisor.start()
    try:
        supervisor.ensure(_spec("quiet-0"))
        crashed = await _kill_and_see_it(supervisor, "quiet-0")
        assert crashed.exit_code == -signal.SIGKILL
        assert crashed.message.startswith("killed by SIGKILL")
    finally:
        await supervisor.close()


async def test_the_exit_of_an_adopted_process_wakes_a_quiet_supervisor(tmp_path: Path) -> None:
    first = _supervisor(tmp_path / "state")
    await first.start()
    try:
        first.ensure(_spec("quiet-0"))
        await eventually(_reported(first, "quiet-0", ReplicaPhase.RUNNING))
    finally:
        await first.close()  # the replica runs on, for the next supervisor

    second = _supervisor(tmp_path / "state")
    await second.start()
    try:
        crashed = await _kill_and_see_it(second, "quiet-0")
        assert crashed.exit_code is None  # not its child: the code is not its to know
        assert crashed.message.startswith("exited (exit code unknown")
    finally:
        await second.close()
