"""The gateway `nemo up` runs: its configuration survives restarts (it is in the store), the gateway process
never outlives `nemo up` (SIGTERM, SIGKILL), and a deployed workload is reachable through it."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml

from tests.stack import HTTP, ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """A real HTTP upstream on loopback that echoes the path and Authorization it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _gateway_process(stack: Stack) -> psutil.Process:
    assert stack.proc is not None
    (gateway,) = [c for c in psutil.Process(stack.proc.pid).children() if _is_gateway(c)]
    return gateway


def _is_gateway(proc: psutil.Process) -> bool:
    try:
        return "nemo_kernel.access.gateway" in " ".join(proc.cmdline()) and not _gone(proc)
    except psutil.Error:  # exited (or a zombie) while we looked
        return False


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _echo(stack: Stack, path: str) -> dict[str, str] | None:
    response = HTTP.get(f"{stack.gateway_url}{path}", headers={"Authorization": "Bearer secret"}, timeout=5)
    return response.json() if response.status_code == 200 else None


def test_config_survives_restarts_and_gateway_dies_with_nemo_up(tmp_path: Path, upstream: str) -> None:
    config = {
        "services": [{"name": "echo", "url": f"{upstream}/base"}],
        "routes": [{"name": "echo", "service": "echo", "paths": ["/echo"]}],
    }
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump(config))
    # NEMO_GATEWAY_CONFIG is imported on the first start only, next to the seeded nemo-api service.
    with running_stack(tmp_path / "data", {"NEMO_GATEWAY_CONFIG": str(file)}) as stack:
        seen = wait_for(lambda: _echo(stack, "/echo/x"), 20, "the imported route")
        # strip_path, the service's base path, and no Authorization for a service that does not ask for it
        assert seen == {"path": "/base/x", "authorization": None}
        names = [s["name"] for s in stack.api("GET", "/gateway/services").json()]
        assert names == ["echo", "nemo-api"]
        stack.api("PUT", "/gateway/services/echo", json={"url": upstream, "forward_authorization": True})
        wait_for(lambda: (_echo(stack, "/echo/y") or {}).get("path") == "/y", 5, "the change to apply")
        assert _echo(stack, "/echo/y") == {"path": "/y", "authorization": "Bearer secret"}
        first_gateway, first_api = stack.gateway_url, stack.url

        crashed = _gateway_process(stack)
        crashed.kill()  # a gateway that dies is started again on the same socket, with the stored config
        # deadlines for a loaded machine (a new gateway is a new Python process); quick when the machine is not
        wait_for(lambda: _gateway_process(stack).pid != crashed.pid, 60, "a new gateway process")
        assert wait_for(lambda: _echo(stack, "/echo/w"), 60, "the new gateway to serve")["path"] == "/w"

        gateway = _gateway_process(stack)
        assert stack.stop(signal.SIGTERM) == 0
        assert _gone(gateway), "the gateway outlived a stopped nemo up"

        file.write_text(yaml.safe_dump({"services": [], "routes": []}))  # must not be imported again
        stack.start()
        assert stack.gateway_url != first_gateway and stack.url != first_api  # both ports are picked at random
        assert wait_for(lambda: _echo(stack, "/echo/z"), 20, "the stored route after restart")["path"] == "/z"
        # nemo-api follows the API to its new port
        (api_service,) = [s for s in stack.api("GET", "/gateway/services").json() if s["name"] == "nemo-api"]
        assert api_service["url"] == stack.url
        assert HTTP.get(f"{stack.gateway_url}/api/v1/clusters", timeout=5).status_code == (
            HTTP.get(f"{stack.url}/api/v1/clusters", timeout=5).status_code
        )

        gateway = _gateway_process(stack)
        stack.proc.kill()  # type: ignore[union-attr]
        stack.proc.wait(10)  # type: ignore[union-attr]
        stack.proc = None
        wait_for(lambda: _gone(gateway), 10, "the gateway to exit after SIGKILL of nemo up")


def test_workload_exposed_through_the_gateway(tmp_path: Path) -> None:
    env = {"NEMO_RECONCILE_INTERVAL": "0.5", "NEMO_HEARTBEAT_INTERVAL": "0.5"}
    with running_stack(tmp_path / "data", env) as stack:
        stack.cli("gateway", "expose", "demo", "--path", "/demo")  # before it runs: 503, no replica yet
        unavailable = wait_for(
            lambda: (r := HTTP.get(f"{stack.gateway_url}/demo/", timeout=5)).status_code == 503 and r, 5, "a 503"
        )
        assert unavailable.json()["error"]["code"] == "no_upstream"
        demo = ROOT / "examples" / "demo-workload.yaml"
        stack.cli("workload", "apply", "-f", str(demo), "--wait", "--timeout", "60")
        replicas = {r["id"] for r in stack.api("GET", "/workloads/demo").json()["replicas"] if r["phase"] == "Running"}
        assert len(replicas) == 3

        answered: set[str] = set()

        def every_replica_answered() -> bool:
            response = HTTP.get(f"{stack.gateway_url}/demo/", timeout=5)
            if response.status_code == 200:
                answered.add(response.json()["replica"])
            return answered == replicas

        wait_for(every_replica_answered, 30, "round-robin over the three replicas", interval=0.05)
        listed = stack.cli_json("gateway", "services")
        assert {"name": "default-demo", "workload": "default/demo"}.items() <= next(
            s for s in listed if s["name"] == "default-demo"
        ).items()
        stack.cli("gateway", "unexpose", "demo")
        wait_for(lambda: HTTP.get(f"{stack.gateway_url}/demo/", timeout=5).status_code == 404, 5, "the route gone")
        stack.cli("workload", "delete", "demo")
        wait_for(lambda: stack.api("GET", "/workloads/demo").status_code == 404, 30, "the workload to be deleted")
