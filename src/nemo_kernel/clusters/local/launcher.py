"""Starts, finds and stops the agents of local clusters: one agent process per cluster, state under one root."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from nemo_kernel.clusters.base import ClusterUnreachable
from nemo_kernel.clusters.local.driver import LocalClusterDriver
from nemo_kernel.clusters.local.processes import is_alive, live_process, poll_until, signal_group
from nemo_kernel.clusters.local.sandbox import DEFAULT_REPLICA_USER
from nemo_kernel.clusters.local.state import (
    AGENT_FILE,
    AGENT_LOG,
    CLUSTER_FILE,
    REPLICAS_FILE,
    AgentEndpoint,
    load_replica_table,
    make_private_dir,
    read_agent_endpoint,
    write_atomically,
)
from nemo_kernel.domain import ClusterSpec

PAUSED_FILE = "paused-until"
"""In a cluster's state directory while a fault keeps its agent stopped: the unix time the stop ends. A file, so that
the next control plane continues an agent whose time is up even when the one that stopped it is gone."""

log = logging.getLogger(__name__)

AGENT_MODULE = "nemo_kernel.clusters.local.agent"


class LocalAgentLauncher:
    """Keeps one agent running per local cluster, each with its state in ``state_root/<cluster-name>/``.

    Agents run in their own session and outlive the control plane; :meth:`ensure` finds a live one again
    (after a control-plane restart too) or starts a new one, which adopts the replicas still running.
    Replicas run in a sandbox that hides ``data_dir`` (default: the state root's parent, the data directory).
    """

    def __init__(
        self,
        state_root: Path,
        *,
        data_dir: Path | None = None,
        replica_user: str = DEFAULT_REPLICA_USER,
        request_timeout: float = 3.0,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        self.state_root = state_root
        # what replicas must not see: the control plane's data directory, which holds the state root
        self.data_dir = data_dir if data_dir is not None else state_root.parent
        self.replica_user = replica_user  # when the agent runs as root
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # one lock per cluster: agents of different clusters start in parallel, one cluster's never twice
        self._locks: dict[str, asyncio.Lock] = {}

    def state_dir(self, name: str) -> Path:
        """Where the agent of cluster ``name`` keeps its state."""
        return self.state_root / name

    def pid_of(self, name: str) -> int | None:
        """Pid of the running agent of cluster ``name``, or None."""
        endpoint = self._live_endpoint(name)
        return None if endpoint is None else endpoint.pid

    async def ensure(self, spec: ClusterSpec) -> LocalClusterDriver:
        """A driver for the agent of ``spec``, starting the agent if none runs (or its spec changed).

        Raises :class:`ClusterUnreachable` if an agent runs but does not answer (stopped, hung): it still
        holds the cluster's replicas, so it is not replaced behind its back.
        """
        async with self._lock_of(spec.name):
            state_dir = self.state_dir(spec.name)
            # agent tokens, every replica's environment and logs: for the control plane's user only
            make_private_dir(self.state_root)
            make_private_dir(state_dir)
            spec_file = state_dir / CLUSTER_FILE
            wanted = spec.model_dump_json(indent=2).encode()
            endpoint = self._live_endpoint(spec.name)
            if endpoint is not None:
                self._continue_when_due(spec.name, endpoint)
                same_spec = spec_file.exists() and spec_file.read_bytes() == wanted
                if same_spec:
                    driver = self._driver(endpoint, spec.name)
                    try:
                        report = await driver.status()
                    except BaseException:
                        await driver.close()
                        raise
                    if report.sandbox is not None:
                        return driver
                    # an agent of an older NEMO runs replicas without a sandbox: a new one restarts them in it
                    await driver.close()
                    log.warning("agent of cluster %s has no sandbox; replacing it", spec.name)
                # the agent serves the spec it read at start; a new one adopts the replicas with the new spec
                await self._stop_agent(spec.name, endpoint)
            write_atomically(spec_file, wanted)
            return await self._start_agent(spec.name)

    async def stop(self, name: str) -> None:
        """SIGTERM the agent of cluster ``name`` and wait for it to exit; its replicas keep running."""
        lock = self._lock_of(name)
        try:
            # bounded: a start of this agent that a stopping control plane left behind must not hold the stop up
            async with asyncio.timeout(self.start_timeout + self.stop_timeout):
                await lock.acquire()
        except TimeoutError:
            log.warning("agent of cluster %s is still being started; stopping it anyway", name)
            endpoint = self._live_endpoint(name)
            if endpoint is not None:
                await self._stop_agent(name, endpoint)
            return
        try:
            endpoint = self._live_endpoint(name)
            if endpoint is not None:
                await self._stop_agent(name, endpoint)
        finally:
            lock.release()

    async def stop_all(self) -> None:
        """Stop every agent under the state root (replicas keep running)."""
        if not self.state_root.is_dir():
            return
        for state_dir in sorted(p for p in self.state_root.iterdir() if p.is_dir()):
            await self.stop(state_dir.name)

    async def destroy(self, name: str) -> None:
        """Remove every replica of cluster ``name``, stop its agent and delete its state (cluster removal).

        Replicas get the agent's graceful stop (SIGTERM, then SIGKILL). If the agent does not answer
        (stopped, hung), the launcher kills the agent and every recorded replica group itself: removing a
        cluster must not depend on the health of what is being removed.
        """
        state_dir = self.state_dir(name)
        spec_file = state_dir / CLUSTER_FILE
        if spec_file.exists():
            try:
                await self._remove_all_replicas(name, ClusterSpec.model_validate_json(spec_file.read_bytes()))
            except ClusterUnreachable as exc:
                log.warning("agent of cluster %s unreachable (%s); killing it and its replicas", name, exc)
                await self._kill_agent_and_replicas(name)
            else:
                await self.stop(name)
        shutil.rmtree(state_dir, ignore_errors=True)

    async def destroy_all(self) -> None:
        """Destroy every cluster under the state root (``nemo down --purge``, test teardown)."""
        if not self.state_root.is_dir():
            return
        for state_dir in sorted(p for p in self.state_root.iterdir() if p.is_dir()):
            await self.destroy(state_dir.name)

    # ------------------------------------------------------------------ internals

    async def _remove_all_replicas(self, name: str, spec: ClusterSpec) -> None:
        driver = await self.ensure(spec)
        try:
            for replica in (await driver.status()).replicas:
                await driver.remove_replica(replica.id)

            async def none_left() -> bool:
                return not (await driver.status()).replicas

            # each replica may take the agent's stop grace; they stop concurrently
            deadline = time.monotonic() + 30.0
            while not await none_left():
                if time.monotonic() > deadline:
                    raise ClusterUnreachable(f"replicas of cluster {name!r} did not stop within 30 s")
                await asyncio.sleep(0.1)
        finally:
            await driver.close()

    async def _kill_agent_and_replicas(self, name: str) -> None:
        state_dir = self.state_dir(name)
        endpoint = read_agent_endpoint(state_dir / AGENT_FILE)
        agent = live_process(endpoint.pid, endpoint.create_time) if endpoint is not None else None
        if agent is not None:
            # the agent first, so that it starts nothing new; SIGKILL works on a stopped process too
            with contextlib.suppress(psutil.Error):
                agent.kill()
                agent.wait(timeout=self.stop_timeout)
        child = self._children.pop(name, None)
        if child is not None:
            child.poll()
        killed: list[psutil.Process] = []
        for record in load_replica_table(state_dir / REPLICAS_FILE).replicas:
            # create_time guards against signalling a stranger that reused the pid
            replica = live_process(record.pid, record.create_time) if record.pid is not None else None
            if replica is not None:
                signal_group(replica.pid, signal.SIGKILL)
                killed.append(replica)
        # signals are delivered asynchronously: the cluster is gone only once its processes are
        await poll_until(lambda: not any(is_alive(p) for p in killed), self.stop_timeout)

    def _lock_of(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def pause(self, name: str, seconds: float) -> None:
        """Stop the agent of cluster ``name`` (SIGSTOP) for ``seconds``: it answers nothing while its replicas keep
        running (a partition). :meth:`ensure`, which the control plane calls after every missed heartbeat, continues
        it once the time is up; raises :class:`ClusterUnreachable` when no agent runs."""
        endpoint = self._live_endpoint(name)
        proc = None if endpoint is None else live_process(endpoint.pid, endpoint.create_time)
        if proc is None:
            raise ClusterUnreachable(f"no agent runs cluster {name!r}")
        write_atomically(self.state_dir(name) / PAUSED_FILE, repr(time.time() + seconds).encode(), mode=0o600)
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.suspend()

    def _continue_when_due(self, name: str, endpoint: AgentEndpoint) -> None:
        """Continue an agent a fault stopped once its time is up (an agent stopped by anything else stays so)."""
        marker = self.state_dir(name) / PAUSED_FILE
        try:
            until = float(marker.read_text())
        except (OSError, ValueError):
            return
        if time.time() < until:
            return
        proc = live_process(endpoint.pid, endpoint.create_time)
        if proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()
        marker.unlink(missing_ok=True)

    def _driver(self, endpoint: AgentEndpoint, name: str) -> LocalClusterDriver:
        return LocalClusterDriver(
            endpoint.url, endpoint.token, timeout=self.request_timeout, pause=functools.partial(self.pause, name)
        )

    def _live_endpoint(self, name: str) -> AgentEndpoint | None:
        """The endpoint of cluster ``name``'s agent if that very process is alive."""
        child = self._children.get(name)
        if child is not None and child.poll() is not None:
            del self._children[name]  # reaped: a dead child of ours must not linger as a zombie
        endpoint = read_agent_endpoint(self.state_dir(name) / AGENT_FILE)
        if endpoint is None or live_process(endpoint.pid, endpoint.create_time) is None:
            return None
        return endpoint

    async def _start_agent(self, name: str) -> LocalClusterDriver:
        state_dir = self.state_dir(name)
        with (state_dir / AGENT_LOG).open("ab") as agent_log:
            # Popen only forks and execs; it does not wait for the agent, so it does not block the loop
            child = subprocess.Popen(  # noqa: ASYNC220
                [
                    self.python,
                    "-m",
                    AGENT_MODULE,
                    "--cluster-file",
                    str(state_dir / CLUSTER_FILE),
                    "--state-dir",
                    str(state_dir),
                    "--data-dir",
                    str(self.data_dir),
                    "--replica-user",
                    self.replica_user,
                ],
                stdin=subprocess.DEVNULL,
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                # its own session: the agent (and so the cluster) outlives the control plane and its Ctrl-C
                start_new_session=True,
                close_fds=True,
            )
        self._children[name] = child
        deadline = time.monotonic() + self.start_timeout
        last_error = "agent.json not written yet"
        published = False
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise ClusterUnreachable(
                    f"agent of cluster {name!r} exited with code {child.returncode}; see {state_dir / AGENT_LOG}"
                )
            endpoint = read_agent_endpoint(state_dir / AGENT_FILE)
            if endpoint is not None and endpoint.pid == child.pid:
                published = True
                driver = self._driver(endpoint, name)
                try:
                    await driver.status()
                except ClusterUnreachable as exc:
                    last_error = str(exc)
                    await driver.close()
                else:
                    log.info("started agent of cluster %s at %s (pid %s)", name, endpoint.url, child.pid)
                    return driver
            await asyncio.sleep(0.05)
        if published:
            # It holds the cluster's lock and adopts its replicas: the cluster's agent now, alive but silent (stopped,
            # hung, or slow on a loaded machine). Like any such agent it is left alone and the cluster goes NotReady;
            # a later ensure() finds it through agent.json once it answers.
            raise ClusterUnreachable(
                f"agent of cluster {name!r} (pid {child.pid}) did not answer within {self.start_timeout:g} s: "
                f"{last_error}"
            )
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()
        self._children.pop(name, None)
        raise ClusterUnreachable(
            f"agent of cluster {name!r} did not answer within {self.start_timeout:g} s: {last_error}"
        )

    async def _stop_agent(self, name: str, endpoint: AgentEndpoint) -> None:
        proc = live_process(endpoint.pid, endpoint.create_time)
        if proc is None:
            return
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a stopped agent must run to act on the SIGTERM
        if not await poll_until(lambda: not self._agent_alive(name, proc), self.stop_timeout):
            log.warning("agent of cluster %s ignored SIGTERM; killing it (replicas keep running)", name)
            with contextlib.suppress(psutil.Error):
                proc.kill()
            await poll_until(lambda: not self._agent_alive(name, proc), self.stop_timeout)
        self._children.pop(name, None)

    def _agent_alive(self, name: str, proc: psutil.Process) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == proc.pid:
            return child.poll() is None  # our child: reap it, or it stays a zombie that looks alive
        return is_alive(proc)
