"""The ``local`` ClusterDriver: talks over HTTP to the agent of one local cluster."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from nemo_kernel.clusters.base import ClusterReport, ClusterUnreachable, ReplicaSpec
from nemo_kernel.clusters.capabilities import StateSnapshot, SupportsStateHandoff
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.local.handoff import SINCE, read_snapshot, snapshot_headers


class LocalClusterDriver:
    """A :class:`~nemo_kernel.clusters.base.ClusterDriver` for a local cluster's agent at ``base_url``.

    Every call finishes within ``timeout`` seconds in total: no answer in time, a transport error, a 5xx
    or a refused token raise :class:`ClusterUnreachable`; a replica the agent refuses (422) raises
    :class:`ReplicaRejected`.
    """

    def __init__(self, base_url: str, token: str, timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            # the agent is on loopback: a proxy from the environment would only get in the way
            trust_env=False,
        )

    async def status(self) -> ClusterReport:
        """Heartbeat and full report; raises :class:`ClusterUnreachable`."""
        response = await self._request("GET", "/v1/status")
        return ClusterReport.model_validate_json(response.content)

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Make sure the replica runs as specified (idempotent); raises :class:`ClusterUnreachable`."""
        await self._request("PUT", f"/v1/replicas/{quote(spec.id, safe='')}", json=spec.model_dump(mode="json"))

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (idempotent); raises :class:`ClusterUnreachable`."""
        await self._request("DELETE", f"/v1/replicas/{quote(replica_id, safe='')}")

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

    async def close(self) -> None:
        """Release connections (the agent and its replicas keep running)."""
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            # httpx's timeout bounds each phase (connect, write, read); this bounds the whole call
            async with asyncio.timeout(self.timeout):
                response = await self._client.request(method, path, json=json, headers=headers, content=content)
        except TimeoutError as exc:
            raise ClusterUnreachable(f"{self.base_url}: no answer within {self.timeout:g} s") from exc
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


_: type[SupportsStateHandoff] = LocalClusterDriver
