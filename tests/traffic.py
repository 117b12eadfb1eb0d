"""A client calling through the gateway at a steady rate, counting failures and the longest gap it sees.

Open loop: a request leaves every ``1/rate`` seconds whether or not earlier ones answered, as independent users
would send them. The longest gap is the longest time between two successful answers (by when they arrived), so a
freeze, a refused connection or a stalled request all show in it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficReport:
    """What the client saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    ok_times: list[float] = field(default_factory=list)

    @property
    def longest_gap_ms(self) -> float:
        """The longest time between two successful answers, in milliseconds."""
        times = sorted(self.ok_times)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


class SteadyClient:
    """Sends ``method url`` at ``rate`` requests/s from a thread of its own until :meth:`stop`."""

    def __init__(self, method: str, url: str, rate: float = 200.0, timeout: float = 5.0) -> None:
        self.method = method
        self.url = url
        self.rate = rate
        self.timeout = timeout
        self.report = TrafficReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> TrafficReport:
        """Stop sending, wait for the answers still due; the report."""
        self._stop.set()
        self._thread.join(self.timeout + 10)
        return self.report

    def ok_since(self, count: int) -> int:
        """Successful answers so far (for waiting on progress)."""
        return self.report.ok - count

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, trust_env=False) as client:
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # the send schedule, not a synchronisation
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient) -> None:
        self.report.sent += 1
        try:
            response = await client.request(self.method, self.url)
            key = str(response.status_code)
            ok = response.status_code < 300
        except httpx.HTTPError as exc:
            key, ok = type(exc).__name__, False
        self.report.statuses[key] = self.report.statuses.get(key, 0) + 1
        if ok:
            self.report.ok += 1
            self.report.ok_times.append(time.monotonic())
        else:
            self.report.failed += 1
