"""The SLA action runner: carries out what the closed loop's reactions decided but may not do themselves.

A reaction (``reactions_sla``) writes in the transaction it is given and never calls the network, so two acts are
stored *pending* there and done here, each in its own steps:

- ``notify`` with a ``webhook``: one POST of JSON (SLA, SLO, status, value, target, predicted time) to the URL, if
  its host is still in ``NEMO_WEBHOOK_HOSTS``; the host is resolved once, every address it resolves to must be
  global or listed by the admin (``AddressAllowlist.refusal``: no loopback, private or metadata address through a
  name that DNS points there), and the POST connects to the address checked, never resolving the name again (the
  name stays in ``Host`` and TLS's SNI and certificate check); a bounded timeout, redirects not followed (a 3xx is
  the outcome), and a webhook that fails is recorded as such: the loop goes on;
- ``move``: the workload's replica is re-placed on the cluster the decision engine prefers for the SLO's kind
  (``ppef.policies.move_preference``: closer for latency, greener for energy, cheaper for cost; any other healthy
  cluster otherwise), through the migration service: ``MigrationCommands.start`` with that cluster as the target,
  the mode from the workload.

Each pending act is claimed (no longer pending, outcome "in progress") in one transaction before it is carried out,
so it is done at most once even with two control planes (PostgreSQL: ``FOR UPDATE SKIP LOCKED``); its outcome is
recorded in another, with an ``sla.action`` event. Nothing is kept in memory between passes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import select

from nemo_kernel.domain import (
    MigrationRequest,
    MigrationTarget,
    ReplicaPhase,
    WorkloadDescriptor,
)
from nemo_kernel.domain.addresses import AddressAllowlist
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import PolicyAction, SlaSpec, SloKind
from nemo_kernel.orchestrator.commands import MigrationCommands
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.placement import Inventory
from nemo_kernel.ppef.policies import WEBHOOK_HOSTS, move_preference, webhook_host, webhook_payload
from nemo_kernel.store import Database, NotFound, workloads
from nemo_kernel.store import slas as store
from nemo_kernel.store.tables import ReplicaRow

log = logging.getLogger(__name__)

MAX_ACTIONS_PER_PASS = 50
"""Pending acts carried out in one pass; the rest wait for the next (bounded work)."""

_IN_PROGRESS = "in progress"
_PORTS = {"http": 80, "https": 443}


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (itself when it is one), in the resolver's order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class _Claimed:
    action_id: int
    namespace: str
    sla: str
    spec: SlaSpec
    action: PolicyAction
    trigger: str
    slo: str | None
    predicted: dict[str, Any]


class SlaActionRunner:
    """Carries out pending SLA acts as soon as this process stores one (its ``sla.action`` event wakes the runner),
    and every ``interval`` seconds for acts other processes stored; :meth:`run_once` is one pass (tests call it)."""

    def __init__(
        self,
        db: Database,
        migrations: MigrationCommands,
        decisions: DecisionEngine,
        *,
        webhook_hosts: Collection[str] = (),
        webhook_timeout: float = 5.0,
        interval: float = 1.0,
    ) -> None:
        """``webhook_hosts`` is ``NEMO_WEBHOOK_HOSTS`` (checked again at send time: an admin may have narrowed it
        since the SLA was applied); ``decisions`` chooses a move's target cluster."""
        self._db = db
        self._migrations = migrations
        self._decisions = decisions
        self._webhooks = AddressAllowlist.of(WEBHOOK_HOSTS, webhook_hosts)
        self._timeout = webhook_timeout
        self._interval = interval
        self._wakeup = db.event_wakeup()  # made here: an act stored before run() first waits still wakes it

    async def run(self) -> None:
        """Carry out pending acts until cancelled; a failed pass is logged and the next one runs."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("carrying out SLA actions failed; retrying")
            await self._wakeup.wait(self._interval)

    async def run_once(self) -> int:
        """Claim and carry out the pending acts; how many were carried out."""
        claimed = await asyncio.to_thread(self._claim)
        for act in claimed:
            try:
                if act.action is PolicyAction.NOTIFY:
                    outcome = await self._notify(act)
                else:
                    outcome = await asyncio.to_thread(self._move, act)
            except Exception as exc:  # one act that fails never stops the others
                log.warning("SLA %s/%s: %s failed: %s", act.namespace, act.sla, act.action.value, exc)
                outcome = f"failed: {exc}"
            await asyncio.to_thread(self._complete, act.action_id, outcome)
        return len(claimed)

    def _claim(self) -> list[_Claimed]:
        # Woken by every event commit: look first without SQLite's write lock, claim only when an act is pending.
        with self._db.snapshot() as s:
            if not store.pending_actions(s, limit=1, lock=False):
                return []
        with self._db.transaction() as s:
            out = []
            for sla, action in store.pending_actions(s, limit=MAX_ACTIONS_PER_PASS):
                action.pending = False
                action.outcome = _IN_PROGRESS
                try:
                    spec = store.sla_spec(sla)
                    kind = PolicyAction(action.action)
                except (ValidationError, ValueError) as exc:
                    action.outcome = f"failed: {exc}"[:4000]
                    continue
                out.append(
                    _Claimed(
                        action.id, sla.namespace, sla.name, spec, kind, action.trigger, action.slo, action.predicted
                    )
                )
            return out

    def _complete(self, action_id: int, outcome: str) -> None:
        with self._db.transaction() as s:
            found = store.action_with_sla(s, action_id)
            if found is not None:
                store.complete_action(s, *found, outcome)

    # --- notify --------------------------------------------------------------------------------------------

    async def _notify(self, act: _Claimed) -> str:
        urls = [
            p.webhook
            for p in act.spec.policies
            if p.action is PolicyAction.NOTIFY and p.webhook is not None and (not p.slos or act.slo in p.slos)
        ]
        if not urls:
            return "notified on the bus (sla.action); webhook not sent: the SLA no longer names one"
        url = httpx.URL(urls[0])
        host = webhook_host(urls[0])  # as the SLA was checked when applied
        if not self._webhooks.allows_host(host):
            return f"notified on the bus (sla.action); webhook not sent: host {host} is not allowed"
        body = webhook_payload(act.namespace, act.sla, act.trigger, act.predicted)
        deadline = time.monotonic() + self._timeout  # one budget for the resolution and the POST
        try:
            name = url.raw_host.decode("ascii")  # IDNA: what DNS and TLS read
            async with asyncio.timeout(self._timeout):
                addresses = await _resolve(name, url.port or _PORTS.get(url.scheme, 80))
        except (OSError, TimeoutError) as exc:
            return f"notified on the bus (sla.action); webhook not sent: host {host} does not resolve ({exc})"
        refusals = [why for why in map(self._webhooks.refusal, addresses) if why is not None]
        if refusals or not addresses:
            why = refusals[0] if refusals else "no address"
            return f"notified on the bus (sla.action); webhook not sent: host {host} resolves to {why}"
        # the address checked is the address reached: a second resolution could answer another one (DNS rebinding)
        pinned = url.copy_with(host=addresses[0])
        extensions = {"sni_hostname": name} if url.scheme == "https" else {}
        headers = {"Host": url.netloc.decode("ascii")}
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False) as client:
                request = client.build_request("POST", pinned, json=body, headers=headers, extensions=extensions)
                remaining = max(deadline - time.monotonic(), 0.001)
                async with asyncio.timeout(remaining):
                    answer = await client.send(request)
        except (httpx.HTTPError, TimeoutError) as exc:
            return f"notified on the bus (sla.action); webhook to {host} failed: {type(exc).__name__}"
        if answer.is_success:
            return f"notified on the bus (sla.action) and by webhook to {host} ({answer.status_code})"
        return f"notified on the bus (sla.action); webhook to {host} answered {answer.status_code}"

    # --- move ----------------------------------------------------------------------------------------------

    def _move(self, act: _Claimed) -> str:
        if act.spec.workload is None:
            return "not done: a namespace-wide SLA names no workload to move"
        kind = next((slo.kind for slo in act.spec.slos if slo.name == act.slo), None)
        try:
            replica, cluster = self._target(act.namespace, act.spec.workload, kind)
        except NotFound as exc:
            return f"not done: {exc}"
        if cluster is None:
            return f"not done: no other cluster accepts replica {replica}"
        request = MigrationRequest(
            workload=f"{act.namespace}/{act.spec.workload}", replica=replica, to=MigrationTarget(cluster=cluster)
        )
        try:
            status = self._migrations.start(request, f"sla:{act.namespace}/{act.sla}")
        except (ApiError, NotFound) as exc:
            return f"not done: migration refused: {exc}"
        why = f"preferring {preference.value}" if (preference := move_preference(kind)) else "any other cluster"
        return f"moving replica {replica} to {cluster} ({why}): migration {status.id} started"

    def _target(self, namespace: str, workload: str, kind: SloKind | None) -> tuple[str | None, str | None]:
        """The replica to move and the cluster the decision engine places it on, leaving out the clusters the
        workload already runs on; (replica, None) when no other cluster accepts it (reads only: the migration
        service checks the target again in its own transaction)."""
        with self._db.snapshot() as s:
            w = workloads.get_workload(s, namespace, workload)
            descriptor = WorkloadDescriptor.model_validate(w.descriptor)
            if descriptor.deployment is None:
                raise NotFound("deployment of workload", f"{namespace}/{workload}")
            running = list(
                s.scalars(
                    select(ReplicaRow).where(
                        ReplicaRow.workload_id == w.id,
                        ReplicaRow.desired.is_(True),
                        ReplicaRow.phase == ReplicaPhase.RUNNING.value,
                    )
                )
            )
            if not running:
                raise NotFound("running replica of workload", f"{namespace}/{workload}")
            # the worst replica: the gateway's series do not say which replica was slow or failed, so the one that
            # restarted most (a sick replica), then the first
            source = max(running, key=lambda r: (r.restarts, -r.index))
            spec = descriptor.deployment
            preference = move_preference(kind)
            if preference is not None:
                placement = spec.placement.model_copy(update={"optimize": preference})
                spec = spec.model_copy(update={"placement": placement})
            used = {r.cluster for r in running}
            candidates = [c for c in Inventory.load(s).candidates({}) if c.name not in used]
            if not candidates:
                return source.id, None
            decision = self._decisions.decide(w.namespace, w.name, w.version, spec, [source.index], candidates)
            if not decision.assignments:
                return source.id, None
            return source.id, decision.assignments[0].cluster
