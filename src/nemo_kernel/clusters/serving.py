"""Serving an ASGI app with uvicorn at one housekeeping tick a second: the local agents and ``nemo up`` use it.

uvicorn's server wakes ten times a second to refresh its ``Date`` header (once a second) and look for a stop
request; in an idle agent those wake-ups were the largest part of its Python time. :class:`QuietServer` ticks once
a second, still refreshes the header on every tick, and stops at once on a signal (its handler wakes the loop). A
server without a Date header (``date_header=False``: the local agents, whose only client is the control plane) has
nothing to refresh and ticks every ten seconds, for a stop asked without a signal (``should_exit`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

_TICK = 1.0  # seconds between housekeeping ticks: the Date header's resolution
_TICK_WITHOUT_DATE = 10.0  # seconds between ticks of a server that sends no Date header
_TICKS_PER_REFRESH = 10  # uvicorn refreshes the Date header when its tick counter is a multiple of this


class QuietServer(uvicorn.Server):
    """A uvicorn server with one housekeeping tick a second instead of ten (one in ten seconds without a Date
    header)."""

    def __init__(self, config: uvicorn.Config) -> None:
        """Serve ``config`` as :class:`uvicorn.Server` does."""
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit = asyncio.Event()

    async def main_loop(self) -> None:
        """Tick once a second (or at once when asked to exit) until uvicorn's checks say stop."""
        self._loop = asyncio.get_running_loop()
        # uvicorn's notify callback wants its ticks too, as the Date header does
        dated = self.config.date_header or self.config.callback_notify is not None
        tick = _TICK if dated else _TICK_WITHOUT_DATE
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _TICKS_PER_REFRESH) % 864000  # every tick refreshes the Date header
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._exit.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Ask the server to stop, and wake its loop so that it does at once (safe from a signal handler)."""
        super().handle_exit(sig, frame)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                self._loop.call_soon_threadsafe(self._exit.set)
