"""What each process loads: the API without aiohttp, the gateway without FastAPI, aio_pika only with RabbitMQ.

``lint-imports`` checks the import graph (pyproject.toml); these tests check what a process really has in
``sys.modules``, which also catches an import the graph cannot see. Each runs in a fresh interpreter, since this
one has loaded everything the other tests use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

WATCHED = ("aiohttp", "fastapi", "starlette", "aio_pika", "aiormq", "kubernetes")


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Which of the watched top-level packages a fresh interpreter has loaded after running ``code``."""
    report = f"import json, sys\nprint(json.dumps([m for m in {WATCHED!r} if m in sys.modules]))"
    probe = f"{textwrap.dedent(code)}\n{report}"
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_the_api_loads_neither_aiohttp_nor_the_amqp_client() -> None:
    loaded = loaded_after("import nemo_kernel.api.app")
    assert "fastapi" in loaded  # the probe sees what the API does load
    assert not loaded & {"aiohttp", "aio_pika", "aiormq"}


def test_nemo_up_loads_no_aiohttp_the_gateway_is_its_own_process() -> None:
    assert "aiohttp" not in loaded_after("import nemo_kernel.cli.up")


def test_the_gateway_loads_no_fastapi() -> None:
    loaded = loaded_after(
        """
        import nemo_kernel.access.gateway.__main__
        import nemo_kernel.access.gateway.app
        import nemo_kernel.access.gateway.live
        import nemo_kernel.access.gateway.plugins
        """
    )
    assert "aiohttp" in loaded
    assert not loaded & {"fastapi", "starlette"}


def test_the_control_plane_loads_the_amqp_client_only_for_rabbitmq(tmp_path: Path) -> None:
    pick = """
        import os
        from nemo_kernel.config import Settings
        from nemo_kernel.orchestrator import ControlPlane
        plane = ControlPlane(Settings())
        assert type(plane.bus).__name__ == os.environ["EXPECTED_BUS"], type(plane.bus)
        """
    in_process = {"NEMO_DATA_DIR": str(tmp_path / "a"), "NEMO_BUS_URL": "", "EXPECTED_BUS": "InProcessBus"}
    assert not loaded_after(pick, in_process) & {"aio_pika", "aiormq"}
    rabbit = {
        "NEMO_DATA_DIR": str(tmp_path / "b"),
        "NEMO_BUS_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "EXPECTED_BUS": "RabbitMqBus",
    }
    assert {"aio_pika", "aiormq"} <= loaded_after(pick, rabbit)
