"""Running the real stack in tests: `nemo up` as a process, the CLI as a process, cleanup of everything."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from nemo_kernel.clusters.local.launcher import AGENT_MODULE
from nemo_kernel.clusters.local.processes import live_process
from nemo_kernel.clusters.local.state import AGENT_FILE, REPLICAS_FILE, load_replica_table, read_agent_endpoint

ROOT = Path(__file__).resolve().parents[1]
NEMO = [sys.executable, "-m", "nemo_kernel.cli"]
T = TypeVar("T")

#: The client of the suite's own HTTP calls to a stack (its API, its issuer, its gateway). ``httpx.get()`` builds a
#: client per call, and with it an SSL context that loads the CA bundle: about 45 ms of CPU each, which on the shared
#: 2-core machine made most of the time of the modules that call the API a few hundred times. No keep-alive: every
#: call opens its own connection as before, so none meets a connection a stopped or restarted server closed. No
#: cookies kept either: a call that sends no token must send no credential at all, whatever an earlier test received.
#: Calls without a timeout of their own wait up to 30 s (httpx's default is 5): a stack's first answers (imports,
#: the OpenAPI schema) take 0.5 s on a quiet machine and more than 5 s under a load of 8 on two cores. A bound on a
#: failure, never a wait for a condition: the answer is used as soon as it comes.
HTTP = httpx.Client(
    timeout=30.0,
    limits=httpx.Limits(max_keepalive_connections=0),
    cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
)


class Auth(enum.Enum):
    """Which token :meth:`Stack.api` sends when none is given."""

    ADMIN = "admin"


#: The default of :meth:`Stack.api`: a valid token of the stack's admin client.
ADMIN = Auth.ADMIN


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of an API error response, checked to have ``status`` and ``code``."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


class Stack:
    """One `nemo up` with its own data directory, started and stopped like a user would."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        # The developer's own NEMO_* settings (an API URL, a token, client credentials, an external issuer...) must
        # not leak into a test's stack or its CLI; only the test suite's own NEMO_TEST_* knobs pass through.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_") or k.startswith("NEMO_TEST_")}
        self.env = {
            **inherited, "NEMO_DATA_DIR": str(data_dir), "NEMO_API_PORT": "0", "NEMO_GATEWAY_PORT": "0", **(env or {})
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._admin_token: tuple[str, str, float] | None = None  # (API url, token, expiry)
        self.gateway_url = ""

    def start(self, timeout: float = 180.0) -> None:
        """Start `nemo up` and wait until it is ready.

        A deadline, not a delay: ready in seconds on a quiet machine, `nemo up` took over a minute with the suite's
        three processes on a shared 2-core machine at a load average of 20 (a restart after SIGKILL most of all)."""
        endpoint = self.data_dir / "endpoint.json"
        endpoint.unlink(missing_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}-nemo-up.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*NEMO, "up"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "nemo up exited"
            info = json.loads(endpoint.read_text())
            if info["pid"] != self.proc.pid:
                return False
            self.url = info["url"]
            self.gateway_url = info.get("gateway", "")
            return HTTP.get(f"{self.url}/readyz", timeout=2).status_code == 200

        wait_for(ready, timeout, "nemo up to be ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop `nemo up` with ``sig``; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    @property
    def issuer(self) -> str:
        """The built-in issuer of this stack (the API's own ``/realms/nemo``)."""
        return f"{self.url}/realms/nemo"

    def admin_credentials(self) -> dict[str, str]:
        """The admin client's credentials `nemo up` wrote on first start."""
        return dict(json.loads((self.data_dir / "admin-credentials.json").read_text()))

    def _grant(self, client_id: str, secret: str) -> dict[str, Any]:
        response = HTTP.post(
            f"{self.issuer}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def token(self, client_id: str, secret: str) -> str:
        """A fresh access token from the client_credentials grant of this stack's issuer."""
        return str(self._grant(client_id, secret)["access_token"])

    def admin_token(self) -> str:
        """A valid admin token, reused while it has a minute left and the stack has not moved to another URL."""
        cached = self._admin_token
        if cached is None or cached[0] != self.url or cached[2] - time.time() < 60:
            creds = self.admin_credentials()
            granted = self._grant(creds["client_id"], creds["client_secret"])
            cached = self._admin_token = (self.url, granted["access_token"], time.time() + granted["expires_in"])
        return cached[1]

    def api(self, method: str, path: str, *, token: str | Auth | None = ADMIN, **kwargs: Any) -> httpx.Response:
        """Call the API over HTTP, as the admin client by default; ``token=None`` sends no token."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.admin_token() if token is ADMIN else token}"
        return HTTP.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=10, **kwargs)

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `nemo ARGS` the way a user does (finds this stack through the data directory); ``input`` goes to
        its stdin and ``env`` adds to its environment."""
        env = {**self.env, "COLUMNS": "200", **(env or {})}
        done = subprocess.run(
            [*NEMO, *args], env=env, input=input, capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        if check and done.returncode != 0:
            raise AssertionError(f"nemo {' '.join(args)} failed ({done.returncode}): {done.stderr}{done.stdout}")
        return done

    def cli_json(self, *args: str) -> Any:
        """Run a CLI command with `-o json` and decode its output."""
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def agent_pid(self, cluster: str) -> int:
        """The pid of a local cluster's agent."""
        return int(json.loads((self.data_dir / "clusters" / cluster / "agent.json").read_text())["pid"])

    def kill_everything(self) -> None:
        """Stop `nemo up`, its agents and every replica they started, whatever state the test left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # An agent `nemo up` was starting when it died has not written agent.json yet (it would, a moment later, and
        # live on in its own session): agents are found by the data directory on their command line, and killed
        # before their replica tables are read so that none adds a replica after that.
        for agent in agents_under(self.data_dir):
            with contextlib.suppress(psutil.Error):
                agent.resume()
                agent.kill()
                agent.wait(10)
        # (pid, create_time): a recorded pid whose process is gone may belong to another test's agent by now, and
        # several test runs share the machine; only the very process that was recorded is killed.
        recorded: list[tuple[int, float | None]] = []
        for state_dir in (self.data_dir / "clusters").glob("*/"):
            endpoint = read_agent_endpoint(state_dir / AGENT_FILE)
            if endpoint is not None:
                recorded.append((endpoint.pid, endpoint.create_time))
            recorded += [
                (r.pid, r.create_time) for r in load_replica_table(state_dir / REPLICAS_FILE).replicas if r.pid
            ]
        for pid, create_time in recorded:
            proc = live_process(pid, create_time)
            if proc is None:
                continue
            try:
                proc.resume()
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else proc.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass


def agents_under(root: Path) -> list[psutil.Process]:
    """The local agents running for clusters whose data directory is ``root`` or under it, in agent.json or not."""
    wanted = root.resolve()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline: list[str] = proc.info["cmdline"] or []
            if AGENT_MODULE not in cmdline or "--data-dir" not in cmdline[:-1]:
                continue
            data_dir = Path(cmdline[cmdline.index("--data-dir") + 1]).resolve()
            if data_dir == wanted or wanted in data_dir.parents:
                found.append(proc)
    return found


@contextmanager
def running_stack(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A started `nemo up` in ``data_dir``; everything it started is killed afterwards, even on failure."""
    stack = Stack(data_dir, env)
    data_dir.mkdir()
    try:
        stack.start()
        yield stack
    finally:
        stack.kill_everything()
