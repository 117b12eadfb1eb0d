"""A running `nemo up` watched by real Prometheus servers in the seed's federation layout (section 6.4).

One Prometheus per local cluster scrapes that cluster's agent; one federating Prometheus reads theirs through
their ``/federate`` and NEMO's own ``/federate`` (the gateway's per-workload series); every config is the one
``nemo monitoring prometheus-config`` prints. The demo workload runs, exposed through the gateway, with a second
route whose requests a plugin refuses (errors). Shared by the tests at session scope (``tests/metrics/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.metrics.prometheus_server import PrometheusServer, running_prometheus, wait_for
from tests.stack import HTTP, ROOT, Stack, running_stack

INTERVAL = "1s"
CLUSTERS = ("cloud-eu", "edge-madrid", "iot-gateway")


@dataclass
class MonitoredStack:
    """The stack, each cluster's Prometheus and the federating one."""

    stack: Stack
    clusters: dict[str, PrometheusServer]
    federating: PrometheusServer

    def traffic(self, ok: int = 20, refused: int = 5) -> None:
        """Requests through the gateway: answered by the demo workload, and refused by a plugin."""
        with httpx.Client(base_url=self.stack.gateway_url, timeout=10) as http:
            for _ in range(ok):
                http.get("/demo/")
            for _ in range(refused):
                assert http.get("/demo-blocked/").status_code == 403


def _config(stack: Stack, secrets: Path, *args: str) -> dict[str, object]:
    out = stack.cli("monitoring", "prometheus-config", "--secrets-dir", str(secrets), "--interval", INTERVAL, *args)
    loaded: dict[str, object] = yaml.safe_load(out.stdout)
    return loaded


@contextmanager
def monitored_stack(root: Path) -> Iterator[MonitoredStack]:
    """Start everything, wait until the federating Prometheus holds replica and workload series; stop it all after."""
    with running_stack(root / "data", {"NEMO_METRICS_INTERVAL": "1"}) as stack, ExitStack() as servers:
        stack.cli("workload", "apply", "-f", str(ROOT / "examples" / "demo-workload.yaml"))
        stack.cli("gateway", "expose", "demo", "--path", "/demo")
        blocked = {"name": "default-demo-blocked", "service": "default-demo", "paths": ["/demo-blocked"]}
        assert stack.api("POST", "/gateway/routes", json=blocked).status_code == 201
        plugin = {"name": "ip-restriction", "route": "default-demo-blocked", "config": {"deny": ["127.0.0.0/8"]}}
        assert stack.api("POST", "/gateway/plugins", json=plugin).status_code == 201
        secrets = root / "secrets"
        clusters = {}
        for name in CLUSTERS:
            config = _config(stack, secrets, "--layout", "federation", "--cluster", name)
            clusters[name] = servers.enter_context(running_prometheus(root / f"prometheus-{name}", config))
        federate = [f"--federate={name}={server.url}" for name, server in clusters.items()]
        config = _config(stack, secrets, "--layout", "federation", *federate)
        federating = servers.enter_context(running_prometheus(root / "prometheus-federating", config))
        monitored = MonitoredStack(stack, clusters, federating)
        wait_for(lambda: _demo_answers(stack), "the demo workload to answer through the gateway", timeout=120)
        monitored.traffic()
        federating.wait_for_series('nemo_replica_cpu_seconds_total{workload="demo"}', count=3, timeout=120)
        federating.wait_for_series('nemo_workload_requests_total{workload="demo"}', timeout=120)
        yield monitored


def _demo_answers(stack: Stack) -> bool:
    return HTTP.get(f"{stack.gateway_url}/demo/", timeout=5).status_code == 200
