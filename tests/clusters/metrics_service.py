"""A replica for the collection tests (standard library only: replicas run the system's python3).

Serves ``/healthz`` and, on ``/metrics``, what ``METRICS_MODE`` says:
- ``good``: its own counter, plus a forged ``nemo_`` series and a series claiming another replica's labels;
- ``garbage``: bytes that are not the text format; ``slow``: answers after 30 s; ``huge``: 3 MiB of series.
``BURN=1`` keeps one core busy in a thread, so its CPU time grows; ``BURN_CHILD=1`` leaves that to a child process
(started before it listens), so only the whole process tree's CPU time grows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("METRICS_MODE", "good")


def page() -> bytes:
    if MODE == "garbage":
        return b"\x00\x01 this is {not} the = exposition format\n}{\n"
    if MODE == "huge":
        return b"".join(b'app_filler{i="%d"} 1\n' % i for i in range(200_000))
    return (
        b"# HELP app_jobs_total Jobs done\n"
        b"# TYPE app_jobs_total counter\n"
        b'app_jobs_total{queue="fast"} 42\n'
        b'app_jobs_total{queue="slow",replica="someone-else",cluster="elsewhere"} 7\n'
        b"# TYPE nemo_replica_cpu_seconds_total counter\n"
        b"nemo_replica_cpu_seconds_total 123456789\n"
        b"# TYPE nemo_slo_latency gauge\n"
        b"nemo_slo_latency 0.001\n"
    )


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/metrics":
            if MODE == "slow":
                time.sleep(30)
            body = page()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def burn() -> None:
    while True:
        sum(range(10_000))


if __name__ == "__main__":
    if os.environ.get("BURN") == "1":
        threading.Thread(target=burn, daemon=True).start()
    if os.environ.get("BURN_CHILD") == "1":
        subprocess.Popen([sys.executable, "-c", "while True: sum(range(10_000))"])
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
