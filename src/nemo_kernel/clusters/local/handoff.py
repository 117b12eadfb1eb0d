"""The application state hand-off protocol, as the local agent speaks it to a replica on the control plane's behalf.

A replica that can move with its state serves, on its own port (loopback; only its agent calls these):

- ``GET /nemo/state`` -> 200, the whole state as the body, header ``Nemo-State-Version: N``; it keeps serving.
- ``POST /nemo/state/freeze`` with optional ``Nemo-State-Since: N`` -> 200, what changed since version N (the whole
  state without the header) as the body, headers ``Nemo-State-Version: M`` and, for a delta, ``Nemo-State-Base: N``.
  From then on the replica refuses writes (503 with ``Nemo-State: frozen`` and ``Retry-After``) and keeps no write
  it has not acknowledged. Freezing again answers the same.
- ``PUT /nemo/state`` with the body and ``Nemo-State-Version: M`` (plus ``Nemo-State-Base: N`` for a delta) -> 204
  once it holds it; a snapshot already applied (its version reached) is a no-op; a delta whose base is not the
  replica's version is 409.
- ``POST /nemo/state/thaw`` -> 204: writes are accepted again (a rolled-back move).

A replica without the protocol answers 404 on these paths: the move is refused as "no state hand-off".
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from nemo_kernel.clusters.capabilities import MAX_STATE_BYTES, StateSnapshot
from nemo_kernel.clusters.errors import ReplicaRejected

VERSION = "Nemo-State-Version"
BASE = "Nemo-State-Base"
SINCE = "Nemo-State-Since"
STATE_PATH = "/nemo/state"


def snapshot_headers(state: StateSnapshot) -> dict[str, str]:
    """The headers that carry a snapshot's version and base next to its bytes."""
    headers = {VERSION: str(state.version), "Content-Type": "application/octet-stream"}
    if state.base is not None:
        headers[BASE] = str(state.base)
    return headers


def read_snapshot(headers: Mapping[str, str], data: bytes) -> StateSnapshot:
    """A snapshot from its bytes and headers; :class:`ReplicaRejected` when the headers are missing or wrong."""
    try:
        version = int(headers[VERSION])
        base = int(headers[BASE]) if BASE in headers else None
        return StateSnapshot(data=data, version=version, base=base)
    except (KeyError, ValueError) as exc:
        raise ReplicaRejected("bad_state", f"the state's {VERSION}/{BASE} headers are missing or invalid") from exc


class ReplicaStateClient:
    """Calls one replica's hand-off endpoints; every failure is :class:`ReplicaRejected` (the cluster answered,
    the replica could not do it), so the control plane rolls the move back."""

    def __init__(self, client: httpx.AsyncClient, replica_id: str, url: str) -> None:
        self._client = client
        self._replica = replica_id
        self._url = url.rstrip("/") + STATE_PATH

    async def export(self) -> StateSnapshot:
        """The whole state (the replica keeps serving)."""
        response = await self._call("GET", "")
        return read_snapshot(response.headers, response.content)

    async def freeze(self, since: int | None) -> StateSnapshot:
        """Freeze writes; the delta since ``since`` (or the whole state)."""
        headers = {SINCE: str(since)} if since is not None else {}
        response = await self._call("POST", "/freeze", headers=headers)
        return read_snapshot(response.headers, response.content)

    async def load(self, state: StateSnapshot) -> None:
        """Import a whole state or a delta."""
        await self._call("PUT", "", headers=snapshot_headers(state), content=state.data)

    async def thaw(self) -> None:
        """Accept writes again."""
        await self._call("POST", "/thaw")

    async def _call(
        self, method: str, suffix: str, headers: Mapping[str, str] | None = None, content: bytes | None = None
    ) -> httpx.Response:
        try:
            async with self._client.stream(method, self._url + suffix, headers=headers, content=content) as response:
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_STATE_BYTES:
                        raise ReplicaRejected(
                            "state_too_large", f"replica {self._replica}'s state exceeds {MAX_STATE_BYTES} bytes"
                        )
        except httpx.HTTPError as exc:
            raise ReplicaRejected(
                "replica_unavailable",
                f"replica {self._replica} did not answer {method} {STATE_PATH}{suffix}: {type(exc).__name__}",
            ) from exc
        if response.status_code == 404:
            raise ReplicaRejected("no_state_handoff", f"replica {self._replica} does not implement {STATE_PATH}")
        if response.status_code >= 300:
            raise ReplicaRejected(
                "state_refused",
                f"replica {self._replica} answered {response.status_code} to {method} "
                f"{STATE_PATH}{suffix}: {data[:200].decode('utf-8', 'replace')}",
            )
        return httpx.Response(response.status_code, headers=response.headers, content=data)
