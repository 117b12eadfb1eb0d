"""Real Prometheus servers and a synthetic exporter on loopback, for the analytics engine's tests.

``PrometheusServer`` runs Debian's ``/usr/bin/prometheus`` (2.42) with a config the test writes, on a free port with
a data folder of its own; ``Exporter`` serves whatever exposition text a callable returns, the way Kepler or a
workload would. Both wait for conditions (ready, a query answering), never for a time.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (httpx.HTTPError, OSError, ValueError, KeyError, IndexError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)  # poll interval while waiting for the condition, not a synchronisation
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class PrometheusServer:
    """One Prometheus process: ``url``, ``write_config``/``reload``, ``query``; stopped by :meth:`stop`."""

    def __init__(
        self, root: Path, config: Mapping[str, Any], data: Path | None = None, port: int | None = None
    ) -> None:
        """Start Prometheus with ``config``, storing in ``data`` (default ``root/data``; a backfilled folder), on
        ``port`` (default: a free one; given when a stack must know the URL before Prometheus starts)."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = root / "prometheus.yml"
        self.write_config(config)
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={data or root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, f"Prometheus at {self.url} to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {(self.root / 'prometheus.log').read_text()[-2000:]}")
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the config file (read at start and on :meth:`reload`)."""
        self.config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def reload(self) -> None:
        """Make Prometheus read its config file again."""
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for_series(self, expr: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` answers at least ``count`` series."""
        return list(wait_for(lambda: len(r := self.query(expr)) >= count and r, f"{expr} in Prometheus", timeout))

    def stop(self) -> None:
        """Terminate Prometheus and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def scrape_job(name: str, target: str, interval: str = "1s", **extra: Any) -> dict[str, Any]:
    """A scrape job of one target (``host:port``) every ``interval``."""
    return {
        "job_name": name,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{"targets": [target]}],
        **extra,
    }


class Exporter:
    """An HTTP server on loopback whose ``/metrics`` answers ``render()`` (exposition text), like an exporter."""

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = render().encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_prometheus(
    root: Path, config: Mapping[str, Any], data: Path | None = None, port: int | None = None
) -> Iterator[PrometheusServer]:
    """A Prometheus for the duration of the block."""
    server = PrometheusServer(root, config, data, port)
    try:
        yield server
    finally:
        server.stop()
