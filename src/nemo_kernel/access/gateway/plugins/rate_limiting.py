"""``rate-limiting``: fixed clock-aligned windows per consumer, IP, header or path, with Kong's headers.

Counting is increment-then-compare, so two gateways sharing a Redis never both admit the last allowed request.
When the counter store fails, ``fault_tolerant`` decides: true lets the request through uncounted and without
rate-limit headers (fail-open, Kong's default: an outage of Redis must not become an outage of every API);
false answers 503 (fail-closed, for limits that protect something fragile or billable).
"""

from __future__ import annotations

import logging
import math

from nemo_kernel.access.gateway.config import RateLimitingSettings
from nemo_kernel.access.gateway.context import Refusal, RequestContext
from nemo_kernel.access.gateway.counters import CounterStores, StorageError, increment
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin

log = logging.getLogger(__name__)


class RateLimiting(GatewayPlugin):
    """Limit requests per second/minute/hour/day; 429 with ``Retry-After`` past any limit."""

    name = "rate-limiting"
    priority = 910

    def __init__(self, settings: RateLimitingSettings, stores: CounterStores, scope: str) -> None:
        self._settings = settings
        self._store = stores.get(settings)
        self._windows = settings.windows()
        self._scope = scope
        self.storage_errors = 0

    def _identifier(self, ctx: RequestContext) -> str:
        by = self._settings.limit_by
        # As Kong: without the chosen identity (no consumer, no header), fall back to the client address.
        if by == "consumer":
            if ctx.consumer is not None:
                return f"consumer:{ctx.consumer.username}"
            if ctx.principal is not None:
                return f"subject:{ctx.principal.subject}"
        elif by == "header":
            value = ctx.request.headers.get(self._settings.header_name or "")
            if value:
                return f"header:{value}"
        elif by == "path":
            return f"path:{ctx.path}"
        return f"ip:{ctx.client_ip}"

    async def access(self, ctx: RequestContext) -> None:
        """Count the request in every window; refuse if any window is over its limit."""
        key = f"nemo:rl:{self._scope}:{self._identifier(ctx)}"
        try:
            counts = [
                (name, limit, *await increment(self._store, f"{key}:{name}", size, ctx.now))
                for name, size, limit in self._windows
            ]
        except (StorageError, OSError) as exc:
            self.storage_errors += 1
            log.warning("rate-limiting counters unavailable (%s): %s", type(exc).__name__, exc)
            if self._settings.fault_tolerant:
                return
            raise Refusal(503, "rate_limit_unavailable", "rate limiting backend unavailable") from None
        headers: dict[str, str] = {}
        tightest: tuple[int, int, float] | None = None  # (remaining, limit, reset) of the most restrictive window
        exceeded: float | None = None
        for name, limit, count, reset in counts:
            remaining = max(limit - count, 0)
            headers[f"X-RateLimit-Limit-{name.capitalize()}"] = str(limit)
            headers[f"X-RateLimit-Remaining-{name.capitalize()}"] = str(remaining)
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, limit, reset)
            if count > limit:
                exceeded = max(exceeded or 0.0, reset)
        assert tightest is not None
        headers["RateLimit-Limit"] = str(tightest[1])
        headers["RateLimit-Remaining"] = str(tightest[0])
        headers["RateLimit-Reset"] = str(max(math.ceil(tightest[2]), 1))
        if self._settings.hide_client_headers:
            headers = {}
        if exceeded is not None:
            headers["Retry-After"] = str(max(math.ceil(exceeded), 1))
            raise Refusal(429, "rate_limited", "API rate limit exceeded", headers=headers)
        ctx.response_headers.update(headers)
