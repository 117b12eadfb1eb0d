"""SLA commands: apply an SLA (NEMO's format or OpenSLO v1), terminate one."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from nemo_kernel.domain.addresses import AddressAllowlist
from nemo_kernel.domain.sla import SlaSpec, SlaStatus
from nemo_kernel.ppef import lifecycle
from nemo_kernel.ppef.documents import parse_sla
from nemo_kernel.ppef.policies import WEBHOOK_HOSTS, check_webhooks
from nemo_kernel.store import Database, slas
from nemo_kernel.store.slas import SlaApplyResult


class SlaCommands:
    """Desired state of SLAs; PPEF's evaluation (part B) reads the active ones from the store."""

    def __init__(self, db: Database, webhook_hosts: Collection[str] = ()) -> None:
        """``webhook_hosts``: the hosts a notify policy's webhook may name (``NEMO_WEBHOOK_HOSTS``; none by default)."""
        self._db = db
        self._webhooks = AddressAllowlist.of(WEBHOOK_HOSTS, webhook_hosts)

    def parse(self, document: Any) -> SlaSpec:
        """The SLA a document describes, NEMO's format or OpenSLO v1; 422 naming the field at fault."""
        return parse_sla(document)

    def apply(self, spec: SlaSpec) -> tuple[SlaApplyResult, SlaStatus]:
        """Store an SLA or its next version in one transaction, Active at once if its workload is deployed.

        422 naming ``workload`` when it names a workload its namespace does not have, or ``policies[<i>].webhook``
        when a webhook's host is not allowed (nothing stored)."""
        check_webhooks(spec, self._webhooks)
        with self._db.transaction() as s:
            result = lifecycle.apply(s, spec)
            s.flush()
            return result, slas.to_sla_status(result.row)

    def delete(self, namespace: str, name: str) -> SlaStatus:
        """Terminate an SLA: no longer evaluated, open violations closed; its history stays. ``NotFound``."""
        with self._db.transaction() as s:
            row = lifecycle.terminate(s, namespace, name)
            s.flush()
            return slas.to_sla_status(row)
