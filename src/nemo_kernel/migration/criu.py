"""Whether whole-process checkpoints (CRIU) can be used here: ``criu check`` decides, once per process."""

from __future__ import annotations

import functools
import shutil
import subprocess


@functools.cache
def checkpoint_support() -> str:
    """One line saying whether CRIU can checkpoint processes on this machine, and why not.

    The answer is asked of ``criu check`` itself (never assumed): Debian's CRIU 3.17 fails on this kernel, and
    stateful moves of local workloads then use the application state hand-off.
    """
    criu = shutil.which("criu")
    if criu is None:
        return "CRIU unavailable: criu is not installed; stateful moves use the application state hand-off"
    try:
        done = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"CRIU unavailable: criu check could not run ({exc}); stateful moves use the application state hand-off"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        reason = last[-1][:200] if last else f"exit code {done.returncode}"
        return f"CRIU unavailable: criu check failed ({reason}); stateful moves use the application state hand-off"
    return "CRIU available (criu check passed)"
