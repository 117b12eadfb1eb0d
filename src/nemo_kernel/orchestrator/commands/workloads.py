"""Workload commands: apply a descriptor, delete a workload, carry out a petition (REST or bus)."""

from __future__ import annotations

from typing import Any

from nemo_kernel.bus import Message
from nemo_kernel.domain import WorkloadDescriptor, WorkloadStatus
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.orchestrator.intake import Intake
from nemo_kernel.store import Database, workloads
from nemo_kernel.store.workloads import ApplyResult


class WorkloadCommands:
    """Desired state of workloads; the intake validates and stores, the reconcile loop carries it out."""

    def __init__(self, db: Database, wake: Wake, intake: Intake) -> None:
        self._db = db
        self._wake = wake
        self._intake = intake

    def apply(self, descriptor: WorkloadDescriptor) -> tuple[ApplyResult, WorkloadStatus]:
        """Store a workload or its next version in one transaction; an unchanged descriptor changes nothing.

        Returns what the apply did and the workload as this apply left it (its own version, not a later one)."""
        result, status = self._intake.apply(descriptor)
        if result.outcome != "unchanged":
            self._wake()
        return result, status

    def delete(self, namespace: str, name: str) -> None:
        """Release every replica of the workload; the reconcile loop stops them, then forgets the workload (its
        history stays). ``NotFound`` if unknown; deleting twice records nothing more."""
        with self._db.transaction() as s:
            workloads.mark_deleting(s, workloads.get_workload(s, namespace, name))
        self._wake()

    def petition(self, document: Any) -> dict[str, Any]:
        """Carry out a petition of either kind (validated whole first); returns a JSON-able summary."""
        result = self._intake.handle(document)
        self._wake()
        return result

    async def on_bus_petition(self, sender: str, message: Message) -> None:
        """The bus door (``intent.#``, ``sender`` verified): the same petitions, exactly once per message id."""
        await self._intake.on_bus_petition(sender, message)
        self._wake()
