"""Starts one replica inside its sandbox, then becomes the replica's command (``exec``).

Run by the agent as ``python -I -S confine.py PLAN_JSON COMMAND...`` in the replica's new session. It
imports the standard library only (``-S`` skips site-packages, so it starts in milliseconds) and keeps its
pid: the pid the agent records is the replica's. The plan (a JSON object) says:

- ``hide``: a directory to cover with an empty tmpfs in a private mount namespace (the data directory, or
  the highest of its ancestors the replica's user could not enter anyway), ``null`` for no mount namespace;
- ``keep``: directories under ``hide`` bound back at their own paths (the replica's own directory, its
  working directory);
- ``userns``: first enter a new user namespace that maps the caller's uid and gid to themselves (how an
  unprivileged agent gets a mount namespace); capabilities in it end at ``exec``, so the replica cannot
  unmount the cover, and mounts it would copy into a namespace of its own are locked together;
- ``uid``/``gid``: the user to become (an agent running as root), after the mounts, with no extra groups;
- ``cwd``: the directory to start in, entered after the mounts (so it resolves inside the sandbox) and
  before the user changes.

Any failure before ``exec`` prints one line starting with ``nemo sandbox:`` and exits with 126 (setup) or
127 (command not found): a replica never runs outside the sandbox it was planned for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class SetupFailed(Exception):
    """The sandbox could not be set up; the replica must not start."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupFailed(f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None
    )
    _check(result, f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)


def _enter_user_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(user, mount)")
    # setgroups must be denied before an unprivileged process may write its gid_map
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _cover(hide: str, keep: list[str]) -> None:
    # private: nothing mounted here leaks back to the host, and nothing of the host's later mounts comes in
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    # the directories to keep are opened before the cover hides them, and bound back from those handles
    handles = []
    for path in keep:
        if os.path.realpath(path) != path:
            # the agent resolved it; a symlink appearing since must not redirect the bind elsewhere
            raise SetupFailed(f"{path} is no longer the directory the agent checked")
        handles.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
    _mount("tmpfs", hide, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path, handle in handles:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
        os.close(handle)
    # the cover itself read-only: the replica cannot plant files where the data directory appears to be
    _mount("none", hide, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def main(argv: list[str]) -> None:
    """Set up the sandbox described by ``argv[1]`` and exec ``argv[2:]``."""
    plan = json.loads(argv[1])
    command = argv[2:]
    try:
        if plan.get("userns"):
            _enter_user_namespace()
        elif plan.get("hide"):
            _check(_libc.unshare(CLONE_NEWNS), "unshare(mount)")
        if plan.get("hide"):
            _cover(plan["hide"], list(plan.get("keep", [])))
        # before the user changes, so a working directory under a parent that user cannot enter still works
        os.chdir(plan["cwd"])
        if plan.get("uid") is not None:
            _become(int(plan["uid"]), int(plan["gid"]))
    except (OSError, SetupFailed) as exc:
        print(f"nemo sandbox: cannot set up the replica's sandbox: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(126) from None
    try:
        os.execvp(command[0], command)  # noqa: S606 (argv as the descriptor gives it; no shell involved)
    except OSError as exc:
        print(f"nemo sandbox: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        raise SystemExit(127 if isinstance(exc, FileNotFoundError) else 126) from None


if __name__ == "__main__":
    main(sys.argv)
