"""Files a local agent keeps in its state directory, so that replicas outlive the agent that started them.

Layout of ``STATE_DIR`` (mode 0700, like everything in it but the replicas' own directories)::

    cluster.json    the ClusterSpec the agent serves (written by the launcher)
    agent.json      where the running agent listens, its bearer token and pid (mode 0600)
    agent.lock      held (flock) by the running agent: one agent per state directory
    agent.log       the agent's own output
    replicas.json   every replica the agent supervises, with pid, ports and env, for adoption (mode 0600)
    logs/<id>.log   stdout and stderr of each replica
    homes/<id>/     each replica's own directory, its HOME and default working directory, owned by the
                    user it runs as; removed with the replica
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import Field, ValidationError

from nemo_kernel.clusters.base import ReplicaSpec
from nemo_kernel.domain import Model

CLUSTER_FILE = "cluster.json"
AGENT_FILE = "agent.json"
LOCK_FILE = "agent.lock"
AGENT_LOG = "agent.log"
REPLICAS_FILE = "replicas.json"
LOGS_DIR = "logs"
HOMES_DIR = "homes"


class ReplicaRecord(Model):
    """What survives an agent restart about one replica."""

    spec: ReplicaSpec
    ports: dict[str, int] = Field(default_factory=dict, description="port name -> host port")
    pid: int | None = None
    create_time: float | None = Field(default=None, description="psutil create_time, guards against pid reuse")
    restarts: int = 0
    started_at: datetime | None = None
    removed: bool = Field(default=False, description="forgotten once its process is gone")
    stop_pending: bool = Field(default=False, description="the recorded process must be stopped (removal or replace)")
    sandbox: str | None = Field(default=None, description="the sandbox mode the recorded process was started in")


class ReplicaTable(Model):
    """Content of ``replicas.json``."""

    replicas: list[ReplicaRecord] = Field(default_factory=list)


class AgentEndpoint(Model):
    """Content of ``agent.json``: how to reach the running agent."""

    url: str
    token: str
    pid: int
    create_time: float


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed, and make it the owner's only (0700), as it holds secrets."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a torn file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; set the final mode before any secret could be readable by others
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_replica_table(path: Path) -> ReplicaTable:
    """Read ``replicas.json``; a missing file is an empty table."""
    try:
        return ReplicaTable.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ReplicaTable()


def save_replica_table(path: Path, table: ReplicaTable) -> None:
    """Write ``replicas.json`` atomically, for the agent only: it holds every replica's environment."""
    write_atomically(path, table.model_dump_json().encode(), mode=0o600)


def read_agent_endpoint(path: Path) -> AgentEndpoint | None:
    """Read ``agent.json``; None when absent or unreadable (an agent that is still starting, or gone)."""
    try:
        return AgentEndpoint.model_validate_json(path.read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


def write_agent_endpoint(path: Path, endpoint: AgentEndpoint) -> None:
    """Write ``agent.json`` readable by its owner only: it holds the bearer token."""
    write_atomically(path, endpoint.model_dump_json().encode(), mode=0o600)
