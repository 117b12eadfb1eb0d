"""What ``nemo bus status`` shows: modules, queues, depths, rates, consumers and refusals (management HTTP API)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from nemo_kernel.bus.rabbitmq import DEAD_REASON_HEADER


@dataclass(frozen=True)
class QueueStatus:
    """One module queue and its dead-letter queue."""

    name: str
    ready: int
    unacked: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    ack_rate: float
    dead: int
    dead_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleStatus:
    """A broker user of the vhost: how many connections it has open."""

    name: str
    connections: int


@dataclass(frozen=True)
class BusStatus:
    """The whole view."""

    vhost: str
    modules: list[ModuleStatus]
    queues: list[QueueStatus]

    @property
    def refused(self) -> int:
        """Messages sitting in dead-letter queues."""
        return sum(q.dead for q in self.queues)


def _rate(stats: dict[str, Any], key: str) -> float:
    return float(stats.get(f"{key}_details", {}).get("rate", 0.0))


def bus_status(
    mgmt_url: str, user: str, password: str, *, vhost: str = "nemo", peek: int = 50, timeout: float = 10.0
) -> BusStatus:
    """Collect the status of ``vhost``; ``peek`` dead letters per queue are read (and requeued) to count reasons."""
    v = quote(vhost, safe="")
    with httpx.Client(base_url=mgmt_url.rstrip("/"), auth=(user, password), timeout=timeout) as api:
        queues_resp = api.get(f"/api/queues/{v}")
        queues_resp.raise_for_status()
        queues = {q["name"]: q for q in queues_resp.json()}
        perms = api.get(f"/api/vhosts/{v}/permissions")
        perms.raise_for_status()
        conns = api.get("/api/connections")
        conns.raise_for_status()
        per_user = Counter(c.get("user") for c in conns.json() if c.get("vhost") == vhost)
        modules = [ModuleStatus(p["user"], per_user.get(p["user"], 0)) for p in perms.json()]
        result = []
        for name, q in sorted(queues.items()):
            if name.endswith(".dead"):
                continue
            dead_q = queues.get(f"{name}.dead", {})
            dead = int(dead_q.get("messages", 0))
            reasons: Counter[str] = Counter()
            if dead and peek:
                got = api.post(
                    f"/api/queues/{v}/{quote(name + '.dead', safe='')}/get",
                    json={"count": peek, "ackmode": "reject_requeue_true", "encoding": "auto", "truncate": 1},
                )
                if got.status_code == 200:
                    for m in got.json():
                        headers = m.get("properties", {}).get("headers", {}) or {}
                        reasons[str(headers.get(DEAD_REASON_HEADER, "broker: delivery limit"))] += 1
            stats = q.get("message_stats", {})
            result.append(
                QueueStatus(
                    name=name,
                    ready=int(q.get("messages_ready", 0)),
                    unacked=int(q.get("messages_unacknowledged", 0)),
                    consumers=int(q.get("consumers", 0)),
                    publish_rate=_rate(stats, "publish"),
                    deliver_rate=_rate(stats, "deliver_get"),
                    ack_rate=_rate(stats, "ack"),
                    dead=dead,
                    dead_reasons=dict(reasons),
                )
            )
    return BusStatus(vhost=vhost, modules=modules, queues=result)
