"""Concurrent applies of one workload, on SQLite and PostgreSQL: every answered version is real and unique."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from nemo_kernel.domain import WorkloadDescriptor
from nemo_kernel.store import Database, events, workloads

_CALLERS = 40


def _descriptor(n: int) -> WorkloadDescriptor:
    # Each caller applies a different descriptor, so each apply is a change.
    return WorkloadDescriptor.model_validate(
        {"name": "raced", "deployment": {"command": ["true"], "env": {"CALLER": str(n)}}}
    )


def test_concurrent_applies_each_get_their_own_version(database: Database) -> None:
    start = threading.Barrier(_CALLERS)

    def apply(n: int) -> tuple[str, int]:
        start.wait()  # every caller races, from the create of the name on
        with database.transaction() as s:
            result = workloads.apply_workload(s, _descriptor(n))
            return result.outcome, result.row.version

    with ThreadPoolExecutor(_CALLERS) as pool:
        answers = list(pool.map(apply, range(_CALLERS)))

    outcomes = [outcome for outcome, _ in answers]
    assert outcomes.count("created") == 1
    assert outcomes.count("updated") == _CALLERS - 1
    assert sorted(version for _, version in answers) == list(range(1, _CALLERS + 1))
    with database.transaction() as s:
        row = workloads.get_workload(s, "default", "raced")
        assert row.version == outcomes.count("updated") + 1
        history = [e for e in events.history(s, "workload/default/raced", limit=1000)]
        versions = [e.data["version"] for e in history]
        assert sorted(versions) == list(range(1, _CALLERS + 1))  # unique: each version recorded once
        # The stored descriptor is the one of the version the row names.
        last = max(answers, key=lambda a: a[1])
        assert row.descriptor == _descriptor(answers.index(last)).model_dump(mode="json")
