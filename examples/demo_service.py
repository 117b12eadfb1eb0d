"""A tiny HTTP service to run as a NEMO workload (standard library only).

Listens on 127.0.0.1:$PORT. ``GET /`` answers who it is (replica, node, workload, pid), ``GET /healthz``
answers 200, ``GET /metrics`` its own Prometheus series (requests served; declare it with
``deployment.metrics: {path: /metrics, port: http}`` and the cluster's agent collects it). SIGTERM stops it cleanly.
The local driver sets PORT and NEMO_* for every replica.

Fault injection, so that an SLA breach can be caused on purpose (demos, PPEF's tests): ``GET /`` waits
``latency_ms``, fails with 500 for a share ``error_rate`` of requests, and a thread burns ``cpu_burn`` of a core.
Set them at start with ``DEMO_LATENCY_MS``, ``DEMO_ERROR_RATE``, ``DEMO_CPU_BURN``, and while it runs with
``POST /knobs`` (JSON with any of the three; ``GET /knobs`` reads them) when ``DEMO_KNOBS=1`` allows it.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SERVICE = os.environ.get("DEMO_SERVICE_NAME", "demo-service")
_served = 0  # requests to / (a plain int: the GIL makes += atomic enough for a demo's counter)
KNOB_BOUNDS = {"latency_ms": 60_000.0, "error_rate": 1.0, "cpu_burn": 1.0}
"""Each knob is a finite number in [0, bound]."""


def _knob(name: str, text: str | None) -> float:
    value = float(text) if text else 0.0
    if not math.isfinite(value) or not 0 <= value <= KNOB_BOUNDS[name]:
        raise ValueError(f"{name} must be a number in [0, {KNOB_BOUNDS[name]:g}]")
    return value


KNOBS = {
    "latency_ms": _knob("latency_ms", os.environ.get("DEMO_LATENCY_MS")),
    "error_rate": _knob("error_rate", os.environ.get("DEMO_ERROR_RATE")),
    "cpu_burn": _knob("cpu_burn", os.environ.get("DEMO_CPU_BURN")),
}
KNOBS_ENABLED = os.environ.get("DEMO_KNOBS") == "1"


def burn_cpu() -> None:
    """Keep ``cpu_burn`` of a core busy, in 100 ms periods."""
    while True:
        share = KNOBS["cpu_burn"]
        busy_until = time.monotonic() + 0.1 * share
        while time.monotonic() < busy_until:
            pass
        time.sleep(0.1 * (1 - share))  # the idle part of the period


class Handler(BaseHTTPRequestHandler):
    """Answers ``/`` with the replica's identity and ``/healthz`` with ok."""

    def do_GET(self) -> None:
        global _served
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/knobs" and KNOBS_ENABLED:
            self._send(200, KNOBS)
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
            time.sleep(KNOBS["latency_ms"] / 1000)  # the injected latency
            if random.random() < KNOBS["error_rate"]:
                self._send(500, {"error": "injected failure"})
                return
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

    def do_POST(self) -> None:
        if self.path != "/knobs" or not KNOBS_ENABLED:
            self._send(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= 1024:
                raise ValueError("body must be a JSON object of at most 1024 bytes")
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict) or not body or set(body) - set(KNOB_BOUNDS):
                raise ValueError(f"body must name some of {sorted(KNOB_BOUNDS)}")
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in body.values()):
                raise ValueError("knobs are numbers")
            new = {name: _knob(name, repr(float(value))) for name, value in body.items()}
        except ValueError as exc:  # json.JSONDecodeError is one
            self._send(422, {"error": {"code": "invalid", "message": str(exc), "details": {}}})
            return
        KNOBS.update(new)
        self._send(200, KNOBS)

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

    threading.Thread(target=burn_cpu, daemon=True, name="cpu-burn").start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{SERVICE} replica {os.environ.get('NEMO_REPLICA')} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    print(f"{SERVICE} stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
