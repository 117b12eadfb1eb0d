"""``usage-control``: declarative business rules per request (registration active, daily quota, time windows)."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from zoneinfo import ZoneInfo

from nemo_kernel.access.gateway.config import (
    WEEKDAYS,
    ConsumerActiveRule,
    DailyQuotaRule,
    TimeWindowRule,
    UsageControlSettings,
)
from nemo_kernel.access.gateway.context import Refusal, RequestContext
from nemo_kernel.access.gateway.counters import CounterStores, StorageError, increment
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin

log = logging.getLogger(__name__)


class UsageControl(GatewayPlugin):
    """Evaluate the rules in order; the first rule that fails refuses the request and names itself."""

    name = "usage-control"
    priority = 920

    def __init__(self, settings: UsageControlSettings, stores: CounterStores, scope: str) -> None:
        self._settings = settings
        self._store = stores.get(settings)
        self._scope = scope
        self._zones = {r.timezone: ZoneInfo(r.timezone) for r in settings.rules if isinstance(r, TimeWindowRule)}

    async def access(self, ctx: RequestContext) -> None:
        """Apply every rule."""
        for index, rule in enumerate(self._settings.rules):
            if isinstance(rule, ConsumerActiveRule):
                self._consumer_active(ctx)
            elif isinstance(rule, TimeWindowRule):
                self._time_window(rule, ctx)
            else:
                await self._daily_quota(rule, index, ctx)

    @staticmethod
    def _consumer_active(ctx: RequestContext) -> None:
        consumer = ctx.consumer
        if consumer is None:
            raise Refusal(403, "consumer_unknown", "no registered consumer for this identity")
        if not consumer.active:
            raise Refusal(403, "consumer_inactive", "consumer registration is not active")
        if consumer.expires_at is not None and consumer.expires_at.timestamp() <= ctx.now:
            raise Refusal(403, "consumer_inactive", "consumer registration has expired")

    def _time_window(self, rule: TimeWindowRule, ctx: RequestContext) -> None:
        local = datetime.fromtimestamp(ctx.now, tz=self._zones[rule.timezone])
        day = WEEKDAYS[local.weekday()]
        moment = local.time().replace(tzinfo=None)
        if rule.start <= rule.end:
            inside = rule.start <= moment < rule.end
        else:  # the window crosses midnight, e.g. 22:00-06:00
            inside = moment >= rule.start or moment < rule.end
        if day not in rule.days or not inside:
            raise Refusal(
                403,
                "outside_time_window",
                "requests are not allowed at this time",
                details={"days": rule.days, "start": rule.start.isoformat(), "end": rule.end.isoformat()},
            )

    async def _daily_quota(self, rule: DailyQuotaRule, index: int, ctx: RequestContext) -> None:
        who = ctx.consumer.username if ctx.consumer else (ctx.principal.subject if ctx.principal else None)
        if who is None:
            raise Refusal(403, "consumer_unknown", "a daily quota needs an identified consumer")
        # Day windows aligned to the epoch are UTC days: the key changes at 00:00 UTC on every instance.
        try:
            count, reset = await increment(self._store, f"nemo:quota:{self._scope}:{index}:{who}", 86400, ctx.now)
        except (StorageError, OSError) as exc:
            log.warning("usage-control counters unavailable (%s): %s", type(exc).__name__, exc)
            if self._settings.fault_tolerant:
                return
            raise Refusal(503, "quota_unavailable", "quota backend unavailable") from None
        if count > rule.limit:
            retry = max(math.ceil(reset), 1)
            raise Refusal(
                429,
                "quota_exceeded",
                "daily quota exhausted",
                headers={"Retry-After": str(retry)},
                details={"limit": rule.limit},
            )
