"""OS-level helpers: free ports, pid liveness that survives pid reuse, signalling process groups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Collection

import psutil

# create_time is derived from boot time and clock ticks; allow for float rounding across processes
_CREATE_TIME_TOLERANCE = 0.05


def free_port(avoid: Collection[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that is free now, chosen by the OS, and not in ``avoid``.

    ``avoid`` holds ports already handed to replicas that may not be listening yet, which the OS
    would otherwise happily give out again.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``port`` on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a port in TIME_WAIT after a crash is still usable
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def live_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` if it is alive and is the same process (same create_time), else None."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE:
            return None  # the pid was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return proc


def is_alive(proc: psutil.Process) -> bool:
    """Whether a process we hold a handle to still runs (a zombie counts as gone)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (replicas run in their own session).

    Linux never hands out a pid that is still in use as a process group id, so signalling the group
    of a dead leader either reaches its leftover children or fails harmlessly.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def poll_until(condition: Callable[[], bool], within: float, interval: float = 0.05) -> bool:
    """Wait until ``condition()`` holds or ``within`` seconds pass; returns whether it holds.

    Polling is the only way here: the kernel gives no event for "a process that is not our child exited".
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True
