"""Stopping the control plane ends every loop, even one that misses a cancellation."""

from __future__ import annotations

import asyncio

from nemo_kernel.orchestrator.control_plane import cancel_and_wait
from nemo_kernel.store.signals import Wakeup


async def _loop_that_misses_one_cancellation(missed: asyncio.Event) -> None:
    # What asyncio.wait_for on Python 3.11 does to a loop when the cancellation meets a result (gh-86296): the loop
    # carries on as if nothing had been asked of it.
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if missed.is_set():
                raise
            missed.set()


async def test_a_loop_that_missed_a_cancellation_is_cancelled_again() -> None:
    missed = asyncio.Event()
    task = asyncio.create_task(_loop_that_misses_one_cancellation(missed), name="stubborn")
    await asyncio.sleep(0)  # let it start waiting
    await cancel_and_wait([task], grace=0.5)
    assert missed.is_set()
    assert task.cancelled()


async def test_a_loop_that_never_ends_does_not_hold_the_stop_for_ever(caplog: object) -> None:
    async def deaf() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf(), name="deaf")
    await asyncio.sleep(0)
    await cancel_and_wait([task], grace=0.05, attempts=2)
    assert not task.done()  # left behind, named in the log; the stop went on
    task.get_coro().close()  # type: ignore[union-attr]


async def test_a_cancelled_wait_is_not_lost_when_the_wakeup_is_set_at_the_same_time() -> None:
    # the control plane's loops (reconcile, migrations, outbox, reactions, faults) all wait on a Wakeup
    wakeup = Wakeup()
    task = asyncio.create_task(wakeup.wait(3600.0))
    await asyncio.sleep(0)
    wakeup.set()
    task.cancel()  # in the same step as the set: wait_for on 3.11 returned normally here
    await asyncio.wait([task])
    assert task.cancelled()
