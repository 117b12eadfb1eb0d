"""The demo service's fault-injection knobs, on the real process: errors, latency and CPU burn set through
``POST /knobs`` (only when ``DEMO_KNOBS=1``), bad values refused with 422 and nothing changed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import HTTP, wait_for

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo_service.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(DEMO)],
        env={**os.environ, "PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: HTTP.get(f"{url}/healthz", timeout=1).status_code == 200, 10, "the demo service")
    return proc, url


@pytest.fixture
def demo() -> Iterator[str]:
    proc, url = _start({"DEMO_KNOBS": "1"})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_knobs_cause_errors_and_latency_and_can_be_undone(demo: str) -> None:
    assert HTTP.get(demo + "/", timeout=5).status_code == 200
    assert HTTP.post(demo + "/knobs", json={"error_rate": 1}, timeout=5).json()["error_rate"] == 1.0
    assert {HTTP.get(demo + "/", timeout=5).status_code for _ in range(5)} == {500}
    HTTP.post(demo + "/knobs", json={"error_rate": 0, "latency_ms": 5000}, timeout=5)
    with pytest.raises(httpx.ReadTimeout):  # five seconds of injected latency against a 0.5 s client timeout
        HTTP.get(demo + "/", timeout=0.5)
    knobs = HTTP.post(demo + "/knobs", json={"latency_ms": 0, "cpu_burn": 0.5}, timeout=5).json()
    assert knobs == {"latency_ms": 0.0, "error_rate": 0.0, "cpu_burn": 0.5}
    assert HTTP.get(demo + "/", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"latency_ms": -1}, {"cpu_burn": "1"}, {"cpu_burn": True}, {"shoe_size": 1}, {}, [1]],
)
def test_bad_knobs_are_refused_and_change_nothing(demo: str, body: object) -> None:
    response = HTTP.post(demo + "/knobs", json=body, timeout=5)
    assert response.status_code == 422
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert HTTP.get(demo + "/knobs", timeout=5).json() == {"latency_ms": 0.0, "error_rate": 0.0, "cpu_burn": 0.0}


def test_not_a_number_is_refused(demo: str) -> None:
    response = HTTP.post(demo + "/knobs", content=b'{"latency_ms": NaN}', timeout=5)
    assert response.status_code == 422


def test_knobs_are_off_unless_allowed_but_the_environment_sets_them() -> None:
    proc, url = _start({"DEMO_ERROR_RATE": "1"})
    try:
        assert HTTP.post(url + "/knobs", json={"error_rate": 0}, timeout=5).status_code == 404
        assert HTTP.get(url + "/", timeout=5).status_code == 500
    finally:
        proc.terminate()
        proc.wait(timeout=10)
