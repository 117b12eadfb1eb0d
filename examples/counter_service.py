"""A stateful demo service for NEMO migrations: a counter that hands its state over (standard library only).

Listens on 127.0.0.1:$PORT. ``POST /increment`` adds one and answers the new count, ``GET /`` answers the count,
``GET /healthz`` answers 200. It implements NEMO's application state hand-off protocol (README, "Moving
workloads"), so ``nemo migrate`` moves it with every acknowledged increment:

- ``GET /nemo/state``: the whole state (``{"count": N}``), header ``Nemo-State-Version`` (one per write);
- ``POST /nemo/state/freeze`` (header ``Nemo-State-Since: V``): from now on writes are refused with 503 and
  ``Nemo-State: frozen``; answers the increments since version V (``{"added": K}``, header ``Nemo-State-Base: V``);
- ``PUT /nemo/state``: imports a whole state or such a delta (a delta on another base is 409, one already applied
  is a no-op);
- ``POST /nemo/state/thaw``: writes are accepted again.

``COUNTER_IMPORT_DELAY`` (seconds) makes each import that long, as a large state would (tests use it to kill a
target mid-transfer).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

VERSION = "Nemo-State-Version"
BASE = "Nemo-State-Base"
SINCE = "Nemo-State-Since"


class Counter:
    """The state: a count, its version (writes so far) and whether writes are frozen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.version = 0
        self.frozen = False
        self.history: dict[int, int] = {}  # version -> count at that version, since the last whole export

    def increment(self) -> tuple[int, int] | None:
        with self.lock:
            if self.frozen:
                return None
            self.count += 1
            self.version += 1
            self.history[self.version] = self.count
            return self.count, self.version

    def export(self) -> tuple[bytes, int]:
        with self.lock:
            self.history = {self.version: self.count}  # a delta is asked relative to this export
            return json.dumps({"count": self.count}).encode(), self.version

    def freeze(self, since: int | None) -> tuple[bytes, int, int | None]:
        with self.lock:
            self.frozen = True
            if since is not None and since in self.history:
                added = self.count - self.history[since]
                return json.dumps({"added": added}).encode(), self.version, since
            return json.dumps({"count": self.count}).encode(), self.version, None

    def load(self, body: bytes, version: int, base: int | None) -> bool:
        with self.lock:
            if self.version == version and base is not None:
                return True  # this delta is already applied
            data = json.loads(body)
            if base is None:
                self.count = int(data["count"])
            elif base == self.version:
                self.count += int(data["added"])
            else:
                return False
            self.version = version
            self.history = {version: self.count}
            return True

    def thaw(self) -> None:
        with self.lock:
            self.frozen = False


STATE = Counter()


class Handler(BaseHTTPRequestHandler):
    """The counter's HTTP API and the hand-off protocol."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/":
            self._send(200, {"count": STATE.count, "version": STATE.version, "replica": os.environ.get("NEMO_REPLICA")})
        elif self.path == "/nemo/state":
            data, version = STATE.export()
            self._send_bytes(200, data, {VERSION: str(version)})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        self._body()
        if self.path == "/increment":
            done = STATE.increment()
            if done is None:
                self._send(
                    503, {"error": "frozen: moving to another replica"}, {"Nemo-State": "frozen", "Retry-After": "1"}
                )
            else:
                self._send(200, {"count": done[0], "version": done[1]})
        elif self.path == "/nemo/state/freeze":
            since = self.headers.get(SINCE)
            data, version, base = STATE.freeze(int(since) if since is not None else None)
            headers = {VERSION: str(version)}
            if base is not None:
                headers[BASE] = str(base)
            self._send_bytes(200, data, headers)
        elif self.path == "/nemo/state/thaw":
            STATE.thaw()
            self._send_bytes(204, b"", {})
        else:
            self._send(404, {"error": "not found"})

    def do_PUT(self) -> None:
        body = self._body()
        if self.path != "/nemo/state":
            self._send(404, {"error": "not found"})
            return
        delay = float(os.environ.get("COUNTER_IMPORT_DELAY", "0"))
        if delay > 0:
            time.sleep(delay)
        base = self.headers.get(BASE)
        try:
            ok = STATE.load(body, int(self.headers[VERSION]), int(base) if base is not None else None)
        except (KeyError, ValueError) as exc:
            self._send(400, {"error": f"bad state: {exc}"})
            return
        if ok:
            self._send_bytes(204, b"", {})
        else:
            self._send(409, {"error": f"delta on version {base}, state is at {STATE.version}"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # 200 requests a second would flood the replica's log


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"counter replica {os.environ.get('NEMO_REPLICA')} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
