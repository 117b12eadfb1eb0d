"""The gateway that ``nemo up`` runs: a child process serving the stored configuration on a socket bound here.

A child, not a task in the API's event loop, because the gateway's throughput is bound by one core (see
``benchmarks/RESULTS.md``): a process of its own gets the second core instead of competing with the API and the
reconcile loops. It never outlives ``nemo up``: stopped on shutdown, and on a SIGKILL of ``nemo up`` the kernel
signals it (``PR_SET_PDEATHSIG``), backed by its own check that its parent is still the one that started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from nemo_kernel.access.gateway import DATABASE_URL_ENV, parse_gateway_config
from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.config import GatewayConfig
from nemo_kernel.store import Database

log = logging.getLogger(__name__)

#: Seconds before a gateway that died is started again (a crash loop must not spin).
RESTART_DELAY = 1.0


def http_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_initial_config(path: Path | None) -> GatewayConfig | None:
    """The declarative file imported on first start, validated now so that a bad file stops `nemo up` early."""
    return None if path is None else parse_gateway_config(path.read_text())


class GatewayProcess:
    """The gateway child of this process, serving ``sock`` (already listening) from ``database_url``."""

    def __init__(self, sock: socket.socket, database_url: str, log_file: Path) -> None:
        self.sock = sock
        self.url = http_url(sock)
        self.database_url = database_url
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        # The child looks at the store when a byte arrives here (``wake``), and polls only once a second besides.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never interleave
        self._watcher: threading.Thread | None = None

    def seed(self, db: Database, api_url: str, initial: GatewayConfig | None) -> None:
        """Store the first configuration (or re-point ``nemo-api`` at this start's API URL)."""
        with db.transaction() as session:
            if gateway_store.seed(session, api_url, initial):
                log.info("gateway configuration seeded (service %s -> %s)", gateway_store.API_SERVICE, api_url)

    def wake(self) -> None:
        """Tell the child that something was committed (from any thread; never blocks)."""
        # A full pipe already holds a wake-up the child has not read; a closed one, a child that is gone.
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wake_write, b"\0")

    def start(self) -> None:
        """Start the child, and a watcher thread that starts it again should it die while we run.

        The watcher forks the later children itself; the kernel's parent-death signal follows the thread that
        forked, and the watcher lives as long as this process does, so they too die with `nemo up`.
        """
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="gateway-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.wait(RESTART_DELAY):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                log.warning("gateway (pid %s) exited with %s; starting it again", proc.pid, code)
                self._spawn()

    def _spawn(self) -> None:
        fd, wake = self.sock.fileno(), self._wake_read
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nemo_kernel.access.gateway", "--fd", str(fd), "--parent-pid", str(os.getpid()),
                 "--wake-fd", str(wake)],
                # the URL may hold a password: the environment, unlike argv, is not readable by other users
                env={**os.environ, DATABASE_URL_ENV: self.database_url},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(fd, wake),
            )  # fmt: skip

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child and wait; SIGKILL if it does not exit in ``timeout`` seconds."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("gateway (pid %s) ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout)
        self.proc = None
        self.sock.close()
        # The write end stays open: a commit racing with this stop then writes to a pipe nobody reads (refused,
        # quietly), never to whatever file would reuse its number.
        os.close(self._wake_read)
