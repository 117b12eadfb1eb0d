"""A gateway its parent wakes (``nemo up``'s): it sees each of the parent's commits at once, though it polls the
store only every second (here: every hour), and it polls as often as before once the parent is gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.live import DEFAULT_POLL_INTERVAL, StoredGateway
from nemo_kernel.store import Database
from tests.conftest import migrated_database


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # yields to the gateway's loop between checks of the condition


@pytest.fixture
async def woken(tmp_path: Path) -> AsyncIterator[tuple[Database, StoredGateway, int]]:
    """A store seeded as ``nemo up`` seeds it, a gateway on it that polls every hour but is woken through a pipe
    after every commit of this process, and the pipe's write end."""
    with migrated_database(f"sqlite:///{tmp_path / 'nemo.db'}") as db:
        with db.transaction() as s:
            gateway_store.seed(s, "http://127.0.0.1:1")
        read, write = os.pipe()

        def wake() -> None:
            with contextlib.suppress(OSError):  # the test that closes the write end
                os.write(write, b"\0")

        db.after_commit(wake)
        gateway = StoredGateway(db, poll_interval=3600, wake_fd=read)
        runner = web.AppRunner(gateway.application())
        await runner.setup()  # starts its poll, which loads the stored configuration
        try:
            await _until(lambda: gateway.revision is not None, "the first configuration")
            yield db, gateway, write
        finally:
            await runner.cleanup()
            for fd in (read, write):
                with contextlib.suppress(OSError):  # the test that closes the write end did
                    os.close(fd)


async def test_a_commit_of_the_parent_is_served_at_once(woken: tuple[Database, StoredGateway, int]) -> None:
    db, gateway, _ = woken
    for port in (2, 3):  # each start of nemo up re-points the API's service: a new revision
        before = gateway.revision
        with db.transaction() as s:
            gateway_store.seed(s, f"http://127.0.0.1:{port}")
        await _until(lambda: gateway.revision != before, "the new revision")  # noqa: B023 (awaited here)


async def test_once_the_parent_is_gone_it_polls_as_often_as_before(woken: tuple[Database, StoredGateway, int]) -> None:
    _, gateway, write = woken
    assert gateway.poll_interval == 3600
    os.close(write)  # what the parent's death does to the pipe
    await _until(lambda: gateway.poll_interval == DEFAULT_POLL_INTERVAL, "polling again")
