"""A tiny HTTP service to run as a NEMO workload (standard library only).

Listens on 127.0.0.1:$PORT. ``GET /`` answers who it is (replica, node, workload, pid), ``GET /healthz``
answers 200, ``GET /metrics`` its own Prometheus series (requests served; declare it with
``deployment.metrics: {path: /metrics, port: http}`` and the cluster's agent collects it). SIGTERM stops it cleanly.
The local driver sets PORT and NEMO_* for every replica.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SERVICE = os.environ.get("DEMO_SERVICE_NAME", "demo-service")
_served = 0  # requests to / (a plain int: the GIL makes += atomic enough for a demo's counter)


class Handler(BaseHTTPRequestHandler):
    """Answers ``/`` with the replica's identity and ``/healthz`` with ok."""

    def do_GET(self) -> None:
        global _served
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/metrics":
            data = (
                "# HELP demo_requests_total Requests to /\n"
                "# TYPE demo_requests_total counter\n"
                f"demo_requests_total {_served}\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/":
            _served += 1
            self._send(
                200,
                {
                    "service": SERVICE,
                    "replica": os.environ.get("NEMO_REPLICA"),
                    "node": os.environ.get("NEMO_NODE"),
                    "workload": os.environ.get("NEMO_WORKLOAD"),
                    "cluster": os.environ.get("NEMO_CLUSTER"),
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # health checks and scrapes every few seconds would flood the replica's log
        if self.path not in ("/healthz", "/metrics"):
            super().log_message(format, *args)


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run outside the serving thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{SERVICE} replica {os.environ.get('NEMO_REPLICA')} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    print(f"{SERVICE} stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
