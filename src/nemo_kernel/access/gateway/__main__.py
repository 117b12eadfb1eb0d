"""``python -m nemo_kernel.access.gateway (--config FILE | --database-url URL) [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys

from nemo_kernel.access.gateway.app import run_gateway, serve_application
from nemo_kernel.access.gateway.config import DATABASE_URL_ENV, load_gateway_config

_PR_SET_PDEATHSIG = 1


def die_with(parent_pid: int) -> None:
    """Have the kernel send SIGTERM when ``parent_pid`` (our parent) dies; exit now if it already has."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # Checked after prctl: a parent that died before it leaves us reparented, which this catches.
    if os.getppid() != parent_pid:
        sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load the configuration (a file, or the database kept up to date), serve."""
    parser = argparse.ArgumentParser(prog="nemo-gateway", description="NEMO gateway (Kong-like reverse proxy)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="declarative YAML configuration")
    source.add_argument(
        "--database-url", default=os.environ.get(DATABASE_URL_ENV),
        help=f"serve the configuration stored in this database, live (default: ${DATABASE_URL_ENV})",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited, listening socket")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this parent process is gone")
    parser.add_argument(
        "--wake-fd", type=int, default=None, help="an inherited pipe the store's writer writes to after each commit"
    )
    parser.add_argument("--access-log", action="store_true", help="write the JSON access log to stderr")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        die_with(args.parent_pid)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.access_log:
        logging.getLogger("nemo.gateway.access").setLevel(logging.INFO)
    if not args.config and not args.database_url:
        parser.error(f"one of --config, --database-url (or ${DATABASE_URL_ENV}) is required")
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    if args.config:
        run_gateway(load_gateway_config(args.config), args.host, args.port, sock=sock)
        return
    from nemo_kernel.access.gateway.live import StoredGateway
    from nemo_kernel.store import Database

    live = StoredGateway(
        Database(args.database_url),
        parent_pid=args.parent_pid,
        on_orphaned=lambda: os.kill(os.getpid(), signal.SIGTERM),
        wake_fd=args.wake_fd,
    )
    serve_application(live.application(), args.host, args.port, sock=sock)


if __name__ == "__main__":
    main()
