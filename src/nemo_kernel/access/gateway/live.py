"""A gateway serving the configuration stored in the database, rebuilt within a poll interval of any change.

The poll reads one row (the configuration's revision) plus the replicas of exposed workloads; the whole
configuration is read only when the revision changed, and a new :class:`Gateway` is built when either changed. On
SQLite a poll first asks the store's commit counter (:class:`~nemo_kernel.store.signals.CommitWatch`, microseconds):
when nobody committed since the last successful read, nothing can have changed and the poll reads nothing, so an
idle gateway costs almost nothing while a change is still seen within one poll interval.
Woken: the gateway ``nemo up`` starts is given the read end of a pipe (``wake_fd``) that its parent writes a byte
to after each of its commits; it then looks at once, and polls only every :data:`WOKEN_POLL_INTERVAL` for another
process's commits (an idle gateway wakes once a second instead of ten times).
Requests already in flight finish on the gateway they started on; new ones go to the new one. The store only ever
holds valid configurations, so a rebuild cannot fail on bad input; should it fail anyway (database down), the
current gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from nemo_kernel.access.errors import error_body
from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.app import Gateway
from nemo_kernel.access.gateway.config import GatewayConfig
from nemo_kernel.access.gateway.counters import CounterStores
from nemo_kernel.access.gateway.observability import GatewayMetrics
from nemo_kernel.store import Database
from nemo_kernel.store.workloads import running_urls

log = logging.getLogger(__name__)

#: Seconds an old gateway keeps its upstream connections for requests still in flight after a change.
RETIRE_AFTER = 120.0
#: A replica answering 503 with this header is frozen for a migration's state hand-off: its successor takes the
#: traffic as soon as the switch is stored, so the gateway looks again at once instead of at its next poll.
FROZEN_HEADER = ("Nemo-State", "frozen")
#: Seconds between two such early looks at most, however many frozen answers arrive.
EARLY_REFRESH_GAP = 0.02
#: Seconds between polls of the store by a gateway nobody wakes.
DEFAULT_POLL_INTERVAL = 0.1
#: Seconds between polls of a gateway its parent wakes after each of its commits: how late another process's
#: commit (none in ``nemo up``, where the API and the control plane are the parent) is seen at most.
WOKEN_POLL_INTERVAL = 1.0


class StoredGateway:
    """Serves what ``db`` holds; ``on_orphaned`` is called when the parent process named at start is gone."""

    def __init__(
        self,
        db: Database,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        parent_pid: int | None = None,
        on_orphaned: Callable[[], None] | None = None,
        wake_fd: int | None = None,
    ) -> None:
        """``wake_fd``: the read end of a pipe the writer of the store writes to after each commit (see the module
        docstring); polls are then :data:`WOKEN_POLL_INTERVAL` apart, unless ``poll_interval`` is longer."""
        self.db = db
        self.poll_interval = poll_interval if wake_fd is None else max(poll_interval, WOKEN_POLL_INTERVAL)
        self._wake_fd = wake_fd
        self.metrics = GatewayMetrics()
        self.stores = CounterStores()
        self.revision: int | None = None
        self._config: GatewayConfig | None = None
        self._replicas: dict[str, list[str]] = {}
        self._current: Gateway | None = None
        self._parent_pid = parent_pid
        self._on_orphaned = on_orphaned
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[Gateway] = set()
        self._look_again = asyncio.Event()  # a frozen answer, or a commit of the parent (wake_fd)
        self._frozen = False  # a frozen answer asked for the look: it reads whatever the commit counter says
        self._commits = db.commit_watch()
        self._read_at: int | None = None  # the commit counter at the last successful read (None: unknown)

    def application(self) -> web.Application:
        """An aiohttp application whose every request goes to the current gateway."""
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Hand the request to the gateway of the latest configuration."""
        gateway = self._current
        if gateway is None:
            return web.json_response(error_body("unavailable", "gateway configuration not loaded yet"), status=503)
        response = await gateway.handle(request)
        if response.status == 503 and response.headers.get(FROZEN_HEADER[0]) == FROZEN_HEADER[1]:
            self._frozen = True
            self._look_again.set()
        return response

    async def refresh(self) -> bool:
        """Rebuild the gateway if the stored configuration or the exposed replicas changed; True if it did."""
        revision = await asyncio.to_thread(self._read_revision)
        if revision == self.revision and self._config is not None:
            if not self._replicas:
                return False
            replicas = await asyncio.to_thread(self._read_replicas, set(self._replicas))
            if replicas == self._replicas:
                return False
            snapshot = gateway_store.GatewaySnapshot(revision, self._config, replicas)
        else:
            snapshot = await asyncio.to_thread(self._read_snapshot)
        old = self._current
        self._current = Gateway(snapshot.config, replicas=snapshot.replicas, metrics=self.metrics, stores=self.stores)
        self.revision, self._config, self._replicas = snapshot.revision, snapshot.config, snapshot.replicas
        log.info("gateway configuration revision %s loaded", snapshot.revision)
        if old is not None:
            self._spawn(self._retire(old))
        return True

    def _read_revision(self) -> int:
        with self.db.snapshot() as session:
            return gateway_store.revision(session)

    def _read_replicas(self, workloads: set[str]) -> dict[str, list[str]]:
        with self.db.snapshot() as session:
            return running_urls(session, workloads)

    def _read_snapshot(self) -> gateway_store.GatewaySnapshot:
        with self.db.snapshot() as session:
            return gateway_store.snapshot(session)

    async def _retire(self, gateway: Gateway) -> None:
        self._retiring.add(gateway)
        await asyncio.sleep(RETIRE_AFTER)
        self._retiring.discard(gateway)
        await gateway.close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, _app: web.Application) -> None:
        if self._wake_fd is not None:
            os.set_blocking(self._wake_fd, False)
            asyncio.get_running_loop().add_reader(self._wake_fd, self._woken)
        self._spawn(self._poll())

    def _woken(self) -> None:
        """The parent committed: look again now (the bytes say only that; many commits are one look)."""
        assert self._wake_fd is not None
        try:
            written = os.read(self._wake_fd, 4096)
        except BlockingIOError:
            return
        if written:
            self._look_again.set()
            return
        # The parent closed its end (it is gone: the poll looks at once): nobody wakes us any more, so poll as
        # often as an unwoken gateway.
        asyncio.get_running_loop().remove_reader(self._wake_fd)
        self._wake_fd = None
        self.poll_interval = min(self.poll_interval, DEFAULT_POLL_INTERVAL)
        self._look_again.set()

    async def _poll(self) -> None:
        while True:
            if self._parent_pid is not None and os.getppid() != self._parent_pid:
                # Reparented: the process that started us is gone, and a gateway must not outlive it.
                log.warning("parent process %s is gone; gateway stopping", self._parent_pid)
                if self._on_orphaned is not None:
                    self._on_orphaned()
                return
            forced, self._frozen = self._frozen, False
            self._look_again.clear()
            looked = asyncio.get_running_loop().time()
            try:
                commits = self._commits.look()
                if forced or commits is None or commits != self._read_at:
                    self._read_at = None  # until this read succeeds
                    await self.refresh()
                    self._read_at = commits
            except Exception:  # the database may be briefly unavailable; keep serving the last good config
                log.warning("reading the gateway configuration failed; retrying", exc_info=True)
            # One timer per cycle while nothing asks for an early look; an early look comes EARLY_REFRESH_GAP after
            # the frozen answer that asked for it, so that however many arrive, looks are that far apart at least;
            # one for the parent's commits comes no sooner than an unwoken gateway's next poll (a burst of commits
            # costs no more looks than polling did).
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancellation is never swallowed
                async with asyncio.timeout(self.poll_interval):
                    await self._look_again.wait()
            if self._look_again.is_set():
                since = asyncio.get_running_loop().time() - looked
                await asyncio.sleep(EARLY_REFRESH_GAP if self._frozen else max(0.0, DEFAULT_POLL_INTERVAL - since))

    async def _stop(self, _app: web.Application) -> None:
        if self._wake_fd is not None:
            asyncio.get_running_loop().remove_reader(self._wake_fd)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for gateway in (*self._retiring, *([self._current] if self._current else [])):
            await gateway.close()
        await self.stores.close()
        self._commits.close()
        await asyncio.to_thread(self.db.dispose)
