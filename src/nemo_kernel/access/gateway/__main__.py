"""``python -m nemo_kernel.access.gateway --config FILE [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging

from nemo_kernel.access.gateway.app import run_gateway
from nemo_kernel.access.gateway.config import load_gateway_config


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load and validate the configuration, serve."""
    parser = argparse.ArgumentParser(prog="nemo-gateway", description="NEMO gateway (Kong-like reverse proxy)")
    parser.add_argument("--config", required=True, help="declarative YAML configuration")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--access-log", action="store_true", help="write the JSON access log to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.access_log:
        logging.getLogger("nemo.gateway.access").setLevel(logging.INFO)
    run_gateway(load_gateway_config(args.config), args.host, args.port)


if __name__ == "__main__":
    main()
