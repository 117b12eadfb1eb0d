"""What a replica may see: a clean environment, and a sandbox that keeps the data directory out of its reach.

The data directory holds the control plane's secrets (admin credentials, the store with the issuer's keys,
module identities, every agent's token, every replica's environment). A workload is deployed by an
operator, so it must not read any of it, or an operator becomes admin. The agent picks one mode at start:

- ``user`` (the agent runs as root): replicas run as ``NEMO_REPLICA_USER`` (default ``nobody``; the
  launcher passes it to the agent) with no
  supplementary groups. The data directory is mode 0700, so that user cannot read it; in addition, when
  mount namespaces are available, the data directory (or the highest ancestor that user could not enter
  anyway) is covered with an empty tmpfs in which only the replica's own directory and working directory
  are bound back, so that its ``HOME`` resolves by path.
- ``namespace`` (the agent runs as another user): an unprivileged user and mount namespace covers the data
  directory with an empty tmpfs, binding back only the replica's own directory and working directory.
- ``none``: neither is available (or ``NEMO_REPLICA_USER`` is root); the agent logs a warning at start and
  the cluster's status says ``sandbox: none``.

Bubblewrap is not used: Debian's ``bwrap`` is not setuid and relies on the same unprivileged user
namespaces as ``namespace`` mode, so it would add a dependency and protect nothing more here.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nemo_kernel.clusters.base import ReplicaSpec
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.domain import working_dir_in_data_dir

log = logging.getLogger(__name__)

REPLICA_USER_ENV = "NEMO_REPLICA_USER"
DEFAULT_REPLICA_USER = "nobody"
# Debian's default PATH: replicas must not find programs through the PATH of whoever started `nemo up`
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFINE_SCRIPT = Path(__file__).with_name("confine.py")
_PROBE_TIMEOUT = 10.0


class SandboxMode(StrEnum):
    """How replicas are kept away from the data directory."""

    NONE = "none"
    USER = "user"
    NAMESPACE = "namespace"


class SandboxUnavailable(Exception):
    """The configured replica user does not exist: the agent refuses to run replicas unconfined."""


@dataclass(frozen=True)
class Sandbox:
    """How this agent starts replicas: the mode, the user to become and the directory to cover."""

    mode: SandboxMode
    data_dir: Path
    uid: int | None = None  # user mode: the replica user
    gid: int | None = None
    cover: Path | None = None  # covered by a tmpfs in the replica's mount namespace; None: no namespace
    python: str = sys.executable

    def check(self, spec: ReplicaSpec) -> None:
        """Refuse a working directory inside the data directory (except the workload's own checkout), or one that
        cannot be resolved (a replica could not start there anyway): raises :class:`ReplicaRejected`."""
        if spec.working_dir is None:
            return
        try:
            inside = working_dir_in_data_dir(spec.working_dir, self.data_dir, spec.workload)
        except (OSError, ValueError) as exc:  # ValueError: a NUL, which no path has
            # a refusal of this one replica, never an error of the agent: the engine goes on with the others
            raise ReplicaRejected(
                "unresolvable_working_dir",
                f"working_dir cannot be resolved: {exc.strerror if isinstance(exc, OSError) else exc}",
                {"working_dir": spec.working_dir},
            ) from None
        if inside:
            raise ReplicaRejected(
                "working_dir_in_data_dir",
                "working_dir is inside the control plane's data directory, which replicas cannot see",
                {"working_dir": spec.working_dir},
            )

    def prepare_home(self, home: Path) -> None:
        """Create the replica's own directory, owned by the user it runs as, readable by nobody else."""
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.uid is not None and self.gid is not None:
            os.chown(home, self.uid, self.gid)
        home.chmod(0o700)

    def argv(self, command: list[str], home: Path, cwd: Path) -> list[str]:
        """The argv that starts ``command`` in the sandbox (``command`` itself when there is none)."""
        if self.mode is SandboxMode.NONE:
            return command
        return [self.python, "-I", "-S", str(CONFINE_SCRIPT), json.dumps(self.plan(home, cwd)), *command]

    def plan(self, home: Path, cwd: Path) -> dict[str, object]:
        """What :mod:`confine` does before it execs the command (see there)."""
        keep: list[str] = []
        if self.cover is not None:
            wanted = {p for p in (home, Path(os.path.realpath(cwd))) if p.is_relative_to(self.cover)}
            # a directory inside another kept one comes along with it (and binding it after its parent
            # would create its mount point on the host's disk)
            keep = sorted(str(p) for p in wanted if not any(p != o and p.is_relative_to(o) for o in wanted))
        return {
            "userns": self.mode is SandboxMode.NAMESPACE,
            "hide": None if self.cover is None else str(self.cover),
            "keep": keep,
            "uid": self.uid,
            "gid": self.gid,
            "cwd": str(cwd),
        }


def detect(data_dir: Path, replica_user: str = DEFAULT_REPLICA_USER, python: str = sys.executable) -> Sandbox:
    """The strongest sandbox this agent can give its replicas; logs a warning when there is none.

    Raises :class:`SandboxUnavailable` when running as root and ``replica_user`` names no user.
    """
    data_dir = Path(os.path.realpath(data_dir))
    if os.geteuid() == 0:
        return _user_sandbox(data_dir, replica_user, python)
    sandbox = Sandbox(SandboxMode.NAMESPACE, data_dir, cover=data_dir, python=python)
    why = _probe(sandbox)
    if why is None:
        log.info("replicas run in a user and mount namespace that hides %s", data_dir)
        return sandbox
    log.warning(
        "NO SANDBOX: replicas run as this user and can read the data directory %s (its admin credentials and "
        "store): user namespaces are not available (%s). Run nemo up as root (replicas then run as %s) or "
        "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1).",
        data_dir,
        why,
        DEFAULT_REPLICA_USER,
    )
    return Sandbox(SandboxMode.NONE, data_dir, python=python)


def _user_sandbox(data_dir: Path, name: str, python: str) -> Sandbox:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise SandboxUnavailable(
            f"{REPLICA_USER_ENV}={name!r}: no such user; replicas would run as root. "
            f"Create the user or set {REPLICA_USER_ENV} to an unprivileged one."
        ) from None
    if user.pw_uid == 0:
        log.warning(
            "NO SANDBOX: %s=%s makes replicas run as root; they can read the data directory %s",
            REPLICA_USER_ENV,
            name,
            data_dir,
        )
        return Sandbox(SandboxMode.NONE, data_dir, python=python)
    cover = _first_closed_ancestor(data_dir, user.pw_uid, user.pw_gid) or data_dir
    sandbox = Sandbox(SandboxMode.USER, data_dir, user.pw_uid, user.pw_gid, cover, python)
    why = _probe(sandbox)
    if why is None:
        log.info("replicas run as %s (uid %s) in a mount namespace that hides %s", name, user.pw_uid, cover)
        return sandbox
    # the user alone keeps the secrets out of reach (data directory 0700); only HOME may be unreachable by path
    log.warning("replicas run as %s (uid %s) without a mount namespace (%s)", name, user.pw_uid, why)
    return Sandbox(SandboxMode.USER, data_dir, user.pw_uid, user.pw_gid, None, python)


def _first_closed_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The highest directory on the way to ``path`` (inclusive) that ``uid`` cannot enter, if any."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            return directory
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory if directory != Path("/") else None
    return None


def _probe(sandbox: Sandbox) -> str | None:
    """Start ``true`` in ``sandbox``; None if it worked, else why not."""
    true = shutil.which("true", path=SAFE_PATH)
    if true is None:
        return "no `true` command to probe with"
    try:
        result = subprocess.run(
            sandbox.argv([true], home=Path("/"), cwd=Path("/")),
            env={"PATH": SAFE_PATH},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode != 0:
        return result.stderr.strip().removeprefix("nemo sandbox: ") or f"exit code {result.returncode}"
    return None
