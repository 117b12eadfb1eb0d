"""The ``local`` ClusterDriver: talks over HTTP to the agent of one local cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from nemo_kernel.clusters.base import ClusterReport, ClusterUnreachable, ReplicaSpec
from nemo_kernel.clusters.capabilities import (
    ProbeEndpoints,
    StateSnapshot,
    SupportsFaultInjection,
    SupportsLinkEmulation,
    SupportsLinkProbes,
    SupportsMetrics,
    SupportsStateHandoff,
)
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.links import PROBE_INTERVAL, probe_timeout
from nemo_kernel.clusters.local.handoff import SINCE, read_snapshot, snapshot_headers
from nemo_kernel.domain import MAX_LINK_LATENCY_MS, FaultKind, FaultSpec, Link
from nemo_kernel.metrics import Sample
from nemo_kernel.metrics.textformat import TextFormatError, parse, samples_of

MAX_LINK = Link(latency_ms=MAX_LINK_LATENCY_MS, jitter_ms=MAX_LINK_LATENCY_MS)
MAX_AGENT_SAMPLES = 1_000_000
"""Samples one agent's page may hold (a thousand replicas of a workload serving 1,000 series each)."""


class LocalClusterDriver:
    """A :class:`~nemo_kernel.clusters.base.ClusterDriver` for a local cluster's agent at ``base_url``.

    Every call finishes within ``timeout`` seconds in total: no answer in time, a transport error, a 5xx
    or a refused token raise :class:`ClusterUnreachable`; a replica the agent refuses (422) raises
    :class:`ReplicaRejected`.
    """

    def __init__(
        self, base_url: str, token: str, timeout: float = 3.0, pause: Callable[[float], None] | None = None
    ) -> None:
        """``pause(seconds)`` stops the cluster's agent for that long (the launcher gives it; a partition fault)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._pause = pause
        self._endpoints: ProbeEndpoints | None = None  # the agent's, asked on first use (probe_endpoints)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            # the agent is on loopback: a proxy from the environment would only get in the way
            trust_env=False,
        )

    async def status(self, since: str | None = None) -> ClusterReport:
        """Heartbeat and report, whole or since revision ``since``; raises :class:`ClusterUnreachable`."""
        response = await self._request("GET", "/v1/status", params={"since": since} if since is not None else None)
        return ClusterReport.model_validate_json(response.content)

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Make sure the replica runs as specified (idempotent); raises :class:`ClusterUnreachable`."""
        await self._request("PUT", f"/v1/replicas/{quote(spec.id, safe='')}", json=spec.model_dump(mode="json"))

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (idempotent); raises :class:`ClusterUnreachable`."""
        await self._request("DELETE", f"/v1/replicas/{quote(replica_id, safe='')}")

    async def scrape(self) -> Sequence[Sample]:
        """The agent's ``/metrics`` as samples (:class:`~nemo_kernel.clusters.capabilities.SupportsMetrics`);
        raises :class:`ClusterUnreachable`, also for a page that does not parse (the agent is ours: a bug)."""
        response = await self._request("GET", "/metrics")
        try:
            families = parse(response.content.decode("utf-8"), MAX_AGENT_SAMPLES)
        except (UnicodeDecodeError, TextFormatError) as exc:
            raise ClusterUnreachable(f"{self.base_url}: unreadable /metrics: {exc}") from exc
        return samples_of(families, time.time())

    async def inject_fault(self, fault: FaultSpec) -> None:
        """A partition stops the agent for ``fault.for_s`` seconds (its replicas keep running); a local cluster
        cannot simulate the other kinds (raises :class:`ReplicaRejected`)."""
        if fault.kind is not FaultKind.PARTITION or self._pause is None:
            raise ReplicaRejected(
                "unsupported", f"a local cluster can only be partitioned (its agent stopped), not {fault.kind.value}"
            )
        self._pause(fault.for_s)

    async def export_state(self, replica_id: str) -> StateSnapshot:
        """The replica's whole application state (it keeps serving); see ``clusters.local.handoff``."""
        response = await self._request("GET", f"/v1/replicas/{quote(replica_id, safe='')}/state")
        return read_snapshot(response.headers, response.content)

    async def freeze_state(self, replica_id: str, since: int | None) -> StateSnapshot:
        """Freeze the replica's writes; what changed since version ``since`` (or the whole state)."""
        headers = {SINCE: str(since)} if since is not None else None
        path = f"/v1/replicas/{quote(replica_id, safe='')}/state/freeze"
        response = await self._request("POST", path, headers=headers)
        return read_snapshot(response.headers, response.content)

    async def import_state(self, replica_id: str, state: StateSnapshot) -> None:
        """Give the replica a whole state or a delta."""
        path = f"/v1/replicas/{quote(replica_id, safe='')}/state"
        await self._request("PUT", path, headers=snapshot_headers(state), content=state.data)

    async def thaw_state(self, replica_id: str) -> None:
        """Let a frozen replica accept writes again."""
        await self._request("POST", f"/v1/replicas/{quote(replica_id, safe='')}/state/thaw")

    async def set_link(self, peer: str, link: Link | None) -> None:
        """Emulate ``link`` between this cluster and ``peer`` (``controlplane`` or a cluster); None removes it."""
        path = f"/v1/links/{quote(peer, safe='')}"
        if link is None:
            await self._request("DELETE", path)
        else:
            await self._request("PUT", path, json=link.model_dump(mode="json"))

    async def probe_endpoints(self) -> ProbeEndpoints:
        """Where the cluster's agent answers probes: asked once, since an agent opens its echoes when it starts and
        keeps them, and a driver talks to one agent (a new agent, even on the same port, gets a new driver)."""
        if self._endpoints is None:
            response = await self._request("GET", "/v1/links")
            self._endpoints = ProbeEndpoints.model_validate(response.json()["probe"])
        return self._endpoints

    async def probe_peer(self, peer: str, address: str, count: int) -> list[float | None]:
        """``count`` probes from the agent to ``address`` through its link to ``peer``."""
        body = {"address": address, "count": count}
        # the probes take their time: their spacing, then as long as the slowest link may delay a reply
        timeout = self.timeout + count * PROBE_INTERVAL + probe_timeout(MAX_LINK)
        response = await self._request("POST", f"/v1/links/{quote(peer, safe='')}/probe", json=body, limit=timeout)
        rtts = response.json()["rtts"]
        return [None if r is None else float(r) for r in rtts]

    async def close(self) -> None:
        """Release connections (the agent and its replicas keep running)."""
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        json: Any = None,
        limit: float | None = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        timeout = self.timeout if limit is None else limit
        try:
            # httpx's timeout bounds each phase (connect, write, read); this bounds the whole call
            async with asyncio.timeout(timeout):
                response = await self._client.request(
                    method, path, json=json, params=params, headers=headers, content=content, timeout=timeout
                )
        except TimeoutError as exc:
            raise ClusterUnreachable(f"{self.base_url}: no answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ClusterUnreachable(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401:
            raise ClusterUnreachable(f"{self.base_url}: the agent refused the token")
        if response.status_code >= 500:
            raise ClusterUnreachable(f"{self.base_url}: {method} {path} answered {response.status_code}")
        if response.status_code >= 400:
            error = _error_body(response)
            raise ReplicaRejected(
                str(error.get("code", "rejected")),
                str(error.get("message", f"{method} {path} answered {response.status_code}")),
                error.get("details"),
            )
        return response


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


# mypy checks here that the driver keeps the capabilities' shape
_metrics: type[SupportsMetrics] = LocalClusterDriver
_links: type[SupportsLinkEmulation] = LocalClusterDriver
_probes: type[SupportsLinkProbes] = LocalClusterDriver
_faults: type[SupportsFaultInjection] = LocalClusterDriver
_handoff: type[SupportsStateHandoff] = LocalClusterDriver
