"""Running a command the way a person does: in a terminal (a pty) of a given width, or piped."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

from tests.stack import NEMO, ROOT

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def in_terminal(args: list[str], env: dict[str, str], columns: int = 80, timeout: float = 60.0) -> tuple[int, str]:
    """Exit code and screen text (colours removed) of `nemo ARGS` in a terminal ``columns`` wide.

    Rich takes the width from the terminal, unless COLUMNS says otherwise: neither COLUMNS nor LINES is passed on.
    """
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([*NEMO, *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"nemo {' '.join(args)} did not finish in {timeout}s: {b''.join(chunks)!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return code, _ESCAPE.sub("", text)


def piped(args: list[str], env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`nemo ARGS` with its output going to a pipe, as in `nemo ... | grep`."""
    return subprocess.run([*NEMO, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
